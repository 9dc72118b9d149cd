"""Fixtures of the middleware tests: the upload registries UploadOwnershipMiddleware is
tried with (test_uploads.py, test_gradio_sessions.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from prodio.uploads import InMemoryUploadRegistry, RedisUploadRegistry
from prodio.uploads.base import UploadRegistry
from tests.redis_server import free_port


@pytest.fixture
def registry() -> InMemoryUploadRegistry:
    return InMemoryUploadRegistry(60)


@pytest.fixture
async def unreachable() -> AsyncIterator[UploadRegistry]:
    """A Redis registry on a port where nothing listens: every call fails for real."""
    client = Redis(
        port=free_port(),
        socket_connect_timeout=0.5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    registry = RedisUploadRegistry(client, 60, owns_client=True)
    yield registry
    await registry.aclose()
