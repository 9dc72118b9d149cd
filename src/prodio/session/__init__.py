"""Server-side sessions: the :class:`SessionStore` contract and its backends."""

from prodio.session.base import (
    Session,
    SessionChanged,
    SessionStore,
    SessionStoreUnavailable,
    SessionTimeouts,
)
from prodio.session.cleanup import purge_periodically
from prodio.session.factory import build_session_store
from prodio.session.memory import InMemorySessionStore
from prodio.session.redis import RedisSessionStore

__all__ = [
    "InMemorySessionStore",
    "RedisSessionStore",
    "Session",
    "SessionChanged",
    "SessionStore",
    "SessionStoreUnavailable",
    "SessionTimeouts",
    "build_session_store",
    "purge_periodically",
]
