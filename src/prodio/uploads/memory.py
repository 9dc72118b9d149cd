"""The upload registry in this process's memory: the companion of the in-memory sessions.

Records are not shared between processes; with several instances use the Redis backend,
where every instance reads what any of them recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prodio.uploads.base import Ownership


class _Record:
    __slots__ = ("expires_at", "owners")

    def __init__(self, expires_at: float) -> None:
        self.owners: set[str] = set()
        self.expires_at = expires_at


class InMemoryUploadRegistry:
    """An :class:`~prodio.uploads.base.UploadRegistry` in one process.

    ``clock`` is monotonic seconds (tests pass their own). Every expiry is "now plus the
    TTL", so a record made again is moved to the end of the dict and the dict stays in
    expiry order: expired records are always at its front, and each call drops them
    there, so memory follows the uploads of the last TTL only.
    """

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl > 0:
            raise ValueError("the record TTL must be positive")
        self.ttl = ttl
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        """How many records are held (expired ones included until the next call)."""
        return len(self._records)

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

    async def ping(self) -> None:
        return None
