"""Fixtures for the upload registry tests: a real redis-server for the Redis backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One test Redis for the module; a test that breaks a server starts its own."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The module's test Redis, emptied for this test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server
