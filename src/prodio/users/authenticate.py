"""Checking a user name and password at login."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio.to_thread

from prodio.config import DEFAULT_TEMPORARY_PASSWORD_LIFETIME
from prodio.users.base import (
    InvalidUsername,
    User,
    UserError,
    UserStore,
    UserStoreUnavailable,
    normalize_username,
)
from prodio.users.passwords import MAX_PASSWORD_LENGTH, PasswordHasher

logger = logging.getLogger(__name__)

# Far above any valid name (64), low enough that normalizing it costs nothing.
MAX_USERNAME_INPUT_LENGTH = 1024

# Why a check refused, for the audit log only: the person who asked sees one answer.
WRONG_CREDENTIALS = "wrong user name or password, or account disabled"
TEMPORARY_PASSWORD_EXPIRED = "temporary password expired"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class PasswordCheck:
    """What :meth:`PasswordAuthenticator.check` found: the account the name and password
    sign in to, or ``None`` and ``refusal``, the reason for the audit log (never to be
    shown: every refusal must look the same to whoever asked)."""

    user: User | None
    refusal: str | None = None


@runtime_checkable
class SupportsHashUpgrade(Protocol):
    """A user store that can swap a hash for a stronger one of the same password."""

    def upgrade_password_hash(self, username: str, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` only if it is still the stored one; keep
        ``password_changed_at``. Return whether the hash was replaced."""
        ...


class PasswordAuthenticator:
    """Decides whether a name and password log someone in.

    Every refusal looks the same and costs the same: an invalid name, an unknown user, a
    wrong password, a disabled account and an expired temporary password all return
    ``None`` after one argon2 verification, so neither the answer nor its timing tells
    which accounts exist or which password was right.
    :class:`~prodio.users.base.UserStoreUnavailable` propagates (answer 503, not 401).

    A temporary password (``must_change_password``) signs in for
    ``temporary_password_lifetime`` seconds after it was set (ASVS 6.4.1), by ``clock``.
    """

    def __init__(
        self,
        store: UserStore,
        hasher: PasswordHasher,
        *,
        temporary_password_lifetime: float = DEFAULT_TEMPORARY_PASSWORD_LIFETIME,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if temporary_password_lifetime <= 0:
            raise ValueError("temporary_password_lifetime must be positive")
        self._store = store
        self._hasher = hasher
        self.temporary_password_lifetime = temporary_password_lifetime
        self._clock = clock

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user these credentials belong to, or ``None``: :meth:`check` without the
        reason."""
        return (await self.check(username, password)).user

    async def check(self, username: str, password: str) -> PasswordCheck:
        """The user these credentials belong to, or why not.

        The database read and the hash check share one worker thread, taken under the
        hasher's limiter, so the event loop never blocks on either.
        """
        if len(username) > MAX_USERNAME_INPUT_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            # Longer than any name or password that can be set: refuse before spending
            # time on megabytes of input.
            return PasswordCheck(None, WRONG_CREDENTIALS)
        return await anyio.to_thread.run_sync(
            self._check_blocking, username, password, limiter=self._hasher.limiter
        )

    def _check_blocking(self, username: str, password: str) -> PasswordCheck:
        try:
            user = self._store.get(normalize_username(username))
        except InvalidUsername:
            user = None
        matches = self._hasher.verify(None if user is None else user.password_hash, password)
        if user is None or not matches or user.disabled:
            return PasswordCheck(None, WRONG_CREDENTIALS)
        if user.temporary_password_expired(self.temporary_password_lifetime, self._clock()):
            # Decided after the verification, like a wrong password, and before any hash
            # upgrade, which would cost one more hash and so tell the two apart.
            return PasswordCheck(None, TEMPORARY_PASSWORD_EXPIRED)
        if self._hasher.needs_rehash(user.password_hash):
            user = self._store_new_hash(user, password)
        return PasswordCheck(user)

    async def change_password(
        self, user: User, new_password: str, *, end_sessions: bool = True
    ) -> User:
        """Give ``user`` (as :meth:`authenticate` just returned it) a new password; return
        the updated user.

        Applies the password policy (:class:`~prodio.users.passwords.PasswordPolicyError`),
        clears ``must_change_password``, and gives the account a new session epoch when
        ``end_sessions``. The new hash replaces the one the old password was checked
        against, or nothing: :class:`~prodio.users.base.StalePasswordHash` when the
        password changed meanwhile (an administrator's reset must not be overwritten by a
        change that proved only the password before it). Hashing and storing share one
        worker thread, under the hasher's limiter.
        """
        # The policy, and the breach lookup if one is configured, before a hashing slot is
        # taken: a slow breach API must not hold up other users' logins.
        await self._hasher.acheck_new_password(new_password, username=user.username)
        return await anyio.to_thread.run_sync(
            functools.partial(self._change_blocking, user, new_password, end_sessions),
            limiter=self._hasher.limiter,
        )

    def _change_blocking(self, user: User, new_password: str, end_sessions: bool) -> User:
        new_hash = self._hasher.rehash(new_password)  # checked by acheck_new_password
        return self._store.set_password_hash(
            user.username,
            new_hash,
            must_change_password=False,
            end_sessions=end_sessions,
            expected_hash=user.password_hash,
        )

    def _store_new_hash(self, user: User, password: str) -> User:
        if not isinstance(self._store, SupportsHashUpgrade):
            # set_password_hash would be no safe stand-in: racing a password change, it
            # could store a hash of the old password over the new one.
            return user
        new_hash = self._hasher.rehash(password)
        try:
            upgraded = self._store.upgrade_password_hash(
                user.username, user.password_hash, new_hash
            )
        except (UserError, UserStoreUnavailable) as error:
            # The login itself succeeded; the upgrade is tried again at the next one.
            logger.warning("could not upgrade the password hash of %s: %s", user.username, error)
            return user
        return dataclasses.replace(user, password_hash=new_hash) if upgraded else user
