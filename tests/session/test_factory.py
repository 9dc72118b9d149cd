"""build_session_store: the backend the settings name, or a clear SettingsError."""

from __future__ import annotations

import os
from typing import Any

import pytest

from prodio.config import Settings, SettingsError
from prodio.session import (
    InMemorySessionStore,
    RedisSessionStore,
    SessionTimeouts,
    build_session_store,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def no_prodio_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read PRODIO_* variables: make sure none from the caller's shell leak in."""
    for name in list(os.environ):
        if name.startswith("PRODIO_"):
            monkeypatch.delenv(name)


async def test_memory_is_the_default() -> None:
    store = build_session_store(_settings(session_idle_timeout=120, session_absolute_timeout=3600))
    assert isinstance(store, InMemorySessionStore)
    assert store.timeouts == SessionTimeouts(idle=120, absolute=3600)
    session = await store.create("alice")
    assert await store.load(session.id) is not None
    await store.aclose()


async def test_redis_backend_talks_to_the_configured_server(clean_redis: RedisServer) -> None:
    store = build_session_store(
        _settings(session_backend="redis", redis_url=clean_redis.url, session_idle_timeout=90)
    )
    try:
        assert isinstance(store, RedisSessionStore)
        assert store.timeouts.idle == 90
        session = await store.create("alice")
        with clean_redis.client() as client:
            assert client.exists(f"prodio:s:{session.id}") == 1
    finally:
        await store.aclose()


def test_building_a_redis_store_does_not_connect() -> None:
    # Nothing listens on port 1; a lazy client only fails when first used (ping at startup).
    store = build_session_store(
        _settings(session_backend="redis", redis_url="redis://127.0.0.1:1/0")
    )
    assert isinstance(store, RedisSessionStore)


@pytest.mark.parametrize(
    "url",
    ["http://:hunter2-pw@localhost:6379", "redis://:hunter2-pw@", "localhost:6379"],
)
def test_an_unusable_redis_url_is_a_settings_error_without_the_password(url: str) -> None:
    with pytest.raises(SettingsError, match="PRODIO_REDIS_URL") as caught:
        build_session_store(_settings(session_backend="redis", redis_url=url))
    assert "hunter2-pw" not in str(caught.value)


def test_redis_without_a_url_is_a_settings_error() -> None:
    # Settings refuse this combination themselves; a hand-built one must still fail clearly.
    settings = Settings.model_construct(session_backend="redis", redis_url=None)
    with pytest.raises(SettingsError, match="PRODIO_REDIS_URL"):
        build_session_store(settings)


def test_an_unknown_backend_is_a_settings_error() -> None:
    settings = Settings.model_construct(session_backend="postgres")
    with pytest.raises(SettingsError, match="PRODIO_SESSION_BACKEND"):
        build_session_store(settings)


def test_inconsistent_timeouts_are_a_settings_error() -> None:
    settings = Settings.model_construct(session_idle_timeout=600, session_absolute_timeout=60)
    with pytest.raises(SettingsError, match="ABSOLUTE_TIMEOUT"):
        build_session_store(settings)
