"""Per-user isolation of Gradio's files and sessions: who uploaded what, whose each Gradio
session is, in memory or Redis.

The registry lives here rather than in :mod:`prodio.session` because a record is about a
file, not a session: it names users, outlives their sessions and lives as long as the
file does. It is kept where the sessions are kept all the same (like the login throttle),
so ``PRODIO_SESSION_BACKEND`` decides for both and there is nothing more to set.
"""

from prodio.config import Settings
from prodio.session.base import SessionStore
from prodio.session.redis import RedisSessionStore
from prodio.uploads.base import (
    Ownership,
    UploadRegistry,
    UploadRegistryUnavailable,
    cleanup_interval,
    file_key,
    progress_key,
    record_ttl,
    session_binding_ttl,
    session_key,
)
from prodio.uploads.memory import InMemoryUploadRegistry
from prodio.uploads.redis import RedisUploadRegistry


def build_upload_registry(settings: Settings, sessions: SessionStore) -> UploadRegistry:
    """The upload registry, kept where the sessions are kept.

    With a :class:`RedisSessionStore` the records are Redis keys that every instance
    shares, reached through the store's own connection pool (the store closes it); with
    any other store they live in this process.
    """
    ttl = record_ttl(settings.upload_lifetime)
    session_ttl = session_binding_ttl(settings.upload_lifetime, settings.session_absolute_timeout)
    if isinstance(sessions, RedisSessionStore):
        return RedisUploadRegistry(
            sessions.client, ttl, key_prefix=settings.redis_key_prefix, session_ttl=session_ttl
        )
    return InMemoryUploadRegistry(ttl, session_ttl=session_ttl)


__all__ = [
    "InMemoryUploadRegistry",
    "Ownership",
    "RedisUploadRegistry",
    "UploadRegistry",
    "UploadRegistryUnavailable",
    "build_upload_registry",
    "cleanup_interval",
    "file_key",
    "progress_key",
    "record_ttl",
    "session_binding_ttl",
    "session_key",
]
