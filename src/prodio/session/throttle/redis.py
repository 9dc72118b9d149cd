"""Login throttling in Redis: every instance counts into the same keys.

Layout, under the session store's key prefix (``prodio:`` by default):

- ``<prefix>t:a:<account>``: failures for one account (normalized name, or ``#<hash>``);
- ``<prefix>t:c:<client>``: failures from one client address (or IPv6 /64 network);
- ``<prefix>t:p:<pair>``: failures for one account at a client it signed in from lately
  (``pair`` is :func:`~prodio.session.throttle.base.pair_key`);
- ``<prefix>t:k:<pair>``: the mark that makes that client "known" for that account;
- ``<prefix>t:ai:<account>``, ``<prefix>t:ci:<client>``, ``<prefix>t:pi:<pair>``: the
  attempts in flight, a sorted set of attempt tokens scored by their deadline (ms).

Failure counters are integers with a TTL: set to the window at the first failure, and again
to a whole window by the failure that reaches the limit (the lock). An in-flight set lives
one attempt timeout plus one window after its newest attempt, so that an attempt nobody
reported is still there to be counted as a failure when the next attempt looks. A known
mark lives ``known_client_ttl`` after the last success. No key ever lives without a TTL: a
script that finds a counter without one (written by hand, say) gives it the window.

Each call is one Lua script, so one round trip, and atomic: two instances checking the
same account at once cannot both take the last free attempt. Times (TTLs and in-flight
deadlines) run on the Redis server's clock, so instances whose clocks disagree still agree
on when a lock ends.

Like the session store, this addresses keys derived from the prefix in one script, so it
is for a single Redis server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from prodio.session.redis import DEFAULT_KEY_PREFIX, REDIS_ERRORS
from prodio.session.throttle.base import (
    BUSY_RETRY_SECONDS,
    LockScope,
    LoginAttempt,
    LoginFailure,
    ThrottleLimits,
    ThrottleUnavailable,
    account_key,
    client_key,
    pair_key,
)

# Shared by every script. KEYS, always in this order: account failures, account in flight,
# then (with a client) client failures, client in flight, known mark, pair failures, pair
# in flight.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit_a = tonumber(ARGV[2])
local limit_c = tonumber(ARGV[3])
local has_client = #KEYS > 2

local function count_of(key)
  return tonumber(redis.call('GET', key) or '0')
end

-- Count n failures; return the total and 1 if it just reached the limit (the lock: a
-- whole window from now), else 0.
local function add_failures(key, n, limit)
  local total = redis.call('INCRBY', key, n)
  local before = total - n
  local reached = 0
  if before < limit and total >= limit then reached = 1 end
  if before == 0 or reached == 1 or redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, window)
  end
  return total, reached
end

-- Attempts whose deadline passed unreported count as failures.
local function reap(fkey, pkey, limit)
  local n = redis.call('ZREMRANGEBYSCORE', pkey, '-inf', now)
  if n > 0 then add_failures(fkey, n, limit) end
end
"""

# ARGV: window ms, account limit, client limit, account in-flight limit, client in-flight
# limit, attempt timeout ms, token, known-client lifetime ms (0: off).
# Returns {allowed, known, account failures, pair failures, client failures,
#          state 1, ms left 1, state 2, ms left 2} where scope 1 is the account (or the
# account at a known client) and scope 2 the client; a state is 0 (free), 1 (locked) or
# 2 (busy: too many attempts in flight).
_BEGIN = (
    _PRELUDE
    + """
local max_flying_a = tonumber(ARGV[4])
local max_flying_c = tonumber(ARGV[5])
local attempt_ms = tonumber(ARGV[6])
local token = ARGV[7]
local known = 0
if has_client and tonumber(ARGV[8]) > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  known = 1
end
local scopes = {}
if known == 1 then
  scopes[1] = {KEYS[6], KEYS[7], limit_a, max_flying_a}
else
  scopes[1] = {KEYS[1], KEYS[2], limit_a, max_flying_a}
end
if has_client then scopes[2] = {KEYS[3], KEYS[4], limit_c, max_flying_c} end

local states, left = {0, 0}, {0, 0}
local refused = false
for i, scope in ipairs(scopes) do
  reap(scope[1], scope[2], scope[3])
  local failures = count_of(scope[1])
  local flying = redis.call('ZCARD', scope[2])
  if failures >= scope[3] then
    states[i] = 1
    left[i] = redis.call('PTTL', scope[1])
    if left[i] < 0 then
      redis.call('PEXPIRE', scope[1], window)
      left[i] = window
    end
    refused = true
  elseif failures + flying >= scope[3] or flying >= scope[4] then
    states[i] = 2
    refused = true
  end
end
if not refused then
  for _, scope in ipairs(scopes) do
    redis.call('ZADD', scope[2], now + attempt_ms, token)
    redis.call('PEXPIRE', scope[2], attempt_ms + window)
  end
end
local pair, client = 0, 0
if known == 1 then pair = count_of(KEYS[6]) end
if has_client then client = count_of(KEYS[3]) end
local allowed = 1
if refused then allowed = 0 end
return {allowed, known, count_of(KEYS[1]), pair, client, states[1], left[1], states[2], left[2]}
"""
)

