"""Sessions in Redis: shared by every instance of the app, so instances can come and go.

Layout, under a key prefix (``prodio:`` by default):

- ``<prefix>s:<id>``: a hash per session with the fields ``username``, ``created_at`` and
  ``last_seen`` (integer microseconds since the epoch, on the Redis server's clock, so that
  instances whose clocks disagree still agree on expiry) and one ``d:<key>`` field per data
  key holding that value as JSON. One field per key is what lets two requests update
  different keys of one session at once without either losing the other's change.
- ``<prefix>u:<username>``: the set of that user's session ids, to list a user's sessions
  and to log a user out everywhere.

Every key carries a TTL; none lives forever. A session key expires at the earlier of its
idle and absolute expiry, so Redis itself removes dead sessions and
:meth:`RedisSessionStore.purge_expired` has nothing to do. A user's set expires one
absolute timeout after that user's newest login, which no session of theirs can outlive.

Each operation is one Lua script, so it is atomic and costs one round trip; in particular
an update applies only if the session is still live at that moment, so a slow request can
never bring back a session that was logged out meanwhile.

The scripts address keys they derive from the prefix and stored ids, so this store is for a
single Redis server (or a primary with replicas), not Redis Cluster. With Redis Sentinel
(:meth:`RedisSessionStore.from_sentinel`) the store asks the Sentinels where the primary is
whenever it connects, and at least every second while it is busy, so it follows a
failover by itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from prodio.session.base import (
    JSONValue,
    Session,
    SessionChanged,
    SessionStoreUnavailable,
    SessionTimeouts,
    check_expected_version,
)
from prodio.session.redis_cache import DELETED, InvalidationListener, LocalSessionCache
from prodio.session.redis_packing import with_hiredis_packing
from prodio.session.values import (
    check_removals,
    check_username,
    decode_value,
    encode_data,
    is_well_formed_session_id,
)

logger = logging.getLogger("prodio.session")

SESSION_ID_BYTES: Final = 32
REDIS_URL_SCHEMES: Final = ("redis", "rediss", "unix")
SENTINEL_MASTER_URL_SCHEMES: Final = ("redis", "rediss")
# How stale the pool's idea of the master may get while its connections still work.
SENTINEL_MASTER_RECHECK_SECONDS: Final = 1.0
DEFAULT_KEY_PREFIX: Final = "prodio:"
DATA_FIELD_PREFIX: Final = "d:"
VERSION_FIELD: Final = "v"
# A cached session's idle timer is pushed back in Redis once this share of the idle timeout
# has passed since the activity Redis last recorded (and at least once a minute).
TOUCH_SHARE: Final = 1 / 20
MAX_TOUCH_INTERVAL: Final = 60.0
_MAX_CREATE_ATTEMPTS: Final = 3

# Shared by every script: the server's clock in microseconds, and the liveness rule of
# base.py (dead from the instant an expiry is reached). Redis expires a key only once the
# millisecond of its TTL has passed, so a script must not trust a key's existence alone.
_LUA_PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function is_live(created_at, last_seen, now, idle, absolute)
  return now < last_seen + idle and now < created_at + absolute
end
local function fmt(n)
  return string.format('%d', n)
end
"""


def _with_prelude(script: str) -> str:
    return _LUA_PRELUDE + script


# KEYS: session hash, user set.
# ARGV: username, session id, idle us, absolute us, session key prefix, field, value, ...
# Returns created_at, or nil when the id is taken (then the caller draws another).
_CREATE = _with_prelude("""
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local now = now_us()
local idle, absolute = tonumber(ARGV[3]), tonumber(ARGV[4])
local stamp = fmt(now)
redis.call('HSET', KEYS[1], 'username', ARGV[1], 'created_at', stamp, 'last_seen', stamp,
           'v', '1')
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIREAT', KEYS[1], fmt(math.floor((now + math.min(idle, absolute)) / 1000)))
-- Forget ids of sessions that expired by themselves, so the set stays as small as the
-- user's live sessions plus this one.
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[5] .. member) == 0 then
    redis.call('SREM', KEYS[2], member)
  end
end
redis.call('SADD', KEYS[2], ARGV[2])
local keep_ms = math.ceil(absolute / 1000)
if redis.call('PTTL', KEYS[2]) < keep_ms then
  redis.call('PEXPIRE', KEYS[2], fmt(keep_ms))
end
return stamp
""")

