"""The server-side session contract that every backend implements.

A session belongs to one user, is created at login and ends at logout, revocation or
expiry, whichever comes first. Two timeouts hold together:

- the *idle* timeout: a session not used for ``idle_timeout`` seconds is dead;
- the *absolute* timeout: a session older than ``absolute_timeout`` seconds is dead,
  however busy it is.

A dead session is never returned: backends treat it exactly as an id they never issued.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# JSON values only: every backend must be able to store and return them unchanged.
JSONValue = Any


class SessionStoreUnavailable(Exception):
    """The backend cannot be reached or did not answer in time.

    Callers must fail closed (answer 503), never treat the request as anonymous.
    """


class SessionChanged(Exception):
    """A compare-and-set update found the session live but at another version.

    Nothing was changed: read the session again (``load(..., touch=False)``), redo the
    change from what is there now, and try again with the new version.
    """


def check_expected_version(expected_version: int | None) -> int | None:
    """``expected_version`` if it is ``None`` or a non-negative int; else raise TypeError."""
    if expected_version is None:
        return None
    if (
        not isinstance(expected_version, int)
        or isinstance(expected_version, bool)
        or expected_version < 0
    ):
        raise TypeError(f"expected_version must be a non-negative int, not {expected_version!r}")
    return expected_version


@dataclass(frozen=True, slots=True)
class SessionTimeouts:
    idle: float
    absolute: float

    def __post_init__(self) -> None:
        if self.idle <= 0 or self.absolute <= 0:
            raise ValueError("session timeouts must be positive")
        if self.absolute < self.idle:
            raise ValueError("the absolute timeout must be at least the idle timeout")


@dataclass(frozen=True, slots=True)
class Session:
    """A snapshot of one session as the store held it when it was read.

    ``version`` is the version of its data (see :class:`SessionStore`); it defaults to 0
    only so that the dataclass stays easy to build by hand.
    """

    id: str
    username: str
    created_at: float
    last_seen: float
    idle_expires_at: float
    absolute_expires_at: float
    data: Mapping[str, JSONValue] = field(default_factory=dict)
    version: int = 0

    @property
    def expires_at(self) -> float:
        """When the session dies if it is not used again."""
        return min(self.idle_expires_at, self.absolute_expires_at)


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. All methods are coroutines; all may raise
    :class:`SessionStoreUnavailable`.

    Session ids are opaque strings of at least 128 random bits, made by the store with
    :mod:`secrets`. Data values are JSON values (``None``, bool, int, float, str, lists and
    dicts of them); a store returns copies, so a caller mutating a returned value changes
    nothing until it calls :meth:`update`.

    Every session has a *version* of its data, returned in each snapshot
    (:attr:`Session.version`): :meth:`create` makes version 1 (a record stored before
    versions existed counts as 0), every :meth:`update` that applies (the session is live)
    increments it by exactly one, and nothing else changes it: loading, touching and
    listing never do. Two snapshots with the same version of one session hold the same
    data, which is what makes :meth:`update`'s ``expected_version`` a compare-and-set.
    """

    timeouts: SessionTimeouts

    async def create(self, username: str, data: Mapping[str, JSONValue] | None = None) -> Session:
        """Start a new session for ``username`` with a fresh id, at version 1, and return it."""
        ...

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        """Return the live session with this id, or ``None``.

        ``None`` covers ids never issued, deleted, revoked and expired alike. With
        ``touch`` the session's ``last_seen`` moves to now (pushing the idle expiry back;
        the absolute expiry never moves) and the returned snapshot shows it. The snapshot
        carries the session's current version; touching does not change it.
        """
        ...

    async def update(
        self,
        session_id: str,
        changes: Mapping[str, JSONValue] | None = None,
        *,
        remove: Iterable[str] = (),
        expected_version: int | None = None,
    ) -> bool:
        """Set the keys in ``changes`` and delete the keys in ``remove`` of a live session.

        Only the named keys change: concurrent updates of different keys never lose each
        other. Returns ``False``, changing nothing, when the session is not live, so a slow
        request can never bring back a session that was logged out meanwhile. An update
        that applies increments the session's version by one (even one that sets and
        removes nothing).

        With ``expected_version`` the update is a compare-and-set, checked and applied
        atomically: when the session is live but its version is not ``expected_version``,
        nothing changes and :class:`SessionChanged` is raised; on success the session's
        version is ``expected_version + 1``. A read-modify-write reads a snapshot, computes
        the new value and writes it with ``expected_version=snapshot.version``, so a write
        made by anyone in between is never lost silently.
        """
        ...

    async def delete(self, session_id: str) -> bool:
        """End the session now; ``True`` if it was live."""
        ...

    async def delete_user_sessions(self, username: str) -> int:
        """End every session of ``username`` (log out everywhere); return how many ended."""
        ...

    async def list_user_sessions(self, username: str) -> list[Session]:
        """The live sessions of ``username``, oldest first, for the user to see and end.

        Dead sessions (expired, deleted, revoked) are never listed; a backend may forget
        them on the way. Listing touches nothing: no session's ``last_seen`` or expiry
        moves, so looking at the list never keeps a forgotten session alive. The result
        is read from where the sessions live, never from a cache that could be stale.
        """
        ...

    async def purge_expired(self, limit: int = 10_000) -> int:
        """Remove up to ``limit`` expired sessions and return how many went.

        Its cost grows with the number of expired sessions, not with all sessions.
        Backends that expire entries by themselves may do nothing and return 0.
        """
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise :class:`SessionStoreUnavailable` if not."""
        ...

    async def aclose(self) -> None:
        """Release connections and background resources."""
        ...
