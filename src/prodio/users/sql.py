"""Users in a SQL database, with SQLAlchemy 2 Core: SQLite (the default) or PostgreSQL.

One code path serves both. The schema is managed by a short list of numbered migrations
(:data:`MIGRATIONS`); the versions applied so far are rows of ``prodio_schema_version``.
:meth:`SqlUserStore.migrate` applies the missing ones, each in its own transaction, while
holding a lock that keeps two instances starting at once from applying the same one twice.
"""

from __future__ import annotations

import builtins
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from prodio.users.base import (
    InvalidUsername,
    StalePasswordHash,
    User,
    UserExists,
    UserNotFound,
    UserStoreUnavailable,
    normalize_username,
)

SQLITE_BUSY_TIMEOUT_MS = 5_000
POSTGRES_CONNECT_TIMEOUT_S = 5
# Any fixed 64-bit number: it names prodio's migration lock among all advisory locks of
# the database, so that concurrent ``migrate()`` calls run one after the other.
POSTGRES_MIGRATION_LOCK_KEY = 0x70726F64696F  # "prodio"

_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
# Read by the SQLite "begin" hook below; migrations take the write lock up front.
_SQLITE_BEGIN_OPTION = "prodio_sqlite_begin"


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode (a property of the file, kept once set).

    Switching needs the database to itself, and SQLite answers "database is locked" at
    once, without its busy handler, when another connection holds it: as happens when
    several instances open a new database together. So the mode is read first (most
    connections find it set) and the switch is retried within the busy timeout.
    """
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class DatabaseUrlError(ValueError):
    """The database URL cannot be used; the message says why (without the URL's password)."""


class SchemaVersionError(UserStoreUnavailable):
    """The database schema is newer than this version of prodio knows how to use."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps it as ``timestamptz``; SQLite, which has no time zones, keeps the UTC
    wall time and gets its zone back on the way out.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no defined time; pass an aware one")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_metadata = MetaData()

schema_version_table = Table(
    "prodio_schema_version",
    _metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", UtcDateTime(), nullable=False),
)

# The shape of ``users`` after the latest migration; queries use this one.
users_table = Table(
    "users",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("password_changed_at", UtcDateTime(), nullable=False),
    Column("must_change_password", Boolean, nullable=False, server_default=false()),
    Column("session_epoch", String(32), nullable=False, server_default=""),
    UniqueConstraint("username", name="uq_users_username"),
)

SESSION_EPOCH_BYTES = 8


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: applied once, in a transaction, in version order."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_create_users(connection: Connection) -> None:
    # Spelled out rather than taken from ``users_table``: a migration must keep creating
    # the v1 shape even after later migrations change the current one.
    v1 = Table(
        "users",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("username", String(64), nullable=False),
        Column("password_hash", Text, nullable=False),
        Column("disabled", Boolean, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("password_changed_at", UtcDateTime(), nullable=False),
        UniqueConstraint("username", name="uq_users_username"),
    )
    v1.create(connection)


def _v2_password_change(connection: Connection) -> None:
    # Constant defaults fill the new columns of every existing row in place, on SQLite and
    # PostgreSQL alike. An existing account keeps its password (no forced change) and its
    # sessions: sessions made before this version carry no epoch, which reads as "".
    no = "0" if connection.dialect.name == "sqlite" else "FALSE"
    connection.execute(
        text(f"ALTER TABLE users ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT {no}")
    )
    connection.execute(
        text("ALTER TABLE users ADD COLUMN session_epoch VARCHAR(32) NOT NULL DEFAULT ''")
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the users table", _v1_create_users),
    Migration(2, "add must_change_password and session_epoch", _v2_password_change),
)


def new_session_epoch() -> str:
    """A fresh session epoch: random, so that an account removed and made again under the
    same name never accepts the old account's sessions."""
    return secrets.token_hex(SESSION_EPOCH_BYTES)


def _check_migrations(migrations: tuple[Migration, ...]) -> int:
    """Return the latest version, after making sure the versions run 1, 2, 3, ..."""
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration versions must be 1, 2, 3, ... in order; got {versions}")
    return len(versions)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_database_url(database_url: str) -> URL:
    """Parse the URL and give PostgreSQL URLs the psycopg (v3) driver."""
    try:
        url = make_url(database_url)
    except sa_exc.ArgumentError:
        # The text may hold a password: say what is expected, not what was given.
        raise DatabaseUrlError(
            "not a database URL; expected sqlite:///path/to/users.db or "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    if url.drivername in _POSTGRES_SCHEMES:
        return url.set(drivername="postgresql+psycopg")
    if url.drivername in _SQLITE_SCHEMES:
        if url.database in (None, "", ":memory:") or "mode=memory" in str(url.query):
            raise DatabaseUrlError(
                "an in-memory SQLite database would lose every user at exit; "
                "give a file, e.g. sqlite:///path/to/users.db"
            )
        return url.set(drivername="sqlite+pysqlite")
    raise DatabaseUrlError(
        f"unsupported database {url.drivername!r}: use sqlite:///path/to/users.db or "
        "postgresql://user:password@host:5432/dbname"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


class SqlUserStore:
    """A :class:`~prodio.users.base.UserStore` backed by SQLite or PostgreSQL.

    Accepted URLs: ``sqlite:///absolute/path/users.db`` (the folder is made when missing),
    ``postgresql+psycopg://...`` and the shorter ``postgresql://...`` and ``postgres://...``,
    which get the psycopg driver. Raises :class:`DatabaseUrlError` for any other URL and
    :class:`UserStoreUnavailable` when the SQLite folder cannot be made.

    Every method may raise :class:`UserStoreUnavailable` when the database cannot be used;
    its message names the database without the URL's password.
    """

    def __init__(self, database_url: str) -> None:
        url = _parse_database_url(database_url)
        self._password = url.password
        self.display_url = url.render_as_string(hide_password=True)
        self.is_sqlite = url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self._engine = self._sqlite_engine(url)
        else:
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
            self._engine = create_engine(
                url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
            )

    def __repr__(self) -> str:
        return f"SqlUserStore({self.display_url!r})"

    def _sqlite_engine(self, url: URL) -> Engine:
        assert url.database is not None  # checked by _parse_database_url
        database = Path(url.database)
        folder = database.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserStoreUnavailable(
                f"user database {self.display_url} is unavailable: cannot make the folder "
                f"{folder}: {error.strerror}"
            ) from None
        try:
            # Password hashes live here: readable by the owner only (SQLite gives its -wal
            # and -shm files the same mode).
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as error:
            raise UserStoreUnavailable(
                f"user database {self.display_url} is unavailable: cannot open {database}: "
                f"{error.strerror}"
            ) from None
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Take BEGIN away from the sqlite3 module, which would skip it before DDL and
            # SELECT, so that every transaction (migrations included) is a real one.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                # The busy timeout makes a writer wait for the lock instead of failing at
                # once; WAL lets readers go on while a writer writes.
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                _use_wal(cursor)
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            begin = connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "BEGIN")
            connection.exec_driver_sql(begin)

        return engine

    @contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        try:
            yield
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            cause = getattr(error, "orig", None)
            reason = _first_line(cause if isinstance(cause, BaseException) else error)
            if self._password:
                reason = reason.replace(self._password, "***")
            raise UserStoreUnavailable(
                f"user database {self.display_url} is unavailable: {reason}"
            ) from error

    # -- schema ---------------------------------------------------------------------

    @contextmanager
    def _migration_transaction(self) -> Iterator[Connection]:
        with self._engine.connect() as connection:
            if self.is_sqlite:
                connection.execution_options(**{_SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            with connection.begin():
                if not self.is_sqlite:
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": POSTGRES_MIGRATION_LOCK_KEY},
                    )
                yield connection

    def schema_version(self) -> int:
        """The latest migration applied to the database (0 for an empty database)."""
        with self._unavailable_on_error(), self._engine.connect() as connection:
            if not self._engine.dialect.has_table(connection, schema_version_table.name):
                return 0
            return self._read_version(connection)

    @staticmethod
    def _read_version(connection: Connection) -> int:
        version = connection.execute(select(func.max(schema_version_table.c.version))).scalar()
        return int(version or 0)

    def migrate(self) -> None:
        """Apply the migrations this database lacks; a no-op when it is up to date.

        Raises :class:`SchemaVersionError` when the database was migrated by a newer
        prodio than this one.
        """
        migrations = MIGRATIONS
        latest = _check_migrations(migrations)
        while True:
            with self._unavailable_on_error(), self._migration_transaction() as connection:
                schema_version_table.create(connection, checkfirst=True)
                current = self._read_version(connection)
                if current > latest:
                    raise SchemaVersionError(
                        f"user database {self.display_url} has schema version {current}, "
                        f"but this prodio knows versions up to {latest}: upgrade prodio"
                    )
                if current == latest:
                    return
                migration = migrations[current]
                migration.apply(connection)
                connection.execute(
                    insert(schema_version_table).values(
                        version=migration.version,
                        description=migration.description,
                        applied_at=_utcnow(),
                    )
                )

    # -- users ----------------------------------------------------------------------

    @staticmethod
    def _user(row: Row[Any]) -> User:
        return User(
            username=row.username,
            password_hash=row.password_hash,
            disabled=bool(row.disabled),
            created_at=row.created_at,
            password_changed_at=row.password_changed_at,
            must_change_password=bool(row.must_change_password),
            session_epoch=row.session_epoch,
        )

    def get(self, username: str) -> User | None:
        try:
            name = normalize_username(username)
        except InvalidUsername:
            return None
        query = select(users_table).where(users_table.c.username == name)
        with self._unavailable_on_error(), self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else self._user(row)

    def add(self, username: str, password_hash: str, *, must_change_password: bool = False) -> User:
        name = normalize_username(username)
        now = _utcnow()
        user = User(
            username=name,
            password_hash=password_hash,
            disabled=False,
            created_at=now,
            password_changed_at=now,
            must_change_password=must_change_password,
            session_epoch=new_session_epoch(),
        )
        with self._unavailable_on_error():
            try:
                with self._engine.begin() as connection:
                    connection.execute(
                        insert(users_table).values(
                            username=user.username,
                            password_hash=user.password_hash,
                            disabled=user.disabled,
                            created_at=user.created_at,
                            password_changed_at=user.password_changed_at,
                            must_change_password=user.must_change_password,
                            session_epoch=user.session_epoch,
                        )
                    )
            except sa_exc.IntegrityError:
                raise UserExists(f"user {name} already exists") from None
        return user

    def list(self) -> builtins.list[User]:
        query = select(users_table).order_by(users_table.c.username)
        with self._unavailable_on_error(), self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [self._user(row) for row in rows]

    def count(self) -> int:
        query = select(func.count()).select_from(users_table)
        with self._unavailable_on_error(), self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def _update_one(self, username: str, **values: Any) -> None:
        name = normalize_username(username)
        statement = update(users_table).where(users_table.c.username == name).values(**values)
        with self._unavailable_on_error(), self._engine.begin() as connection:
            changed = connection.execute(statement).rowcount
        if changed == 0:
            raise UserNotFound(f"no user named {name}")

    def set_password_hash(
        self,
        username: str,
        password_hash: str,
        *,
        must_change_password: bool = False,
        end_sessions: bool = True,
        expected_hash: str | None = None,
    ) -> User:
        name = normalize_username(username)
        values: dict[str, Any] = {
            "password_hash": password_hash,
            "password_changed_at": _utcnow(),
            "must_change_password": must_change_password,
        }
        if end_sessions:
            values["session_epoch"] = new_session_epoch()
        this_user = users_table.c.username == name
        statement = update(users_table).where(this_user).values(**values)
        if expected_hash is not None:
            statement = statement.where(users_table.c.password_hash == expected_hash)
        with self._unavailable_on_error(), self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 1:
                return self._user(connection.execute(select(users_table).where(this_user)).one())
            exists = connection.execute(select(users_table.c.id).where(this_user)).first()
        if exists is not None and expected_hash is not None:
            raise StalePasswordHash(f"the password of {name} was changed meanwhile")
        raise UserNotFound(f"no user named {name}")

    def upgrade_password_hash(self, username: str, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` by ``new_hash`` (same password, new parameters).

        Unlike :meth:`set_password_hash` this is no password change: ``password_changed_at``
        stays. It changes nothing, returning ``False``, when the stored hash is no longer
        ``old_hash``, so an upgrade racing a password change cannot bring the old
        password back.
        """
        try:
            name = normalize_username(username)
        except InvalidUsername:
            return False
        statement = (
            update(users_table)
            .where(users_table.c.username == name, users_table.c.password_hash == old_hash)
            .values(password_hash=new_hash)
        )
        with self._unavailable_on_error(), self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount == 1)

    def set_disabled(self, username: str, disabled: bool) -> None:
        self._update_one(username, disabled=disabled)

    def renew_session_epoch(self, username: str) -> None:
        self._update_one(username, session_epoch=new_session_epoch())

    def remove(self, username: str) -> None:
        name = normalize_username(username)
        statement = delete(users_table).where(users_table.c.username == name)
        with self._unavailable_on_error(), self._engine.begin() as connection:
            removed = connection.execute(statement).rowcount
        if removed == 0:
            raise UserNotFound(f"no user named {name}")

    def ping(self) -> None:
        with self._unavailable_on_error(), self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()
