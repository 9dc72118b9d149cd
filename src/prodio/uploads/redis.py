"""The upload registry in Redis: every instance reads what any of them recorded.

With several instances and a shared ``GRADIO_TEMP_DIR`` (docs/deploy.md), a file uploaded
through one instance is served by whichever one the next request reaches, so the record
of its owners must be where all of them look. The same goes for a Gradio session: a tab's
requests may reach any instance, and the user its hash is bound to must be the same on all.

Layout, under the session store's key prefix (``prodio:`` by default):

- ``<prefix>f:<sha256 of the key>``: the set of users who own that key (a file path or an
  upload id). Hashing keeps keys short whatever the path, and keeps file names out of
  Redis.
- ``<prefix>g:<sha256 of the key>``: the user a Gradio session hash is bound to.

Each key has a TTL, set again whenever an owner is added or a binding renewed; no key lives
without one. Recording is one ``MULTI``/``EXEC`` round trip for all the files of an upload;
a look-up is one more. Binding a session is one Lua script (bind, renew or tell the owner,
atomically), and an instance remembers the answer (:class:`_KnownBindings`), so a tab's
requests ask Redis only the first time they reach an instance and then once a twentieth of
the binding's TTL: not on every request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Final

from redis.asyncio import Redis

from prodio.session.redis import DEFAULT_KEY_PREFIX, REDIS_ERRORS
from prodio.uploads.base import Ownership, UploadRegistryUnavailable, renew_after, session_key

# Bindings an instance remembers at most: a few MB; beyond, the oldest are asked for again.
MAX_KNOWN_BINDINGS: Final = 50_000

# KEYS[1]: the binding. ARGV[1]: the user ('' only looks); ARGV[2]: the TTL in ms.
# Returns {owner or '', ms until the binding expires}: bound now or renewed for the user,
# else whatever it is, untouched.
_BIND_SESSION = """
local owner = redis.call('GET', KEYS[1])
if not owner then
  if ARGV[1] == '' then return {'', 0} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], tonumber(ARGV[2])}
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {owner, tonumber(ARGV[2])}
end
return {owner, redis.call('PTTL', KEYS[1])}
"""


def _unavailable(exc: BaseException) -> UploadRegistryUnavailable:
    return UploadRegistryUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class _KnownBinding:
    __slots__ = ("expires_at", "owner", "renewed_at")

    def __init__(self, owner: str, expires_at: float, renewed_at: float | None) -> None:
        self.owner = owner
        self.expires_at = expires_at
        self.renewed_at = renewed_at  # None: another user's, never renewed from here


class _KnownBindings:
    """What this instance learnt from Redis about session bindings, while it holds.

    A binding never changes owner while it lasts, so an answer stays true until the expiry
    Redis reported; that expiry is counted from before the question was sent, so it is
    never later than Redis's own. Refusals are answered from here until then; the owner's
    own use asks Redis again once ``renew_after`` has passed since the last renewal.
    """

    def __init__(self, renew_after: float, clock: Callable[[], float]) -> None:
        self.renew_after = renew_after
        self.clock = clock
        self._known: dict[str, _KnownBinding] = {}

    def answer(self, user: str | None, key: str, now: float) -> Ownership | None:
        known = self._known.get(key)
        if known is None:
            return None
        if known.expires_at <= now:
            del self._known[key]
            return None
        if known.owner != user:
            return Ownership.OTHERS
        if known.renewed_at is None or now - known.renewed_at >= self.renew_after:
            return None  # the owner's: time to renew
        return Ownership.OWNER

    def learn(self, user: str | None, key: str, owner: str, asked_at: float, ms: int) -> None:
        if not owner or ms <= 0:
            self._known.pop(key, None)
            return
        renewed_at = asked_at if owner == user else None
        self._known.pop(key, None)
        self._known[key] = _KnownBinding(owner, asked_at + ms / 1000, renewed_at)
        while len(self._known) > MAX_KNOWN_BINDINGS:
            del self._known[next(iter(self._known))]


class RedisUploadRegistry:
    """An :class:`~prodio.uploads.base.UploadRegistry` in Redis.

    ``client`` is usually the session store's own client (one connection pool for both);
    pass ``owns_client=True`` to have :meth:`aclose` close it. ``session_ttl`` is the TTL
    of a session binding (the upload ``ttl`` unless given); ``clock`` (monotonic seconds)
    times what this instance remembers of bindings.
    """

    def __init__(
        self,
        client: Redis,
        ttl: float,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        owns_client: bool = False,
        session_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError("the record TTL must be positive")
        if session_ttl is not None and not session_ttl > 0:
            raise ValueError("the session binding TTL must be positive")
        self.ttl = ttl
        self.session_ttl = ttl if session_ttl is None else session_ttl
        self._client = client
        self._owns_client = owns_client
        self._prefix = f"{key_prefix}f:"
        self._session_prefix = f"{key_prefix}g:"
        self._ttl_ms = max(1, round(ttl * 1000))
        self._session_ttl_ms = max(1, round(self.session_ttl * 1000))
        self._bind_session = client.register_script(_BIND_SESSION)
        self._known = _KnownBindings(renew_after(self.session_ttl), clock)

    def redis_key(self, key: str) -> str:
        """Where ``key``'s owners are kept."""
        return self._prefix + _digest(key)

    def session_redis_key(self, session_hash: str) -> str:
        """Where the user bound to ``session_hash`` is kept."""
        return self._session_prefix + _digest(session_key(session_hash))

    async def record(self, user: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for key in keys:
                    name = self.redis_key(key)
                    pipe.sadd(name, user)
                    pipe.pexpire(name, self._ttl_ms)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def ownership(self, user: str | None, key: str) -> Ownership:
        name = self.redis_key(key)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.exists(name)
                # No user is nobody's owner; "" cannot be a user name.
                pipe.sismember(name, user or "")
                exists, is_owner = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if not exists:
            return Ownership.UNRECORDED
        return Ownership.OWNER if user and is_owner else Ownership.OTHERS

    async def bind_session(self, user: str | None, session_hash: str) -> Ownership:
        name = self.session_redis_key(session_hash)
        asked_at = self._known.clock()
        known = self._known.answer(user, name, asked_at)
        if known is not None:
            return known
        try:
            owner, ms = await self._bind_session(
                keys=[name], args=[user or "", self._session_ttl_ms]
            )
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc
        owner = _text(owner)
        self._known.learn(user, name, owner, asked_at, int(ms))
        if not owner:
            return Ownership.UNRECORDED
        return Ownership.OWNER if owner == user else Ownership.OTHERS

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _digest(key: str) -> str:
    # surrogatepass: a path read from disk may carry undecodable bytes as surrogates.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
