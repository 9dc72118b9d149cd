"""InMemorySessionStore beyond the contract: exact expiry edges with a fake clock, and the
cost of a purge (it reads only expired sessions, however many live ones there are)."""

from __future__ import annotations

from typing import Any

import pytest

from prodio.session import InMemorySessionStore, SessionTimeouts

pytestmark = pytest.mark.anyio

TIMEOUTS = SessionTimeouts(idle=60, absolute=3600)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingDict(dict[str, Any]):
    """A dict that counts reads of single entries, to measure what a purge looks at."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> InMemorySessionStore:
    return InMemorySessionStore(TIMEOUTS, clock=clock)


async def test_idle_expiry_is_exact(store: InMemorySessionStore, clock: FakeClock) -> None:
    session = await store.create("alice")
    clock.advance(TIMEOUTS.idle - 0.001)
    assert await store.load(session.id, touch=False) is not None
    clock.advance(0.001)
    assert await store.load(session.id, touch=False) is None


async def test_touch_extends_idle_expiry_from_the_touch(
    store: InMemorySessionStore, clock: FakeClock
) -> None:
    session = await store.create("alice")
    clock.advance(50)
    touched = await store.load(session.id)
    assert touched is not None
    assert touched.last_seen == clock.now
    assert touched.idle_expires_at == clock.now + TIMEOUTS.idle
    clock.advance(TIMEOUTS.idle - 0.001)
    assert await store.load(session.id) is not None


async def test_absolute_expiry_is_exact_for_a_busy_session(
    store: InMemorySessionStore, clock: FakeClock
) -> None:
    session = await store.create("alice")
    while clock.now + 30 < session.absolute_expires_at:
        clock.advance(30)
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.absolute_expires_at == session.absolute_expires_at
    clock.now = session.absolute_expires_at - 0.001
    assert await store.load(session.id) is not None
    clock.now = session.absolute_expires_at
    assert await store.load(session.id) is None


async def test_expired_session_is_dropped_when_read(
    store: InMemorySessionStore, clock: FakeClock
) -> None:
    session = await store.create("alice")
    clock.advance(TIMEOUTS.idle)
    assert len(store) == 1
    assert await store.load(session.id) is None
    assert len(store) == 0


async def test_purge_respects_the_limit(store: InMemorySessionStore, clock: FakeClock) -> None:
    for _ in range(10):
        await store.create("alice")
    clock.advance(TIMEOUTS.idle)
    live = await store.create("bob")

    assert await store.purge_expired(limit=3) == 3
    assert len(store) == 8
    assert await store.purge_expired(limit=100) == 7
    assert len(store) == 1
    assert await store.load(live.id) is not None


async def test_purge_reads_only_the_idle_expired_sessions(
    store: InMemorySessionStore, clock: FakeClock
) -> None:
    expired = [await store.create("old") for _ in range(10)]
    clock.advance(30)
    live = [await store.create(f"user{i}") for i in range(100_000)]
    clock.advance(TIMEOUTS.idle - 30)  # the first 10 are now idle for exactly the timeout
    counting = CountingDict(store._entries)
    store._entries = counting

    assert await store.purge_expired() == 10

    # Each expired one is read once, plus the first live one in each of the two orders.
    assert counting.reads <= len(expired) + 2
    assert len(store) == len(live)
    assert await store.load(live[0].id) is not None


async def test_purge_reads_only_the_absolute_expired_sessions(
    store: InMemorySessionStore, clock: FakeClock
) -> None:
    old = [await store.create("old") for _ in range(10)]
    # Kept busy all along, so idleness never ends them.
    while clock.now + 50 <= old[0].absolute_expires_at - 50:
        clock.advance(50)
        for session in old:
            assert await store.load(session.id) is not None
    assert clock.now == old[0].absolute_expires_at - 50
    live = [await store.create(f"user{i}") for i in range(100_000)]
    # The old sessions were used a moment ago, so they are the freshest by last use: only
    # their age can find them.
    clock.advance(30)
    for session in old:
        assert await store.load(session.id) is not None
    clock.advance(20)
    counting = CountingDict(store._entries)
    store._entries = counting

    assert await store.purge_expired() == 10

    assert counting.reads <= len(old) + 2
    assert len(store) == len(live)
    for session in old:
        assert await store.load(session.id) is None


async def test_delete_user_sessions_then_purge(
    store: InMemorySessionStore, clock: FakeClock
) -> None:
    await store.create("alice")
    await store.create("alice")
    clock.advance(TIMEOUTS.idle)
    await store.create("alice")
    assert await store.delete_user_sessions("alice") == 1
    assert len(store) == 0
    assert await store.purge_expired() == 0


async def test_aclose_forgets_everything(store: InMemorySessionStore) -> None:
    session = await store.create("alice")
    await store.aclose()
    assert len(store) == 0
    assert await store.load(session.id) is None
