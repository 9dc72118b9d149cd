"""Real databases for the user tests: SQLite files and schemas of the shared PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from prodio.users import SqlUserStore
from tests.conftest import IN_CI

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_DATABASE = "test"
POSTGRES_ROLES = ("postgres", "root")


@pytest.fixture(scope="session")
def postgres_role() -> str:
    """A role that can log in to the shared test database (trust auth); skip locally and
    fail under CI=true when PostgreSQL is not there."""
    problems = []
    for role in POSTGRES_ROLES:
        try:
            with psycopg.connect(
                host=POSTGRES_HOST,
                port=POSTGRES_PORT,
                dbname=POSTGRES_DATABASE,
                user=role,
                connect_timeout=5,
            ):
                return role
        except psycopg.Error as error:
            problems.append(f"{role}: {str(error).strip()}")
    message = (
        f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE} "
        f"({'; '.join(problems)})"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _admin_connection(role: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        dbname=POSTGRES_DATABASE,
        user=role,
        autocommit=True,
    )


@pytest.fixture
def postgres_url(postgres_role: str) -> Iterator[str]:
    """A URL whose connections work in a fresh schema of their own, dropped afterwards, so
    that tests running in parallel never see each other's tables."""
    schema = f"prodio_test_{secrets.token_hex(8)}"
    with _admin_connection(postgres_role) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield (
            f"postgresql://{postgres_role}@{POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE}"
            f"?options=-csearch_path%3D{schema}"
        )
    finally:
        with _admin_connection(postgres_role) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("users")
        return f"sqlite:///{folder / 'nested' / 'users.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[SqlUserStore]:
    """A migrated store on an empty database of each kind."""
    user_store = SqlUserStore(database_url)
    user_store.migrate()
    try:
        yield user_store
    finally:
        user_store.close()
