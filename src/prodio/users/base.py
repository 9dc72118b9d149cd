"""The user store contract.

Methods are synchronous (SQLAlchemy sessions are); async callers run them in a worker
thread, e.g. with :func:`anyio.to_thread.run_sync`, never on the event loop.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")


class UserError(Exception):
    """A user operation failed for a reason the caller can show as it is."""


class UserExists(UserError):
    pass


class UserNotFound(UserError):
    pass


class InvalidUsername(UserError):
    pass


class StalePasswordHash(UserError):
    """The password changed between checking the old one and storing the new one."""


class UserStoreUnavailable(Exception):
    """The user database cannot be reached."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str
    disabled: bool
    created_at: datetime
    password_changed_at: datetime
    # Set for a password someone else chose (the dev-mode admin's, ``--temporary``): its
    # sessions may only change it until it is changed.
    must_change_password: bool = False
    # A session is the account's only while it carries this value (sessions keep the one
    # they were created with). A new value ends every other session on every instance,
    # whatever store holds them; a user's own password change may keep it.
    session_epoch: str = ""

    def temporary_password_expired(self, lifetime: float, now: datetime) -> bool:
        """Whether this account's password is a temporary one set ``lifetime`` seconds or
        more before ``now`` (ASVS 6.4.1): it then signs in no more. ``password_changed_at``
        is when it was set (adding the user, or ``set-password``); a hash upgrade keeps it.
        A password the user chose never expires this way.
        """
        if not self.must_change_password:
            return False
        return (now - self.password_changed_at).total_seconds() >= lifetime


def normalize_username(raw: str) -> str:
    """Return the canonical form of a user name, or raise :class:`InvalidUsername`.

    Names compare case-insensitively and after Unicode NFKC folding, so ``Admin`` and
    ``admin`` are one account.
    """
    name = unicodedata.normalize("NFKC", raw).strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidUsername(
            "a user name is 1-64 characters: letters, digits and _ . @ - "
            "(starting with a letter or digit)"
        )
    return name


@runtime_checkable
class UserStore(Protocol):
    """Where accounts live. Names passed in are normalized by the store."""

    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call on every start-up."""
        ...

    def get(self, username: str) -> User | None:
        """The user, or ``None`` (also for a name that is not valid)."""
        ...

    def add(self, username: str, password_hash: str, *, must_change_password: bool = False) -> User:
        """Create a user; raise :class:`UserExists` or :class:`InvalidUsername`."""
        ...

    def list(self) -> list[User]:
        """All users, ordered by name."""
        ...

    def count(self) -> int: ...

    def set_password_hash(
        self,
        username: str,
        password_hash: str,
        *,
        must_change_password: bool = False,
        end_sessions: bool = True,
        expected_hash: str | None = None,
    ) -> User:
        """Replace the hash and return the updated user; raise :class:`UserNotFound`.

        ``end_sessions`` gives the account a new session epoch, which ends every session
        made before. With ``expected_hash``, change nothing and raise
        :class:`StalePasswordHash` unless the stored hash is still that one (the hash the
        old password was just checked against).
        """
        ...

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable or enable the account; raise :class:`UserNotFound`."""
        ...

    def renew_session_epoch(self, username: str) -> None:
        """Give the account a new session epoch, which ends every session made before
        (at its next request, on every instance, whatever the session backend); raise
        :class:`UserNotFound`."""
        ...

    def remove(self, username: str) -> None:
        """Delete the account; raise :class:`UserNotFound`."""
        ...

    def ping(self) -> None:
        """Return when the database answers; raise :class:`UserStoreUnavailable`."""
        ...

    def close(self) -> None: ...
