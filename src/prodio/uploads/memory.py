"""The upload registry in this process's memory: the companion of the in-memory sessions.

Records are not shared between processes; with several instances use the Redis backend,
where every instance reads what any of them recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prodio.uploads.base import Ownership, session_key


class _Record:
    __slots__ = ("expires_at", "owners")

    def __init__(self, expires_at: float) -> None:
        self.owners: set[str] = set()
        self.expires_at = expires_at


class _Binding:
    __slots__ = ("expires_at", "owner")

    def __init__(self, owner: str, expires_at: float) -> None:
        self.owner = owner
        self.expires_at = expires_at


class InMemoryUploadRegistry:
    """An :class:`~prodio.uploads.base.UploadRegistry` in one process.

    ``clock`` is monotonic seconds (tests pass their own). Every expiry is "now plus the
    TTL", so a record made again is moved to the end of the dict and the dict stays in
    expiry order: expired records are always at its front, and each call drops them
    there, so memory follows the uploads of the last TTL only. Session bindings are kept
    the same way, in a dict of their own with their own TTL (``session_ttl``, the upload
    ``ttl`` unless given).
    """

    def __init__(
        self,
        ttl: float,
        *,
        session_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError("the record TTL must be positive")
        if session_ttl is not None and not session_ttl > 0:
            raise ValueError("the session binding TTL must be positive")
        self.ttl = ttl
        self.session_ttl = ttl if session_ttl is None else session_ttl
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._bindings: dict[str, _Binding] = {}

    def __len__(self) -> int:
        """How many records are held (expired ones included until the next call)."""
        return len(self._records)

    @property
    def session_count(self) -> int:
        """How many session bindings are held (expired ones included until the next call)."""
        return len(self._bindings)

    def _trim(self, now: float) -> None:
        while self._records:
            key, record = next(iter(self._records.items()))
            if record.expires_at > now:
                return
            del self._records[key]

    async def record(self, user: str, keys: Sequence[str]) -> None:
        now = self._clock()
        self._trim(now)
        for key in keys:
            record = self._records.pop(key, None) or _Record(now)
            record.owners.add(user)
            record.expires_at = now + self.ttl
            self._records[key] = record

    async def ownership(self, user: str | None, key: str) -> Ownership:
        self._trim(self._clock())
        record = self._records.get(key)
        if record is None:
            return Ownership.UNRECORDED
        return Ownership.OWNER if user in record.owners else Ownership.OTHERS

    async def bind_session(self, user: str | None, session_hash: str) -> Ownership:
        now = self._clock()
        bindings = self._bindings
        while bindings:  # expired bindings first, as with records
            first_key, first = next(iter(bindings.items()))
            if first.expires_at > now:
                break
            del bindings[first_key]
        key = session_key(session_hash)
        binding = bindings.get(key)
        if binding is not None and binding.owner != user:
            return Ownership.OTHERS
        if user is None:
            return Ownership.UNRECORDED
        # Bound now or used again by its owner: to the end, a TTL from now.
        bindings.pop(key, None)
        bindings[key] = _Binding(user, now + self.session_ttl)
        return Ownership.OWNER

    async def ping(self) -> None:
        return None
