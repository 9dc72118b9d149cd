"""SqlUserStore against real databases: SQLite files and PostgreSQL (one suite for both)."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    make_url,
    select,
    text,
)

from prodio.config import Settings, SettingsError
from prodio.users import (
    DatabaseUrlError,
    InvalidUsername,
    SchemaVersionError,
    SqlUserStore,
    StalePasswordHash,
    UserExists,
    UserNotFound,
    UserStore,
    UserStoreUnavailable,
    build_user_store,
)
from prodio.users import sql as sql_module
from prodio.users.sql import MIGRATIONS, Migration, UtcDateTime, schema_version_table
from tests.users.support import free_port

LATEST = 2


def _sqlalchemy_url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def raw(database_url: str) -> Iterator[Connection]:
    """A plain SQLAlchemy connection to the same database, to look behind the store."""
    url = make_url(_sqlalchemy_url(database_url))
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _is_utc(moment: datetime) -> bool:
    return moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


# -- schema ----------------------------------------------------------------------------


def test_store_implements_the_protocol(store: SqlUserStore) -> None:
    assert isinstance(store, UserStore)


def test_fresh_database_has_version_zero_until_migrated(database_url: str) -> None:
    fresh = SqlUserStore(database_url)
    try:
        assert fresh.schema_version() == 0
        fresh.migrate()
        assert fresh.schema_version() == len(MIGRATIONS) == LATEST
    finally:
        fresh.close()


def test_migrate_is_idempotent_and_keeps_data(
    store: SqlUserStore, database_url: str, raw: Connection
) -> None:
    store.add("alice", "hash-a")
    store.migrate()
    again = SqlUserStore(database_url)
    try:
        again.migrate()
        assert again.get("alice") is not None
    finally:
        again.close()
    rows = raw.execute(select(schema_version_table.c.version)).scalars().all()
    assert rows == list(range(1, LATEST + 1))
    tables = set(inspect(raw).get_table_names())
    assert {"users", "prodio_schema_version"} <= tables


def test_migrations_create_the_documented_columns(store: SqlUserStore, raw: Connection) -> None:
    columns = {column["name"] for column in inspect(raw).get_columns("users")}
    assert columns == {
        "id",
        "username",
        "password_hash",
        "disabled",
        "created_at",
        "password_changed_at",
        # v2
        "must_change_password",
        "session_epoch",
    }


def test_database_newer_than_the_code_is_refused(
    store: SqlUserStore, database_url: str, raw: Connection
) -> None:
    with raw.begin():
        raw.execute(
            schema_version_table.insert().values(
                version=99, description="from the future", applied_at=datetime.now(UTC)
            )
        )
    newer = SqlUserStore(database_url)
    try:
        with pytest.raises(SchemaVersionError) as caught:
            newer.migrate()
    finally:
        newer.close()
    message = str(caught.value)
    assert "schema version 99" in message
    assert f"up to {LATEST}" in message
    assert "upgrade prodio" in message
    assert isinstance(caught.value, UserStoreUnavailable)


def test_each_migration_runs_once_in_order(
    database_url: str, monkeypatch: pytest.MonkeyPatch, raw: Connection
) -> None:
    calls: list[int] = []

    def v2(connection: Connection) -> None:
        calls.append(2)
        connection.execute(text("CREATE TABLE extra (id INTEGER PRIMARY KEY)"))

    extra = Migration(LATEST + 1, "add extra", v2)
    monkeypatch.setattr(sql_module, "MIGRATIONS", (*MIGRATIONS, extra))
    fresh = SqlUserStore(database_url)
    try:
        fresh.migrate()
        fresh.migrate()
        assert fresh.schema_version() == LATEST + 1
    finally:
        fresh.close()
    assert calls == [2]
    described = raw.execute(
        select(schema_version_table.c.version, schema_version_table.c.description).order_by(
            schema_version_table.c.version
        )
    ).all()
    assert [tuple(row) for row in described] == [
        (1, "create the users table"),
        (2, "add must_change_password and session_epoch"),
        (LATEST + 1, "add extra"),
    ]


def test_a_failing_migration_leaves_nothing_behind(
    store: SqlUserStore, monkeypatch: pytest.MonkeyPatch, raw: Connection
) -> None:
    def broken(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("migration bug")

    broken_step = Migration(LATEST + 1, "broken", broken)
    monkeypatch.setattr(sql_module, "MIGRATIONS", (*MIGRATIONS, broken_step))
    with pytest.raises(RuntimeError, match="migration bug"):
        store.migrate()
    # The DDL ran inside the migration's transaction, so it went with the rollback.
    assert "half_done" not in inspect(raw).get_table_names()
    assert store.schema_version() == LATEST


def test_migration_versions_must_be_consecutive(
    store: SqlUserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sql_module, "MIGRATIONS", (*MIGRATIONS, Migration(LATEST + 2, "gap", lambda _: None))
    )
    with pytest.raises(RuntimeError, match=r"1, 2, 3"):
        store.migrate()


def test_concurrent_migrations_apply_once(database_url: str, raw: Connection) -> None:
    stores = [SqlUserStore(database_url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def migrate(one: SqlUserStore) -> None:
        start.wait()
        try:
            one.migrate()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(one,)) for one in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one in stores:
        one.close()
    assert errors == []
    versions = raw.execute(select(schema_version_table.c.version)).scalars().all()
    assert versions == list(range(1, LATEST + 1))


# -- users -----------------------------------------------------------------------------


def test_add_and_get(store: SqlUserStore) -> None:
    before = datetime.now(UTC)
    added = store.add("  Alice ", "hash-a")
    after = datetime.now(UTC)
    assert added.username == "alice"
    assert added.password_hash == "hash-a"
    assert added.disabled is False
    assert before <= added.created_at <= after
    assert added.password_changed_at == added.created_at

    fetched = store.get("ALICE")
    assert fetched is not None
    assert fetched.username == "alice"
    assert fetched.password_hash == "hash-a"
    assert fetched.disabled is False
    assert _is_utc(fetched.created_at)
    assert _is_utc(fetched.password_changed_at)
    # The database keeps microseconds on both backends.
    assert fetched.created_at == added.created_at
    assert fetched.must_change_password is False
    assert len(fetched.session_epoch) == 16
    assert fetched.session_epoch == added.session_epoch
    temporary = store.add("bob", "hash-b", must_change_password=True)
    assert temporary.must_change_password is True
    bob = store.get("bob")
    assert bob is not None
    assert bob.must_change_password is True
    # Random: an account made again under an old name never accepts the old sessions.
    assert bob.session_epoch != fetched.session_epoch


def test_get_unknown_or_invalid_names_returns_none(store: SqlUserStore) -> None:
    store.add("alice", "hash-a")
    for name in ("bob", "", "   ", "bad name!", "x" * 65, "-leading-dash", "ali\x00ce"):
        assert store.get(name) is None, name


def test_duplicates_are_refused_case_and_width_insensitively(store: SqlUserStore) -> None:
    store.add("alice", "hash-a")
    for same in ("alice", "ALICE", "Alice ", "\uff21lice"):  # the last: fullwidth A
        with pytest.raises(UserExists, match="alice already exists"):
            store.add(same, "hash-b")
    assert store.count() == 1
    alice = store.get("alice")
    assert alice is not None
    assert alice.password_hash == "hash-a"


@pytest.mark.parametrize("name", ["", "bad name", "a/b", "é" * 3, "x" * 65, "_starts"])
def test_invalid_names_are_refused(store: SqlUserStore, name: str) -> None:
    with pytest.raises(InvalidUsername):
        store.add(name, "hash")
    with pytest.raises(InvalidUsername):
        store.set_password_hash(name, "hash")
    with pytest.raises(InvalidUsername):
        store.set_disabled(name, True)
    with pytest.raises(InvalidUsername):
        store.remove(name)
    assert store.count() == 0


def test_list_is_ordered_by_name_and_count_matches(store: SqlUserStore) -> None:
    assert store.list() == []
    assert store.count() == 0
    for name in ("carol", "alice", "bob"):
        store.add(name, f"hash-{name}")
    listed = store.list()
    assert [user.username for user in listed] == ["alice", "bob", "carol"]
    assert [user.password_hash for user in listed] == ["hash-alice", "hash-bob", "hash-carol"]
    assert store.count() == 3


def test_remove(store: SqlUserStore) -> None:
    store.add("alice", "hash-a")
    store.add("bob", "hash-b")
    store.remove("ALICE")
    assert store.get("alice") is None
    assert [user.username for user in store.list()] == ["bob"]
    with pytest.raises(UserNotFound, match="no user named alice"):
        store.remove("alice")


def test_set_password_hash(store: SqlUserStore) -> None:
    added = store.add("alice", "hash-old")
    store.set_password_hash("Alice", "hash-new")
    changed = store.get("alice")
    assert changed is not None
    assert changed.password_hash == "hash-new"
    assert changed.created_at == added.created_at
    assert changed.password_changed_at >= added.password_changed_at
    assert _is_utc(changed.password_changed_at)
    with pytest.raises(UserNotFound, match="no user named bob"):
        store.set_password_hash("bob", "hash")


def test_set_password_hash_gives_a_new_epoch_unless_told_not_to(store: SqlUserStore) -> None:
    added = store.add("alice", "hash-1", must_change_password=True)
    kept = store.set_password_hash("alice", "hash-2", end_sessions=False)
    assert kept.session_epoch == added.session_epoch
    assert kept.must_change_password is False
    assert kept.password_hash == "hash-2"
    assert kept == store.get("alice")
    renewed = store.set_password_hash("alice", "hash-3", must_change_password=True)
    assert renewed.session_epoch not in ("", added.session_epoch)
    assert renewed.must_change_password is True
    assert renewed == store.get("alice")


def test_renewing_the_epoch_changes_only_the_epoch(store: SqlUserStore) -> None:
    added = store.add("alice", "hash-1")
    store.renew_session_epoch("Alice")
    renewed = store.get("alice")
    assert renewed is not None
    assert renewed.session_epoch not in ("", added.session_epoch)
    assert (renewed.password_hash, renewed.disabled) == ("hash-1", False)
    with pytest.raises(UserNotFound, match="no user named bob"):
        store.renew_session_epoch("bob")


def test_a_change_based_on_a_stale_hash_changes_nothing(store: SqlUserStore) -> None:
    store.add("alice", "hash-1")
    # An administrator's reset lands between checking the old password and storing the new.
    reset = store.set_password_hash("alice", "hash-admin", must_change_password=True)
    with pytest.raises(StalePasswordHash, match="alice was changed meanwhile"):
        store.set_password_hash("alice", "hash-user", expected_hash="hash-1")
    assert store.get("alice") == reset
    changed = store.set_password_hash("alice", "hash-user", expected_hash="hash-admin")
    assert changed.password_hash == "hash-user"
    with pytest.raises(UserNotFound):
        store.set_password_hash("bob", "hash", expected_hash="hash-1")


def test_v2_upgrades_a_v1_database_in_place(
    database_url: str, monkeypatch: pytest.MonkeyPatch, raw: Connection
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(sql_module, "MIGRATIONS", MIGRATIONS[:1])
        old = SqlUserStore(database_url)
        old.migrate()
        old.close()
    now = datetime.now(UTC)
    v1_users = Table(
        "users",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("username", String(64)),
        Column("password_hash", Text),
        Column("disabled", Boolean),
        Column("created_at", UtcDateTime()),
        Column("password_changed_at", UtcDateTime()),
    )
    with raw.begin():
        raw.execute(
            v1_users.insert().values(
                username="alice",
                password_hash="hash-a",
                disabled=True,
                created_at=now,
                password_changed_at=now,
            )
        )
    upgraded = SqlUserStore(database_url)
    try:
        upgraded.migrate()
        assert upgraded.schema_version() == LATEST
        alice = upgraded.get("alice")
        assert alice is not None
        assert (alice.password_hash, alice.disabled, alice.created_at) == ("hash-a", True, now)
        # No forced change for existing accounts, and their sessions (no epoch) stay valid.
        assert alice.must_change_password is False
        assert alice.session_epoch == ""
        assert upgraded.add("bob", "hash-b").session_epoch != ""
    finally:
        upgraded.close()


def test_set_disabled(store: SqlUserStore) -> None:
    store.add("alice", "hash-a")
    store.add("bob", "hash-b")
    store.set_disabled("alice", True)
    alice, bob = store.get("alice"), store.get("bob")
    assert alice is not None
    assert alice.disabled is True
    assert bob is not None
    assert bob.disabled is False
    store.set_disabled("alice", True)  # already disabled: no error
    store.set_disabled("alice", False)
    alice = store.get("alice")
    assert alice is not None
    assert alice.disabled is False
    with pytest.raises(UserNotFound):
        store.set_disabled("carol", True)


def test_upgrade_password_hash_swaps_only_the_expected_hash(store: SqlUserStore) -> None:
    added = store.add("alice", "hash-v1")
    assert store.upgrade_password_hash("alice", "hash-v1", "hash-v2") is True
    upgraded = store.get("alice")
    assert upgraded is not None
    assert upgraded.password_hash == "hash-v2"
    # The same password, stored better: not a password change.
    assert upgraded.password_changed_at == added.password_changed_at
    # A stale expected hash (the password changed meanwhile) changes nothing.
    assert store.upgrade_password_hash("alice", "hash-v1", "hash-v3") is False
    assert store.upgrade_password_hash("nobody", "hash-v1", "hash-v3") is False
    assert store.upgrade_password_hash("bad name!", "hash-v1", "hash-v3") is False
    unchanged = store.get("alice")
    assert unchanged is not None
    assert unchanged.password_hash == "hash-v2"


def test_data_survives_a_new_store(store: SqlUserStore, database_url: str) -> None:
    store.add("alice", "hash-a")
    store.set_disabled("alice", True)
    store.close()
    reopened = SqlUserStore(database_url)
    try:
        reopened.migrate()
        alice = reopened.get("alice")
        assert alice is not None
        assert alice.disabled is True
        assert alice.password_hash == "hash-a"
        reopened.ping()
    finally:
        reopened.close()


def test_store_without_migration_fails_clearly(database_url: str) -> None:
    unmigrated = SqlUserStore(database_url)
    try:
        with pytest.raises(UserStoreUnavailable, match="users"):
            unmigrated.count()
    finally:
        unmigrated.close()


# -- unreachable databases and URLs ----------------------------------------------------


def test_unreachable_postgresql_is_unavailable_without_the_password() -> None:
    port = free_port()
    for scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        store = SqlUserStore(f"{scheme}://prodio:Sup3r-S3cret@127.0.0.1:{port}/test")
        operations = (store.ping, store.migrate, store.count, store.list)
        for operation in operations:
            with pytest.raises(UserStoreUnavailable) as caught:
                operation()
            message = str(caught.value)
            assert "Sup3r-S3cret" not in message
            assert f"postgresql+psycopg://prodio:***@127.0.0.1:{port}/test" in message
            assert "is unavailable" in message
        with pytest.raises(UserStoreUnavailable):
            store.get("alice")
        store.close()


def test_refused_login_to_postgresql_is_unavailable_without_the_password(
    postgres_role: str,
) -> None:
    store = SqlUserStore("postgresql://no_such_role:Sup3r-S3cret@127.0.0.1:5432/test")
    try:
        with pytest.raises(UserStoreUnavailable) as caught:
            store.ping()
    finally:
        store.close()
    message = str(caught.value)
    assert "Sup3r-S3cret" not in message
    assert "no_such_role" in message


def test_sqlite_folder_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserStoreUnavailable, match="cannot make the folder"):
        SqlUserStore(f"sqlite:///{blocker / 'sub' / 'users.db'}")


def test_sqlite_path_that_is_a_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UserStoreUnavailable, match="cannot open"):
        SqlUserStore(f"sqlite:///{tmp_path}")


def test_postgres_schemes_get_the_psycopg_driver(postgres_role: str) -> None:
    for scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        store = SqlUserStore(f"{scheme}://{postgres_role}:pw@127.0.0.1:5432/test")
        try:
            assert (
                store.display_url == f"postgresql+psycopg://{postgres_role}:***@127.0.0.1:5432/test"
            )
            assert "pw" not in repr(store).replace("psycopg", "")
            store.ping()  # trust auth: the password is not checked
        finally:
            store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:secret-pw@host/db", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u:secret-pw@host/db", "unsupported database"),
        ("not a url secret-pw", "not a database URL"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_unusable_urls_are_refused(url: str, expected: str) -> None:
    with pytest.raises(DatabaseUrlError, match=expected) as caught:
        SqlUserStore(url)
    assert "secret-pw" not in str(caught.value)


def test_build_user_store_uses_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = build_user_store(settings)
    try:
        store.migrate()
        store.add("alice", "hash-a")
    finally:
        store.close()
    assert (tmp_path / "data" / "users.db").is_file()


def test_build_user_store_reports_a_bad_url_as_a_settings_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="mysql://u:secret-pw@h/db")
    with pytest.raises(SettingsError, match="PRODIO_DATABASE_URL: unsupported database") as caught:
        build_user_store(settings)
    assert "secret-pw" not in str(caught.value)


# -- SQLite specifics ------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "er" / "users.db"


def test_sqlite_makes_the_folder_uses_wal_and_keeps_the_file_private(sqlite_file: Path) -> None:
    store = SqlUserStore(f"sqlite:///{sqlite_file}")
    try:
        store.migrate()
        store.add("alice", "hash-a")
        assert stat.S_IMODE(sqlite_file.stat().st_mode) == 0o600
        with sqlite3.connect(sqlite_file) as check:
            assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()


def test_sqlite_writer_waits_for_the_lock_instead_of_failing(sqlite_file: Path) -> None:
    store = SqlUserStore(f"sqlite:///{sqlite_file}")
    store.migrate()
    blocker = sqlite3.connect(sqlite_file, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    outcome: list[object] = []

    def add() -> None:
        try:
            outcome.append(store.add("alice", "hash-a"))
        except Exception as error:
            outcome.append(error)

    writer = threading.Thread(target=add)
    writer.start()
    writer.join(0.3)  # lets the writer reach the lock; any delay works
    blocker.execute("COMMIT")
    blocker.close()
    writer.join()
    try:
        assert len(outcome) == 1
        assert not isinstance(outcome[0], Exception), outcome[0]
        assert store.get("alice") is not None
    finally:
        store.close()
