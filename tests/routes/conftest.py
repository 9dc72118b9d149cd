"""Fixtures of the route tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apptest import AppUnderTest, app_with_users


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AppUnderTest]:
    """The whole app, with the accounts alice and bob."""
    async with app_with_users(tmp_path) as app_env:
        yield app_env
