"""Login throttling in Redis: every instance counts into the same keys.

Layout, under the session store's key prefix (``prodio:`` by default):

- ``<prefix>t:a:<account>``: failures for one account (normalized name, or ``#<hash>``);
- ``<prefix>t:c:<client>``: failures from one client address (or IPv6 /64 network).

Each is an integer counter with a TTL: set to the window at the first failure, and again
to a whole window by the failure that reaches the limit (the lock). No key ever lives
without a TTL: a script that finds one (written by hand, say) gives it the window.

Each call is one Lua script, so one round trip, and atomic: two instances checking the
same account at once cannot both take the last free attempt. TTLs run on the Redis
server's clock, so instances whose clocks disagree still agree on when a lock ends.

Like the session store, this addresses keys derived from the prefix in one script, so it
is for a single Redis server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from prodio.session.throttle.base import (
    LockScope,
    LoginAttempt,
    ThrottleLimits,
    ThrottleUnavailable,
    account_key,
    client_key,
)

DEFAULT_KEY_PREFIX: Final = "prodio:"

# KEYS: account counter, then (optional) client counter.
# ARGV: account limit, client limit, window in ms.
# Returns {allowed, account count, account ms left, client count, client ms left}: counts
# after counting this attempt when allowed; current counts and lock times when refused.
_BEGIN = """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local window = tonumber(ARGV[3])
local counts, left = {0, 0}, {0, 0}
local refused = false
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] >= limits[i] then
    refused = true
    left[i] = redis.call('PTTL', KEYS[i])
    if left[i] < 0 then
      redis.call('PEXPIRE', KEYS[i], window)
      left[i] = window
    end
  end
end
if refused then return {0, counts[1], left[1], counts[2], left[2]} end
for i = 1, #KEYS do
  counts[i] = redis.call('INCR', KEYS[i])
  if counts[i] == 1 or counts[i] >= limits[i] or redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], window)
  end
end
return {1, counts[1], 0, counts[2], 0}
"""

# KEYS: account counter, then (optional) client counter. DECR keeps a key's TTL.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if #KEYS > 1 and tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECR', KEYS[2])
end
return 1
"""

# KEYS: account counter, then (optional) client counter.
_ABANDON = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return 1
"""

# The errors that mean Redis is unreachable, slow or refusing: redis-py's own, and the
# socket and timeout errors it can let through while connecting.
_BACKEND_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def _unavailable(exc: BaseException) -> ThrottleUnavailable:
    return ThrottleUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}")


class RedisLoginThrottle:
    """A :class:`~prodio.session.throttle.base.LoginThrottle` in Redis.

    ``client`` is usually the session store's own client (one connection pool for both);
    pass ``owns_client=True`` to have :meth:`aclose` close it.
    """

    def __init__(
        self,
        client: Redis,
        limits: ThrottleLimits,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        owns_client: bool = False,
    ) -> None:
        self.limits = limits
        self._client = client
        self._owns_client = owns_client
        self._prefix = f"{key_prefix}t:"
        self._window_ms = str(max(1, round(limits.window * 1000)))
        self._begin = client.register_script(_BEGIN)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._abandon = client.register_script(_ABANDON)

    def _keys(self, account: str, client: str | None) -> list[str]:
        keys = [f"{self._prefix}a:{account}"]
        if client is not None:
            keys.append(f"{self._prefix}c:{client}")
        return keys

    async def begin(self, username: str, client_host: str | None) -> LoginAttempt:
        account, client = account_key(username), client_key(client_host)
        try:
            reply = await self._begin(
                keys=self._keys(account, client),
                args=[
                    self.limits.max_failures,
                    self.limits.max_failures_per_client,
                    self._window_ms,
                ],
            )
        except _BACKEND_ERRORS as exc:
            raise _unavailable(exc) from exc
        allowed, account_count, account_left, client_count, client_left = (
            int(value) for value in reply
        )
        if not allowed:
            refused_by: list[LockScope] = []
            if account_count >= self.limits.max_failures:
                refused_by.append("account")
            if client is not None and client_count >= self.limits.max_failures_per_client:
                refused_by.append("client")
            return LoginAttempt(
                account,
                client,
                allowed=False,
                account_failures=account_count,
                client_failures=client_count,
                retry_after=max(account_left, client_left) / 1000,
                refused_by=tuple(refused_by),
            )
        locks: list[LockScope] = []
        if account_count >= self.limits.max_failures:
            locks.append("account")
        if client is not None and client_count >= self.limits.max_failures_per_client:
            locks.append("client")
        return LoginAttempt(
            account,
            client,
            allowed=True,
            account_failures=account_count,
            client_failures=client_count,
            locks=tuple(locks),
        )

    async def succeeded(self, attempt: LoginAttempt) -> None:
        try:
            await self._succeeded(keys=self._keys(attempt.account, attempt.client))
        except _BACKEND_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def abandon(self, attempt: LoginAttempt) -> None:
        try:
            await self._abandon(keys=self._keys(attempt.account, attempt.client))
        except _BACKEND_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except _BACKEND_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
