"""User accounts: the :class:`UserStore` contract, its SQL backend and password hashing."""

from __future__ import annotations

from prodio.config import Settings, SettingsError
from prodio.users.authenticate import PasswordAuthenticator, SupportsHashUpgrade
from prodio.users.base import (
    InvalidUsername,
    StalePasswordHash,
    User,
    UserError,
    UserExists,
    UserNotFound,
    UserStore,
    UserStoreUnavailable,
    normalize_username,
)
from prodio.users.passwords import (
    PasswordHasher,
    PasswordPolicyError,
    check_password_policy,
)
from prodio.users.sql import DatabaseUrlError, SchemaVersionError, SqlUserStore


def build_user_store(settings: Settings) -> UserStore:
    """The user store the settings name (``PRODIO_DATABASE_URL``, else SQLite in the data
    folder). Call :meth:`UserStore.migrate` before use.

    Raises :class:`SettingsError` for a URL that cannot be used, and
    :class:`UserStoreUnavailable` when the SQLite folder cannot be made.
    """
    try:
        return SqlUserStore(settings.effective_database_url)
    except DatabaseUrlError as error:
        raise SettingsError(f"PRODIO_DATABASE_URL: {error}") from None


__all__ = [
    "DatabaseUrlError",
    "InvalidUsername",
    "PasswordAuthenticator",
    "PasswordHasher",
    "PasswordPolicyError",
    "SchemaVersionError",
    "SqlUserStore",
    "StalePasswordHash",
    "SupportsHashUpgrade",
    "User",
    "UserError",
    "UserExists",
    "UserNotFound",
    "UserStore",
    "UserStoreUnavailable",
    "build_user_store",
    "check_password_policy",
    "normalize_username",
]
