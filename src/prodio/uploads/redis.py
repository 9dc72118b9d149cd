"""The upload registry in Redis: every instance reads what any of them recorded.

With several instances and a shared ``GRADIO_TEMP_DIR`` (docs/deploy.md), a file uploaded
through one instance is served by whichever one the next request reaches, so the record
of its owners must be where all of them look.

Layout, under the session store's key prefix (``prodio:`` by default):

- ``<prefix>f:<sha256 of the key>``: the set of users who own that key (a file path or an
  upload id). Hashing keeps keys short whatever the path, and keeps file names out of
  Redis.

Each set has a TTL, set again whenever an owner is added; no key lives without one.
Recording is one ``MULTI``/``EXEC`` round trip for all the files of an upload; a look-up is
one more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.asyncio import Redis

from prodio.session.redis import DEFAULT_KEY_PREFIX, REDIS_ERRORS
from prodio.uploads.base import Ownership, UploadRegistryUnavailable


def _unavailable(exc: BaseException) -> UploadRegistryUnavailable:
    return UploadRegistryUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}")


class RedisUploadRegistry:
    """An :class:`~prodio.uploads.base.UploadRegistry` in Redis.

    ``client`` is usually the session store's own client (one connection pool for both);
    pass ``owns_client=True`` to have :meth:`aclose` close it.
    """

    def __init__(
        self,
        client: Redis,
        ttl: float,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        owns_client: bool = False,
    ) -> None:
        if not ttl > 0:
            raise ValueError("the record TTL must be positive")
        self.ttl = ttl
        self._client = client
        self._owns_client = owns_client
        self._prefix = f"{key_prefix}f:"
        self._ttl_ms = max(1, round(ttl * 1000))

    def redis_key(self, key: str) -> str:
        """Where ``key``'s owners are kept."""
        # surrogatepass: a path read from disk may carry undecodable bytes as surrogates.
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self._prefix + digest

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

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except REDIS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