# KEYS: session hash. ARGV: '1' to touch, idle us, absolute us, user key prefix, session id,
# invalidation channel. Returns the hash as a flat field/value list (empty when there is no
# live session).
_LOAD = _with_prelude("""
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return fields end
local username, created_at, last_seen, last_seen_index
for i = 1, #fields, 2 do
  if fields[i] == 'username' then
    username = fields[i + 1]
  elseif fields[i] == 'created_at' then
    created_at = tonumber(fields[i + 1])
  elseif fields[i] == 'last_seen' then
    last_seen = tonumber(fields[i + 1])
    last_seen_index = i + 1
  end
end
if not username or not created_at or not last_seen then return fields end
local now = now_us()
local idle, absolute = tonumber(ARGV[2]), tonumber(ARGV[3])
if not is_live(created_at, last_seen, now, idle, absolute) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[6], ARGV[5] .. ' -')
  return {}
end
if ARGV[1] == '1' and now > last_seen then
  last_seen = now
  fields[last_seen_index] = fmt(now)
  redis.call('HSET', KEYS[1], 'last_seen', fields[last_seen_index])
  local expires_ms = math.floor(math.min(last_seen + idle, created_at + absolute) / 1000)
  redis.call('PEXPIREAT', KEYS[1], fmt(expires_ms))
  -- The user's set must outlive each of its sessions, or logging out everywhere would
  -- miss one. Creation sees to that unless the timeouts were raised since; then this
  -- heals it.
  local user_key = ARGV[4] .. username
  if redis.call('PTTL', user_key) < expires_ms - math.floor(now / 1000) then
    redis.call('SADD', user_key, ARGV[5])
    redis.call('PEXPIREAT', user_key, fmt(expires_ms))
  end
end
return fields
""")

# KEYS: session hash. ARGV: idle us, absolute us, invalidation channel, session id, the
# expected version ('' for none), number of fields to set n, n field/value pairs, then the
# fields to delete. Returns the session's new version if applied, 0 if it is not live, and
# -1 - (its current version) when it is live at another version than expected (then it
# changed nothing).
_UPDATE = _with_prelude("""
local times = redis.call('HMGET', KEYS[1], 'created_at', 'last_seen', 'v')
if not times[1] or not times[2] then return 0 end
local now = now_us()
if not is_live(tonumber(times[1]), tonumber(times[2]), now, tonumber(ARGV[1]),
               tonumber(ARGV[2])) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' -')
  return 0
end
if ARGV[5] ~= '' then
  local current = tonumber(times[3] or '0')
  if current ~= tonumber(ARGV[5]) then return -1 - current end
end
local set_end = 6 + 2 * tonumber(ARGV[6])
for i = 7, set_end, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
for i = set_end + 1, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. version)
return version
""")

# KEYS: session hash. ARGV: session id, idle us, absolute us, user key prefix, invalidation
# channel. Returns 1 if the session was live, else 0.
_DELETE = _with_prelude("""
local stored = redis.call('HMGET', KEYS[1], 'username', 'created_at', 'last_seen')
if not stored[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[5], ARGV[1] .. ' -')
redis.call('SREM', ARGV[4] .. stored[1], ARGV[1])
if not stored[2] or not stored[3] then return 0 end
local live = is_live(tonumber(stored[2]), tonumber(stored[3]), now_us(), tonumber(ARGV[2]),
                     tonumber(ARGV[3]))
if live then return 1 end
return 0
""")

