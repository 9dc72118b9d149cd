"""Move a stored password's age, the way time would: for temporary-password expiry tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, update

from prodio.users.sql import SqlUserStore, users_table


def backdate_password(store: SqlUserStore, username: str, seconds: float) -> None:
    """Make ``username``'s password look set ``seconds`` ago (``password_changed_at``),
    through a connection of its own, as another process would write it."""
    engine = create_engine(store.display_url)
    try:
        with engine.begin() as connection:
            changed = connection.execute(
                update(users_table)
                .where(users_table.c.username == username)
                .values(password_changed_at=datetime.now(UTC) - timedelta(seconds=seconds))
            ).rowcount
    finally:
        engine.dispose()
    assert changed == 1, f"no user named {username}"
