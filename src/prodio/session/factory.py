"""Build the session store that the settings ask for, and the login throttle beside it."""

from __future__ import annotations

from typing import Any

from prodio.config import Settings, SettingsError, split_host_port
from prodio.session.base import SessionStore, SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from prodio.session.redis import RedisSessionStore, check_sentinel_master_url
from prodio.session.throttle import (
    InMemoryLoginThrottle,
    LoginThrottle,
    RedisLoginThrottle,
    ThrottleLimits,
)


def session_timeouts(settings: Settings) -> SessionTimeouts:
    """The idle and absolute session timeouts from the settings."""
    try:
        return SessionTimeouts(
            idle=settings.session_idle_timeout, absolute=settings.session_absolute_timeout
        )
    except ValueError as exc:
        raise SettingsError(
            f"invalid configuration: PRODIO_SESSION_IDLE_TIMEOUT / "
            f"PRODIO_SESSION_ABSOLUTE_TIMEOUT: {exc}"
        ) from None


def build_session_store(settings: Settings) -> SessionStore:
    """Make the store named by ``PRODIO_SESSION_BACKEND``; it is not contacted yet.

    For ``redis``, ``PRODIO_REDIS_SENTINELS`` (with ``PRODIO_REDIS_SENTINEL_SERVICE``) means
    Redis Sentinel: the master is the one they name, followed across failovers; otherwise
    the Redis is the one at ``PRODIO_REDIS_URL``.

    Call ``await store.ping()`` at startup to fail early when Redis is unreachable, and
    ``await store.aclose()`` at shutdown. Raises :class:`SettingsError` when the
    configuration cannot work (the message never contains a password).
    """
    timeouts = session_timeouts(settings)
    if settings.session_backend == "memory":
        return InMemorySessionStore(timeouts)
    if settings.session_backend == "redis":
        if settings.redis_sentinels:
            return _sentinel_store(settings, timeouts)
        if not settings.redis_url:
            raise SettingsError(
                "invalid configuration: PRODIO_SESSION_BACKEND=redis needs PRODIO_REDIS_URL, "
                "for example redis://localhost:6379/0, or PRODIO_REDIS_SENTINELS with "
                "PRODIO_REDIS_SENTINEL_SERVICE"
            )
        try:
            return RedisSessionStore.from_url(
                settings.redis_url, timeouts, **_redis_store_options(settings)
            )
        except ValueError as exc:
            raise SettingsError(f"invalid configuration: PRODIO_REDIS_URL: {exc}") from None
    raise SettingsError(
        f"invalid configuration: PRODIO_SESSION_BACKEND={settings.session_backend!r} is not "
        "one of: memory, redis"
    )


def _redis_store_options(settings: Settings) -> dict[str, Any]:
    """What a Redis store takes from the settings, with or without Sentinel."""
    return {
        "key_prefix": settings.redis_key_prefix,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "max_connections": settings.redis_max_connections,
        "health_check_interval": settings.redis_health_check_interval,
        "local_cache_seconds": settings.redis_local_cache_seconds,
    }


def _sentinel_store(settings: Settings, timeouts: SessionTimeouts) -> RedisSessionStore:
    """The Redis store whose master the Sentinels of ``PRODIO_REDIS_SENTINELS`` name."""
    # Settings check all of this when they are read; a hand-built one must still fail
    # clearly, and never with a password in the message.
    try:
        addresses = [split_host_port(entry) for entry in settings.redis_sentinels]
    except ValueError as exc:
        raise SettingsError(f"invalid configuration: PRODIO_REDIS_SENTINELS: {exc}") from None
    if not settings.redis_sentinel_service:
        raise SettingsError(
            "invalid configuration: PRODIO_REDIS_SENTINELS needs PRODIO_REDIS_SENTINEL_SERVICE, "
            "the name of the master they monitor (for example mymaster)"
        )
    if settings.redis_url:
        try:
            check_sentinel_master_url(settings.redis_url)
        except ValueError as exc:
            raise SettingsError(f"invalid configuration: PRODIO_REDIS_URL: {exc}") from None
    password = settings.redis_sentinel_password
    try:
        return RedisSessionStore.from_sentinel(
            addresses,
            settings.redis_sentinel_service,
            timeouts,
            master_url=settings.redis_url or None,
            sentinel_password=password.get_secret_value() if password else None,
            **_redis_store_options(settings),
        )
    except ValueError as exc:
        raise SettingsError(
            f"invalid configuration: PRODIO_REDIS_SENTINELS / PRODIO_REDIS_URL: {exc}"
        ) from None


def throttle_limits(settings: Settings) -> ThrottleLimits:
    """The login throttle's limits from the settings."""
    try:
        return ThrottleLimits(
            max_failures=settings.login_max_failures,
            max_failures_per_client=settings.login_max_failures_per_ip,
            window=settings.login_failure_window,
            max_in_flight=settings.login_max_in_flight,
            max_in_flight_per_client=settings.login_max_in_flight_per_ip,
            attempt_timeout=settings.login_attempt_timeout,
            known_client_ttl=settings.login_known_client_ttl,
        )
    except ValueError as exc:
        raise SettingsError(f"invalid configuration: PRODIO_LOGIN_*: {exc}") from None


def build_login_throttle(settings: Settings, sessions: SessionStore) -> LoginThrottle:
    """The login throttle, kept where the sessions are kept.

    With a :class:`RedisSessionStore` (``PRODIO_SESSION_BACKEND=redis``) the counters are
    Redis keys that every instance shares, reached through the store's own connection pool
    (the store closes it); with any other store they live in this process. Either way the
    backend is the one ``PRODIO_SESSION_BACKEND`` chose, so there is nothing more to set.
    """
    limits = throttle_limits(settings)
    if isinstance(sessions, RedisSessionStore):
        # One pool for sessions and counters. The store keeps its client to itself; it is
        # read here, in the one place that assembles the two, rather than opening a second
        # pool that nothing would close.
        return RedisLoginThrottle(
            sessions.client,
            limits,
            key_prefix=settings.redis_key_prefix,
        )
    return InMemoryLoginThrottle(limits)
