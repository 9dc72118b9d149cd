"""Server-side sessions: the :class:`SessionStore` contract and its backends."""

from prodio.session.base import (
    Session,
    SessionStore,
    SessionStoreUnavailable,
    SessionTimeouts,
)
from prodio.session.memory import InMemorySessionStore

__all__ = [
    "InMemorySessionStore",
    "Session",
    "SessionStore",
    "SessionStoreUnavailable",
    "SessionTimeouts",
]
