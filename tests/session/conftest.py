"""Fixtures for the session store tests.

``store_harness`` is parametrized over every backend: a new backend joins the contract
suite (test_contract.py) by adding one param here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from prodio.session import InMemorySessionStore, RedisSessionStore, SessionStore, SessionTimeouts
from tests.redis_server import RedisServer

# Short, so that the same tests hold for Redis's server-side TTLs in real time.
CONTRACT_TIMEOUTS = SessionTimeouts(idle=0.4, absolute=1.0)
# How long a test sleeps to be sure a timeout has passed.
PAST_IDLE = CONTRACT_TIMEOUTS.idle + 0.1


@dataclass
class StoreHarness:
    """A store under test plus what the contract needs to look behind its back."""

    store: SessionStore
    count_sessions: Callable[[], Awaitable[int]]
    """How many session records the backend holds right now, live or not yet reclaimed."""
    expires_by_itself: bool
    """The backend drops expired sessions on its own, so ``purge_expired`` returns 0."""


async def _memory_harness() -> AsyncIterator[StoreHarness]:
    store = InMemorySessionStore(CONTRACT_TIMEOUTS)

    async def count_sessions() -> int:
        return len(store)

    yield StoreHarness(store, count_sessions, expires_by_itself=False)
    await store.aclose()


async def _redis_harness(
    server: RedisServer, *, local_cache_seconds: float = 0.0
) -> AsyncIterator[StoreHarness]:
    store = RedisSessionStore.from_url(
        server.url,
        CONTRACT_TIMEOUTS,
        socket_timeout=5.0,
        local_cache_seconds=local_cache_seconds,
    )

    async def count_sessions() -> int:
        with server.client() as client:
            return sum(1 for _ in client.scan_iter(match="prodio:s:*"))

    yield StoreHarness(store, count_sessions, expires_by_itself=True)
    await store.aclose()


async def _cached_redis_harness(server: RedisServer) -> AsyncIterator[StoreHarness]:
    """The Redis store with its near cache on (and subscribed): the same contract holds."""
    async for harness in _redis_harness(server, local_cache_seconds=5.0):
        assert isinstance(harness.store, RedisSessionStore)
        assert await harness.store.wait_for_cache(), "the session cache did not come on"
        yield harness


@pytest.fixture(params=["memory", "redis", "redis-cached"])
async def store_harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    if request.param == "memory":
        harness = _memory_harness()
    elif request.param == "redis":
        harness = _redis_harness(request.getfixturevalue("clean_redis"))
    else:
        harness = _cached_redis_harness(request.getfixturevalue("clean_redis"))
    async for value in harness:
        yield value


@pytest.fixture
def store(store_harness: StoreHarness) -> SessionStore:
    return store_harness.store
