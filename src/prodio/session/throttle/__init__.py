"""Login throttling kept in the session store's backend: in memory, or in Redis."""

from prodio.session.throttle.base import (
    LoginAttempt,
    LoginFailure,
    LoginThrottle,
    ThrottleLimits,
    ThrottleUnavailable,
    account_key,
    client_key,
    pair_key,
)
from prodio.session.throttle.memory import InMemoryLoginThrottle
from prodio.session.throttle.redis import RedisLoginThrottle

__all__ = [
    "InMemoryLoginThrottle",
    "LoginAttempt",
    "LoginFailure",
    "LoginThrottle",
    "RedisLoginThrottle",
    "ThrottleLimits",
    "ThrottleUnavailable",
    "account_key",
    "client_key",
    "pair_key",
]