# ARGV: window ms, account limit, client limit, token, known (0/1).
# Returns {account failures, pair failures, client failures, account locked now,
#          pair locked now, client locked now}.
_FAILED = (
    _PRELUDE
    + """
local token = ARGV[4]
local known = tonumber(ARGV[5]) == 1
local a, p, c = count_of(KEYS[1]), 0, 0
local lock_a, lock_p, lock_c = 0, 0, 0
if known then
  if redis.call('ZREM', KEYS[7], token) == 1 then
    p, lock_p = add_failures(KEYS[6], 1, limit_a)
    a, lock_a = add_failures(KEYS[1], 1, limit_a)
  else
    p = count_of(KEYS[6])
  end
elseif redis.call('ZREM', KEYS[2], token) == 1 then
  a, lock_a = add_failures(KEYS[1], 1, limit_a)
end
if has_client then
  if redis.call('ZREM', KEYS[4], token) == 1 then
    c, lock_c = add_failures(KEYS[3], 1, limit_c)
  else
    c = count_of(KEYS[3])
  end
end
return {a, p, c, lock_a, lock_p, lock_c}
"""
)

# ARGV: window ms, account limit, client limit, token, known (0/1), known lifetime ms.
_SUCCEEDED = (
    _PRELUDE
    + """
local token = ARGV[4]
local known = tonumber(ARGV[5]) == 1
local known_ms = tonumber(ARGV[6])
if known then
  redis.call('ZREM', KEYS[7], token)
  redis.call('DEL', KEYS[6])
else
  redis.call('ZREM', KEYS[2], token)
end
if count_of(KEYS[1]) < limit_a then redis.call('DEL', KEYS[1]) end
if has_client then
  redis.call('ZREM', KEYS[4], token)
  if known_ms > 0 then redis.call('SET', KEYS[5], '1', 'PX', known_ms) end
end
return 1
"""
)

# ARGV: window ms, account limit, client limit, token, known (0/1).
_ABANDON = (
    _PRELUDE
    + """
local token = ARGV[4]
if tonumber(ARGV[5]) == 1 then
  redis.call('ZREM', KEYS[7], token)
else
  redis.call('ZREM', KEYS[2], token)
end
if has_client then redis.call('ZREM', KEYS[4], token) end
return 1
"""
)

_STATE_LOCKED = 1
_STATE_BUSY = 2


def _unavailable(exc: BaseException) -> ThrottleUnavailable:
    return ThrottleUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


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
        self._window_ms = _ms(limits.window)
        self._attempt_ms = _ms(limits.attempt_timeout)
        self._known_ms = round(limits.known_client_ttl * 1000)
        self._begin = client.register_script(_BEGIN)
        self._failed = client.register_script(_FAILED)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._abandon = client.register_script(_ABANDON)

    def _keys(self, account: str, client: str | None) -> list[str]:
        prefix = self._prefix
        keys = [f"{prefix}a:{account}", f"{prefix}ai:{account}"]
        if client is not None:
            pair = pair_key(account, client)
            keys += [
                f"{prefix}c:{client}",
                f"{prefix}ci:{client}",
                f"{prefix}k:{pair}",
                f"{prefix}p:{pair}",
                f"{prefix}pi:{pair}",
            ]
        return keys

    def _common_args(self) -> list[int]:
        return [self._window_ms, self.limits.max_failures, self.limits.max_failures_per_client]

    async def begin(self, username: str, client_host: str | None) -> LoginAttempt:
        account, client = account_key(username), client_key(client_host)
        token = secrets.token_urlsafe(12)
        limits = self.limits
        try:
            reply = await self._begin(
                keys=self._keys(account, client),
                args=[
                    *self._common_args(),
                    limits.max_in_flight,
                    limits.max_in_flight_per_client,
                    self._attempt_ms,
                    token,
                    self._known_ms,
                ],
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        (
            allowed,
            known,
            account_count,
            pair_count,
            client_count,
            first_state,
            first_left,
            client_state,
            client_left,
        ) = (int(value) for value in reply)
        first_scope: LockScope = "account_client" if known else "account"
        states: list[tuple[LockScope, int, int]] = [
            (first_scope, first_state, first_left),
            ("client", client_state, client_left),
        ]
        locked = [scope for scope, state, _ in states if state == _STATE_LOCKED]
        busy = [scope for scope, state, _ in states if state == _STATE_BUSY]
        retry_ms = max((left for _, state, left in states if state == _STATE_LOCKED), default=0)
        return LoginAttempt(
            account,
            client,
            allowed=bool(allowed),
            account_failures=account_count,
            client_failures=client_count,
            pair_failures=pair_count,
            known_client=bool(known),
            retry_after=0.0 if allowed else (retry_ms / 1000 if locked else BUSY_RETRY_SECONDS),
            refused_by=() if allowed else tuple(locked or busy),
            busy=not allowed and not locked,
            token=token if allowed else "",
        )

    def _end_args(self, attempt: LoginAttempt) -> list[int | str]:
        return [*self._common_args(), attempt.token, int(attempt.known_client)]

    async def failed(self, attempt: LoginAttempt) -> LoginFailure:
        try:
            reply = await self._failed(
                keys=self._keys(attempt.account, attempt.client), args=self._end_args(attempt)
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        account, pair, client, lock_account, lock_pair, lock_client = (int(v) for v in reply)
        locks: list[LockScope] = []
        if lock_pair:
            locks.append("account_client")
        if lock_account:
            locks.append("account")
        if lock_client:
            locks.append("client")
        return LoginFailure(
            account_failures=account,
            client_failures=client,
            pair_failures=pair,
            locks=tuple(locks),
        )

    async def succeeded(self, attempt: LoginAttempt) -> None:
        try:
            await self._succeeded(
                keys=self._keys(attempt.account, attempt.client),
                args=[*self._end_args(attempt), self._known_ms],
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def abandon(self, attempt: LoginAttempt) -> None:
        try:
            await self._abandon(
                keys=self._keys(attempt.account, attempt.client), args=self._end_args(attempt)
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
