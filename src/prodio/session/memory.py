"""Sessions in this process's memory: the default for one instance.

Two ordered maps make expiry cheap: ``_by_last_seen`` is kept in order of last use (a touch
moves the id to the end) and ``_by_creation`` in order of creation. Expired sessions
therefore sit at the front of one of them, and a purge reads only those.

They are ``OrderedDict``s, not plain dicts: a plain dict keeps deleted slots until it is
resized, so after many deletions from its front, finding the first live key means walking
past every dead slot, and a large purge turns quadratic (measured in bench/memstore.py: a
tick held the loop 6.9 s at 1,000,000 sessions; with ``OrderedDict`` 85 ms in all).
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prodio.session.base import (
    JSONValue,
    Session,
    SessionChanged,
    SessionTimeouts,
    check_expected_version,
)
from prodio.session.values import (
    check_removals,
    check_username,
    encode_data,
    is_well_formed_session_id,
)

SESSION_ID_BYTES = 32


class _Entry:
    __slots__ = ("created_at", "data", "last_seen", "username", "version")

    def __init__(self, username: str, created_at: float, data: dict[str, Any]) -> None:
        self.username = username
        self.created_at = created_at
        self.last_seen = created_at
        self.data = data
        self.version = 1


def _copy_json(data: Mapping[str, JSONValue] | None) -> dict[str, Any]:
    # Round-trip through JSON so that this store accepts and returns exactly what a
    # networked store would: a value that cannot be stored there fails here too.
    return {key: json.loads(encoded) for key, encoded in encode_data(data).items()}


_IMMUTABLE = (str, int, float, bool, type(None))


def _copy_data(data: dict[str, JSONValue]) -> dict[str, JSONValue]:
    """A copy callers may change freely: lists and dicts deep, the rest (immutable) as is.

    Every request loads its session, and most values (the login's session epoch, say) are
    strings: deepcopy of the whole dict cost more than the rest of the load.
    """
    return {
        key: value if isinstance(value, _IMMUTABLE) else copy.deepcopy(value)
        for key, value in data.items()
    }


class InMemorySessionStore:
    """A :class:`~prodio.session.base.SessionStore` in one process.

    Sessions are lost when the process stops and are not shared between instances: use
    the Redis store to run several.
    """

    def __init__(
        self, timeouts: SessionTimeouts, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.timeouts = timeouts
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._by_last_seen: OrderedDict[str, None] = OrderedDict()
        self._by_creation: OrderedDict[str, None] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _is_expired(self, entry: _Entry, now: float) -> bool:
        return (
            now >= entry.last_seen + self.timeouts.idle
            or now >= entry.created_at + self.timeouts.absolute
        )

    def _snapshot(self, session_id: str, entry: _Entry) -> Session:
        return Session(
            id=session_id,
            username=entry.username,
            created_at=entry.created_at,
            last_seen=entry.last_seen,
            idle_expires_at=entry.last_seen + self.timeouts.idle,
            absolute_expires_at=entry.created_at + self.timeouts.absolute,
            data=_copy_data(entry.data),
            version=entry.version,
        )

    def _live_entry(self, session_id: str, now: float) -> _Entry | None:
        if not is_well_formed_session_id(session_id):
            return None
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if self._is_expired(entry, now):
            self._remove(session_id)
            return None
        return entry

    def _remove(self, session_id: str) -> _Entry | None:
        entry = self._entries.pop(session_id, None)
        if entry is None:
            return None
        self._by_last_seen.pop(session_id, None)
        self._by_creation.pop(session_id, None)
        user_sessions = self._by_user.get(entry.username)
        if user_sessions is not None:
            user_sessions.discard(session_id)
            if not user_sessions:
                del self._by_user[entry.username]
        return entry

    async def create(self, username: str, data: Mapping[str, JSONValue] | None = None) -> Session:
        check_username(username)
        stored = _copy_json(data)
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        # The clock may not go backwards for the ordering to hold; a wall clock that
        # steps back only makes sessions live a little longer.
        now = self._clock()
        entry = _Entry(username, now, stored)
        self._entries[session_id] = entry
        self._by_last_seen[session_id] = None
        self._by_creation[session_id] = None
        self._by_user.setdefault(username, set()).add(session_id)
        return self._snapshot(session_id, entry)

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        now = self._clock()
        entry = self._live_entry(session_id, now)
        if entry is None:
            return None
        if touch and now > entry.last_seen:
            entry.last_seen = now
            self._by_last_seen.move_to_end(session_id)
        return self._snapshot(session_id, entry)

    async def update(
        self,
        session_id: str,
        changes: Mapping[str, JSONValue] | None = None,
        *,
        remove: Iterable[str] = (),
        expected_version: int | None = None,
    ) -> bool:
        stored = _copy_json(changes)
        removals = check_removals(remove)
        check_expected_version(expected_version)
        entry = self._live_entry(session_id, self._clock())
        if entry is None:
            return False
        if expected_version is not None and entry.version != expected_version:
            raise SessionChanged(
                f"the session is at version {entry.version}, not {expected_version}"
            )
        entry.data.update(stored)
        for key in removals:
            entry.data.pop(key, None)
        entry.version += 1
        return True

    async def delete(self, session_id: str) -> bool:
        if not is_well_formed_session_id(session_id):
            return False
        now = self._clock()
        entry = self._remove(session_id)
        return entry is not None and not self._is_expired(entry, now)

    async def delete_user_sessions(self, username: str) -> int:
        check_username(username)
        now = self._clock()
        ended = 0
        for session_id in list(self._by_user.get(username, ())):
            entry = self._remove(session_id)
            if entry is not None and not self._is_expired(entry, now):
                ended += 1
        return ended

    async def list_user_sessions(self, username: str) -> list[Session]:
        check_username(username)
        now = self._clock()
        live: list[Session] = []
        # A copy of the ids: looking forgets the expired ones, which changes the set.
        for session_id in list(self._by_user.get(username, ())):
            entry = self._live_entry(session_id, now)
            if entry is not None:
                live.append(self._snapshot(session_id, entry))
        live.sort(key=lambda session: session.created_at)
        return live

    async def purge_expired(self, limit: int = 10_000) -> int:
        now = self._clock()
        removed = 0
        # Each order has its oldest entries first, so the expired ones lead and the loop
        # stops at the first live entry: the cost follows the expired count only.
        for order in (self._by_last_seen, self._by_creation):
            while removed < limit and order:
                session_id = next(iter(order))
                entry = self._entries[session_id]
                # The same rule as every read, so a purge never removes a session that a
                # load would still return (the cutoff alone can round the other way).
                if not self._is_expired(entry, now):
                    break
                self._remove(session_id)
                removed += 1
        return removed

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._entries.clear()
        self._by_last_seen.clear()
        self._by_creation.clear()
        self._by_user.clear()