# KEYS: user set. ARGV: session key prefix, idle us, absolute us, invalidation channel.
# Returns how many live sessions ended, followed by the ids of every session removed.
_DELETE_USER = _with_prelude("""
local now = now_us()
local idle, absolute = tonumber(ARGV[2]), tonumber(ARGV[3])
local ended = 0
local removed = {0}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. member
  local times = redis.call('HMGET', key, 'created_at', 'last_seen')
  if times[1] and times[2]
     and is_live(tonumber(times[1]), tonumber(times[2]), now, idle, absolute) then
    ended = ended + 1
  end
  redis.call('DEL', key)
  redis.call('PUBLISH', ARGV[4], member .. ' -')
  removed[#removed + 1] = member
end
redis.call('DEL', KEYS[1])
removed[1] = ended
return removed
""")


# KEYS: user set. ARGV: session key prefix, idle us, absolute us, invalidation channel.
# Returns the ids of the dead sessions it forgot, then a {id, hash as a flat field/value
# list} pair per session still live. Touches nothing: no last_seen, no TTL moves.
_LIST_USER = _with_prelude("""
local now = now_us()
local idle, absolute = tonumber(ARGV[2]), tonumber(ARGV[3])
local forgotten = {}
local listed = {forgotten}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. member
  local fields = redis.call('HGETALL', key)
  local created_at, last_seen
  for i = 1, #fields, 2 do
    if fields[i] == 'created_at' then
      created_at = tonumber(fields[i + 1])
    elseif fields[i] == 'last_seen' then
      last_seen = tonumber(fields[i + 1])
    end
  end
  if #fields == 0 then
    -- Expired by Redis itself: only the id was left.
    redis.call('SREM', KEYS[1], member)
  elseif created_at and last_seen
         and not is_live(created_at, last_seen, now, idle, absolute) then
    -- Dead, but within the millisecond before its TTL fires: gone for every instance now.
    redis.call('DEL', key)
    redis.call('PUBLISH', ARGV[4], member .. ' -')
    redis.call('SREM', KEYS[1], member)
    forgotten[#forgotten + 1] = member
  else
    -- Live, or malformed (the caller logs and skips it, as a load does).
    listed[#listed + 1] = {member, fields}
  end
end
return listed
""")


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` (without echoing a password) unless ``url`` is usable."""
    scheme = urlsplit(url).scheme
    if scheme not in REDIS_URL_SCHEMES:
        raise ValueError(
            f"the Redis URL {redacted_url(url)!r} must start with redis://, rediss:// or "
            "unix://, for example redis://localhost:6379/0"
        )
    parts = urlsplit(url)
    if scheme == "unix" and not parts.path:
        raise ValueError(
            f"the Redis URL {redacted_url(url)!r} names no socket file, for example "
            "unix:///run/redis/redis.sock"
        )
    if scheme != "unix":
        if not parts.hostname:
            raise ValueError(
                f"the Redis URL {redacted_url(url)!r} names no host, for example "
                "redis://localhost:6379/0"
            )
        try:
            parts.port  # noqa: B018 - urllib checks the port only when it is read
        except ValueError:
            raise ValueError(f"the Redis URL {redacted_url(url)!r} has an invalid port") from None


def check_sentinel_master_url(url: str) -> None:
    """Raise ``ValueError`` (without echoing a password) unless ``url`` suits Sentinel.

    With Sentinel the URL only carries what the Sentinels do not say: the master's user,
    password, database and TLS options. A host in it would be ignored, so it is refused.
    """
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_MASTER_URL_SCHEMES:
        raise ValueError(
            f"the Redis URL {redacted_url(url)!r} must start with redis:// or rediss:// when "
            "Sentinel names the master, for example redis://:PASSWORD@/0"
        )
    if parts.netloc.rpartition("@")[2]:
        raise ValueError(
            f"the Redis URL {redacted_url(url)!r} names a host, but the Sentinels name the "
            "master; give only its password and database, for example redis://:PASSWORD@/0"
        )


def _check_pool_options(
    socket_timeout: float, socket_connect_timeout: float, max_connections: int, health: int
) -> None:
    if socket_timeout <= 0 or socket_connect_timeout <= 0:
        raise ValueError("the Redis socket timeouts must be positive")
    if max_connections < 1:
        raise ValueError("the Redis pool needs at least one connection")
    if health < 0:
        raise ValueError("the Redis health check interval cannot be negative")


def _retry_once() -> Retry:
    # One immediate retry on a broken connection (a server restart or a failover leaves dead
    # sockets in the pool); none on a timeout, which would only double the wait.
    return Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))


class _MasterConnection(SentinelManagedConnection):
    """A connection to the master that asks the Sentinels where it is at every (re)connect.

    redis-py looks the master up only in ``connect()``. A command retried after its
    connection broke reconnects through ``connect_check_health()`` to the old address
    (redis/redis-py#3874), so after a failover the one retry would reach the dead or
    demoted master and fail. Looking the master up there too makes that retry land on the
    promoted replica.
    """

    async def connect(self) -> None:
        # As redis-py's, minus its lookup: connect_check_health below does it.
        await self.retry.call_with_retry(
            lambda: self.connect_check_health(check_health=False, retry_socket_connect=False),
            lambda error: asyncio.sleep(0),
        )

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


class _MasterSSLConnection(_MasterConnection, SSLConnection):
    """:class:`_MasterConnection` over TLS (``rediss://`` master URLs)."""


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool, made to wait for a free connection and to leave an old master.

    redis-py's own ``SentinelConnectionPool`` refuses a request outright when all its
    connections are busy; this one waits up to its ``timeout``, as ``BlockingConnectionPool``
    does, so the pool size means the same thing with or without Sentinel.

    redis-py also asks the Sentinels only when it opens a connection. After a planned
    failover (``SENTINEL FAILOVER``) the old master keeps accepting writes until the
    Sentinels demote it, some ten seconds later, and then drops them: open connections would
    keep writing sessions into it, to be lost. So this pool asks again when a connection is
    taken, at most every ``master_recheck_interval`` seconds, and drops connections to any
    other server than the master named.
    """

    master_recheck_interval: float = SENTINEL_MASTER_RECHECK_SECONDS

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **options: Any) -> None:
        super().__init__(service_name, sentinel_manager, **options)  # type: ignore[no-untyped-call]
        self._next_master_check = 0.0

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        await self._recheck_master()
        connection = await super().get_connection()  # type: ignore[no-untyped-call]
        if (
            connection.is_connected
            and self.master_address is not None
            and (connection.host, connection.port) != tuple(self.master_address)
        ):
            # Busy when the master moved, so not dropped then: reconnect it (to the master
            # the Sentinels name) before it sends anything.
            await connection.disconnect()
        return connection

    async def _recheck_master(self) -> None:
        now = asyncio.get_running_loop().time()
        if self.master_address is None or now < self._next_master_check:
            # Never found a master: no connection to move; connecting asks the Sentinels.
            return
        self._next_master_check = now + self.master_recheck_interval
        try:
            # Drops the idle connections when the master moved.
            await self.get_master_address()  # type: ignore[no-untyped-call]
        except REDIS_ERRORS:
            # No answer now: the operation itself finds out whether its server still works.
            logger.debug("no Sentinel named a master; keeping the connections there are")


class _Sentinels(Sentinel):
    """redis-py's ``Sentinel``, with a readable reason when no master can be found.

    redis-py's own message lists the whole ``repr`` of each Sentinel client; this one says,
    per Sentinel, whether it was unreachable, does not monitor the service, or reports
    its master down. What it returns is the same: the first live master named.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        problems: list[str] = []
        for index, sentinel in enumerate(self.sentinels):
            options = sentinel.connection_pool.connection_kwargs
            where = f"Sentinel {options.get('host')}:{options.get('port')}"
            try:
                # A mapping of service name to state (RESP2, which this client speaks).
                masters = cast(dict[str, dict[str, Any]], await sentinel.sentinel_masters())
            except (RedisConnectionError, RedisTimeoutError) as exc:
                problems.append(f"{where}: {type(exc).__name__}: {exc}")
                continue
            state = masters.get(service_name)
            if state is None:
                problems.append(f"{where} monitors no master named {service_name!r}")
            elif not self.check_master_state(state, service_name):
                problems.append(f"{where} reports the master of {service_name!r} down")
            else:
                # Ask this one first next time, as redis-py does.
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return str(state["ip"]), int(state["port"])
        raise MasterNotFoundError(
            f"no Sentinel named a live master for {service_name!r}: {'; '.join(problems)}"
        )


def _microseconds(seconds: float) -> str:
    return str(round(seconds * 1_000_000))


def _unavailable(exc: BaseException) -> SessionStoreUnavailable:
    return SessionStoreUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}")


# The errors that mean Redis is unreachable, slow or refusing: redis-py's own, and the
# socket and timeout errors it can let through while connecting.
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class RedisSessionStore:
    """A :class:`~prodio.session.base.SessionStore` in Redis, shared by all instances.

    Build it with :meth:`from_url` or :meth:`from_sentinel`, which make the one connection
    pool it uses; the store owns that client (and the ``sentinel`` it came from, if any)
    and closes it in :meth:`aclose`.
    """

    def __init__(
        self,
        client: Redis,
        timeouts: SessionTimeouts,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        sentinel: Sentinel | None = None,
        local_cache_seconds: float = 0.0,
    ) -> None:
        """``local_cache_seconds`` > 0 turns on the near cache of
        :mod:`prodio.session.redis_cache`: sessions read in the last that many seconds are
        served from this process while Redis's invalidation channel confirms them."""
        if local_cache_seconds < 0:
            raise ValueError("the local session cache time cannot be negative")
        self.timeouts = timeouts
        self._client = client
        self._sentinel = sentinel
        self._session_prefix = f"{key_prefix}s:"
        self._user_prefix = f"{key_prefix}u:"
        self._channel = f"{key_prefix}invalidate"
        self._touch_interval = min(timeouts.idle * TOUCH_SHARE, MAX_TOUCH_INTERVAL)
        self._cache: LocalSessionCache | None = None
        self._listener: InvalidationListener | None = None
        if local_cache_seconds > 0:
            self._cache = LocalSessionCache(max_age=local_cache_seconds)
            self._listener = InvalidationListener(client, self._channel, self._cache)
        self._idle_us = _microseconds(timeouts.idle)
        self._absolute_us = _microseconds(timeouts.absolute)
        # Registered once; redis-py sends EVALSHA and loads the script again by itself
        # when the server lost it (after a restart).
        self._create = client.register_script(_CREATE)
        self._load = client.register_script(_LOAD)
        self._update = client.register_script(_UPDATE)
        self._delete = client.register_script(_DELETE)
        self._delete_user = client.register_script(_DELETE_USER)
        self._list_user = client.register_script(_LIST_USER)

    @property
    def client(self) -> Redis:
        """The pooled client, for other features kept in the same Redis (login throttling).

        The store owns it: :meth:`aclose` closes it.
        """
        return self._client

    @classmethod
    def from_url(
        cls,
        url: str,
        timeouts: SessionTimeouts,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        max_connections: int = 50,
        health_check_interval: int = 30,
        pool_timeout: float | None = None,
        local_cache_seconds: float = 0.0,
    ) -> RedisSessionStore:
        """Connect (lazily) to the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``).

        ``socket_timeout`` bounds each command, so a hung server turns into
        :class:`SessionStoreUnavailable` instead of a hung request; ``max_connections``
        bounds the pool, and a request waits at most ``pool_timeout`` (default: the
        socket timeout) for a free connection. Options in the URL's query string win.
        """
        check_redis_url(url)
        _check_pool_options(
            socket_timeout, socket_connect_timeout, max_connections, health_check_interval
        )
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout if pool_timeout is None else pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
            retry=_retry_once(),
            decode_responses=True,
            client_name="prodio",
        )
        # The class the URL's scheme chose (TCP, TLS, Unix socket), packing with hiredis.
        pool.connection_class = with_hiredis_packing(pool.connection_class)
        return cls(
            Redis.from_pool(pool),
            timeouts,
            key_prefix=key_prefix,
            local_cache_seconds=local_cache_seconds,
        )

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        timeouts: SessionTimeouts,
        *,
        master_url: str | None = None,
        sentinel_password: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        max_connections: int = 50,
        health_check_interval: int = 30,
        pool_timeout: float | None = None,
        local_cache_seconds: float = 0.0,
    ) -> RedisSessionStore:
        """Connect (lazily) to the master that ``sentinels`` monitor as ``service_name``.

        Each new connection asks the Sentinels (in turn, the last one that answered first)
        for the master's address, and so does the pool at most every
        :data:`SENTINEL_MASTER_RECHECK_SECONDS` while in use, dropping connections to any
        other server: after a failover, operations go to the promoted replica, and until a
        Sentinel names a reachable master they raise :class:`SessionStoreUnavailable`.

        ``master_url`` gives the master's user, password, database and TLS options
        (``redis://:PASSWORD@/0``, no host); ``sentinel_password`` is for Sentinels that
        require one. The timeouts and pool options mean what they mean for
        :meth:`from_url` and bound each Sentinel query too, so an unreachable or hung
        Sentinel costs at most one of them per query.
        """
        if not sentinels:
            raise ValueError("at least one Sentinel address (host, port) is needed")
        for host, port in sentinels:
            if not host or not 1 <= port <= 65535:
                raise ValueError(f"the Sentinel address {host!r}:{port!r} is not host:port")
        if not service_name or any(character.isspace() for character in service_name):
            raise ValueError("the Sentinel service name must be a name without spaces")
        _check_pool_options(
            socket_timeout, socket_connect_timeout, max_connections, health_check_interval
        )
        master_options: dict[str, Any] = {}
        tls = False
        if master_url is not None:
            check_sentinel_master_url(master_url)
            master_options.update(parse_url(master_url))
            tls = urlsplit(master_url).scheme == "rediss"
        # Ours, not the URL's plain (Sentinel-unaware) class.
        master_options["connection_class"] = with_hiredis_packing(
            _MasterSSLConnection if tls else _MasterConnection
        )
        sentinel_manager = _Sentinels(  # type: ignore[no-untyped-call]
            list(sentinels),
            sentinel_kwargs={
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
                "password": sentinel_password or None,
                "retry": _retry_once(),
                "decode_responses": True,
            },
        )
        client = sentinel_manager.master_for(
            service_name,
            connection_pool_class=_BlockingSentinelPool,
            **{
                "max_connections": max_connections,
                "timeout": socket_timeout if pool_timeout is None else pool_timeout,
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
                "health_check_interval": health_check_interval,
                "retry": _retry_once(),
                "decode_responses": True,
                "client_name": "prodio",
                # Options in the URL's query string win, as with from_url.
                **master_options,
            },
        )
        return cls(
            cast(Redis, client),
            timeouts,
            key_prefix=key_prefix,
            sentinel=sentinel_manager,
            local_cache_seconds=local_cache_seconds,
        )

    def _session_key(self, session_id: str) -> str:
        return f"{self._session_prefix}{session_id}"

    def _to_session(
        self, session_id: str, flat: list[str]
    ) -> tuple[Session, dict[str, str], int] | None:
        """The session in a hash's field/value list, its data as stored, and its version."""
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        try:
            username = fields["username"]
            created_at = int(fields["created_at"]) / 1_000_000
            last_seen = int(fields["last_seen"]) / 1_000_000
            # Records written before versions existed count as version 0.
            version = int(fields.get(VERSION_FIELD, "0"))
            encoded = {
                name.removeprefix(DATA_FIELD_PREFIX): value
                for name, value in fields.items()
                if name.startswith(DATA_FIELD_PREFIX)
            }
            data = {key: decode_value(value) for key, value in encoded.items()}
        except (KeyError, ValueError):
            # Not written by this store (or by an incompatible version): never trust it.
            logger.warning("ignoring a malformed session record in Redis")
            return None
        session = Session(
            id=session_id,
            username=username,
            created_at=created_at,
            last_seen=last_seen,
            idle_expires_at=last_seen + self.timeouts.idle,
            absolute_expires_at=created_at + self.timeouts.absolute,
            data=data,
            version=version,
        )
        return session, encoded, version

    async def create(self, username: str, data: Mapping[str, JSONValue] | None = None) -> Session:
        check_username(username)
        encoded = encode_data(data)
        field_values = [
            item for key, value in encoded.items() for item in (f"{DATA_FIELD_PREFIX}{key}", value)
        ]
        for _ in range(_MAX_CREATE_ATTEMPTS):
            session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
            try:
                stamp = await self._create(
                    keys=[self._session_key(session_id), f"{self._user_prefix}{username}"],
                    args=[
                        username,
                        session_id,
                        self._idle_us,
                        self._absolute_us,
                        self._session_prefix,
                        *field_values,
                    ],
                )
            except REDIS_ERRORS as exc:
                raise _unavailable(exc) from exc
            if stamp is not None:
                created_at = int(stamp) / 1_000_000
                session = Session(
                    id=session_id,
                    username=username,
                    created_at=created_at,
                    last_seen=created_at,
                    idle_expires_at=created_at + self.timeouts.idle,
                    absolute_expires_at=created_at + self.timeouts.absolute,
                    data={key: decode_value(value) for key, value in encoded.items()},
                    version=1,
                )
                if self._cache is not None:
                    self._start_listener()
                    self._cache.put(session, encoded, 1, self._cache.generation)
                return session
        # 256 random bits colliding three times means the random source is broken.
        raise RuntimeError("could not draw an unused session id")

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        if not is_well_formed_session_id(session_id):
            return None
        cache = self._cache
        generation = 0
        if cache is not None:
            self._start_listener()
            # Only the per-request check ("is this cookie's session live?", a touching load)
            # is answered from the cache. A load without touch is a handler reading the data
            # it is about to act on: it asks Redis, so a browser that wrote through one
            # instance reads its write through any other, even before the invalidation
            # message got there (tests/e2e/test_cluster_browser.py saw that window).
            cached, known = cache.get(session_id) if touch else (None, False)
            if known:
                if cached is None:
                    return None  # deleted, revoked or expired: never live again
                now = time.time()
                if (
                    now < cached.idle_expires_at
                    and now < cached.absolute_expires_at
                    and (not touch or now - cached.last_seen < self._touch_interval)
                ):
                    return cached
            generation = cache.generation
        try:
            flat: list[str] = await self._load(
                keys=[self._session_key(session_id)],
                args=[
                    "1" if touch else "0",
                    self._idle_us,
                    self._absolute_us,
                    self._user_prefix,
                    session_id,
                    self._channel,
                ],
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if not flat:
            if cache is not None and cache.get(session_id)[1]:
                # Known here, gone in Redis: for good. (Unknown ids are not remembered, so
                # guessing ids cannot push real sessions out of the cache.)
                cache.invalidate(session_id, DELETED)
            return None
        loaded = self._to_session(session_id, flat)
        if loaded is None:
            return None
        session, encoded, version = loaded
        if cache is not None:
            cache.put(session, encoded, version, generation)
        return session

    def _start_listener(self) -> None:
        if self._listener is not None:
            self._listener.start()

    async def wait_for_cache(self, within: float = 5.0) -> bool:
        """Start the near cache's subscription and wait until it is on; False if it did not
        come on in time (or there is no cache). For start-up and tests."""
        if self._listener is None:
            return False
        self._listener.start()
        return await self._listener.wait_subscribed(within)

    async def update(
        self,
        session_id: str,
        changes: Mapping[str, JSONValue] | None = None,
        *,
        remove: Iterable[str] = (),
        expected_version: int | None = None,
    ) -> bool:
        encoded = encode_data(changes)
        removals = check_removals(remove)
        expected = check_expected_version(expected_version)
        if not is_well_formed_session_id(session_id):
            return False
        args: list[Any] = [
            self._idle_us,
            self._absolute_us,
            self._channel,
            session_id,
            "" if expected is None else str(expected),
            len(encoded),
        ]
        for key, value in encoded.items():
            args += [f"{DATA_FIELD_PREFIX}{key}", value]
        args += [f"{DATA_FIELD_PREFIX}{key}" for key in removals]
        try:
            version = int(await self._update(keys=[self._session_key(session_id)], args=args))
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if version < 0:
            current = -1 - version
            if self._cache is not None:
                # What this instance cached (and a caller compared against) is older than
                # Redis: never serve it again; the next load reads the current version.
                self._cache.invalidate(session_id, current)
            raise SessionChanged(f"the session is at version {current}, not {expected}")
        if self._cache is not None:
            if version:
                self._cache.updated(session_id, version, encoded, tuple(removals))
            elif self._cache.get(session_id)[1]:
                self._cache.invalidate(session_id, DELETED)
        return version > 0

    async def delete(self, session_id: str) -> bool:
        if not is_well_formed_session_id(session_id):
            return False
        try:
            ended = await self._delete(
                keys=[self._session_key(session_id)],
                args=[
                    session_id,
                    self._idle_us,
                    self._absolute_us,
                    self._user_prefix,
                    self._channel,
                ],
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if self._cache is not None:
            # At once here; other instances hear it on the channel.
            self._cache.invalidate(session_id, DELETED)
        return bool(ended)

    async def delete_user_sessions(self, username: str) -> int:
        check_username(username)
        try:
            ended, *removed = await self._delete_user(
                keys=[f"{self._user_prefix}{username}"],
                args=[self._session_prefix, self._idle_us, self._absolute_us, self._channel],
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if self._cache is not None:
            for session_id in removed:
                self._cache.invalidate(session_id, DELETED)
        return int(ended)

    async def list_user_sessions(self, username: str) -> list[Session]:
        check_username(username)
        # Always Redis, never the near cache: the list is what the user acts on, and a
        # session another instance created a moment ago is in no cache here.
        try:
            forgotten, *listed = await self._list_user(
                keys=[f"{self._user_prefix}{username}"],
                args=[self._session_prefix, self._idle_us, self._absolute_us, self._channel],
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if self._cache is not None:
            for session_id in forgotten:
                self._cache.invalidate(session_id, DELETED)
        sessions: list[Session] = []
        for session_id, flat in listed:
            loaded = self._to_session(session_id, flat)
            # The set holds only this user's ids; a record naming another user would be a
            # corrupt one, and must never be shown (or offered to end) to this user.
            if loaded is not None and loaded[0].username == username:
                sessions.append(loaded[0])
        sessions.sort(key=lambda session: session.created_at)
        return sessions

    async def purge_expired(self, limit: int = 10_000) -> int:
        """Nothing to do: every key has a TTL, so Redis removes expired sessions itself."""
        return 0

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
