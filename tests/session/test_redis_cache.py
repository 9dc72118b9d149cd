"""The Redis store's near cache: fewer round trips, never a stale answer.

The contract suite (test_contract.py, ``redis-cached``) holds the cached store to every rule
of the uncached one. These tests cover what only a cache can get wrong: another instance's
changes, races between a load and an invalidation, a broken subscription, and the round
trips it saves, counted on a real Redis server.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from prodio.session import (
    RedisSessionStore,
    Session,
    SessionChanged,
    SessionStoreUnavailable,
    SessionTimeouts,
    redis_cache,
)
from prodio.session.redis_cache import DELETED, LocalSessionCache, parse_invalidation
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TIMEOUTS = SessionTimeouts(idle=60.0, absolute=600.0)
# How long another instance may take to hear of a change: the message crosses a local
# Redis in well under a millisecond; this only bounds a test that would otherwise hang.
HEAR_WITHIN = 2.0


def _session(session_id: str = "s" * 43, last_seen: float | None = None) -> Session:
    now = time.time() if last_seen is None else last_seen
    return Session(session_id, "alice", now, now, now + 60, now + 600, {})


# --- the cache on its own -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache(clock: Clock | None = None, **options: float) -> LocalSessionCache:
    cache = LocalSessionCache(max_age=options.get("max_age", 5.0), clock=clock or Clock())
    cache.reset(enabled=True)
    return cache


def test_a_load_older_than_an_announced_change_is_not_kept() -> None:
    cache = _cache()
    session = _session()
    started_in = cache.generation
    # The message for version 7 arrives while a load that read version 6 is on its way.
    cache.invalidate(session.id, 7)
    cache.put(session, {"k": '"old"'}, 6, started_in)
    assert cache.get(session.id) == (None, False)
    cache.put(session, {"k": '"new"'}, 7, started_in)
    hit, known = cache.get(session.id)
    assert known
    assert hit is not None
    assert hit.data == {"k": "new"}


def test_a_load_begun_before_a_reset_is_not_kept() -> None:
    cache = _cache()
    started_in = cache.generation
    cache.reset(enabled=True)  # the subscription broke and came back: messages may be lost
    cache.put(_session(), {}, 1, started_in)
    assert cache.get(_session().id) == (None, False)


def test_a_deleted_session_stays_deleted() -> None:
    cache = _cache()
    session = _session()
    cache.put(session, {}, 3, cache.generation)
    cache.invalidate(session.id, DELETED)
    cache.put(session, {}, 4, cache.generation)  # a late load of a live version
    cache.invalidate(session.id, 9)
    assert cache.get(session.id) == (None, True)


def test_entries_are_used_for_at_most_max_age() -> None:
    clock = Clock()
    cache = _cache(clock, max_age=5.0)
    cache.put(_session(), {}, 1, cache.generation)
    clock.now += 4.9
    assert cache.get(_session().id)[1]
    clock.now += 0.1
    assert cache.get(_session().id) == (None, False)


def test_an_own_update_applies_only_on_top_of_the_version_before_it() -> None:
    cache = _cache()
    session = _session()
    cache.put(session, {"a": "1", "b": "2"}, 4, cache.generation)
    cache.updated(session.id, 5, {"a": "10"}, ("b",))
    hit, _ = cache.get(session.id)
    assert hit is not None
    assert hit.data == {"a": 10}
    # Another instance's update (6) came in between: version 7 cannot be built locally.
    cache.updated(session.id, 7, {"a": "11"}, ())
    assert cache.get(session.id) == (None, False)


def test_an_own_update_announced_before_its_reply_still_applies() -> None:
    # The update's announcement (on the subscription) usually arrives before the update's
    # reply (on another connection): version 5 is announced while the entry holds 4.
    cache = _cache()
    session = _session()
    cache.put(session, {"a": "1", "b": "2"}, 4, cache.generation)
    cache.invalidate(session.id, 5)
    assert cache.get(session.id) == (None, False), "version 4's data served as version 5"
    cache.updated(session.id, 5, {"a": "10"}, ("b",))
    hit, known = cache.get(session.id)
    assert known
    assert hit is not None
    assert (hit.version, hit.data) == (5, {"a": 10})


def test_another_instances_announced_update_is_never_served() -> None:
    cache = _cache()
    session = _session()
    cache.put(session, {"a": "1"}, 4, cache.generation)
    # Another instance made 5; this instance's own update then made 6 on top of it: the
    # entry's data is 4's, and 5's changes are unknown here.
    cache.invalidate(session.id, 5)
    cache.updated(session.id, 6, {"b": "2"}, ())
    assert cache.get(session.id) == (None, False)
    # Announced twice ahead (5, then 6): nothing here can be rebuilt either.
    cache.put(session, {"a": "1"}, 7, cache.generation)
    cache.invalidate(session.id, 8)
    cache.invalidate(session.id, 9)
    cache.updated(session.id, 9, {"b": "2"}, ())
    assert cache.get(session.id) == (None, False)
    # A load of the announced version replaces the entry that is behind.
    cache.put(session, {"a": "3"}, 9, cache.generation)
    hit, _ = cache.get(session.id)
    assert hit is not None
    assert (hit.version, hit.data) == (9, {"a": 3})


def test_every_get_returns_its_own_copy_of_the_data() -> None:
    cache = _cache()
    session = _session()
    cache.put(session, {"list": json.dumps([1, 2])}, 1, cache.generation)
    first, _ = cache.get(session.id)
    assert first is not None
    first.data["list"].append(3)
    second, _ = cache.get(session.id)
    assert second is not None
    assert second.data["list"] == [1, 2]


def test_a_disabled_cache_answers_nothing_and_keeps_nothing() -> None:
    cache = _cache()
    cache.reset(enabled=False)
    cache.put(_session(), {}, 1, cache.generation)
    cache.invalidate(_session().id, DELETED)
    assert cache.get(_session().id) == (None, False)
    assert len(cache) == 0


def test_the_cache_is_bounded() -> None:
    cache = LocalSessionCache(max_age=5.0, max_entries=3)
    cache.reset(enabled=True)
    for number in range(5):
        cache.put(_session(f"{number:043d}"), {}, 1, cache.generation)
    assert len(cache) == 3
    assert cache.get(f"{0:043d}") == (None, False)
    assert cache.get(f"{4:043d}")[1]


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        ("abc 7", ("abc", 7)),
        (b"abc -", ("abc", DELETED)),
        ("abc", None),
        ("abc x", None),
        ("abc -1", None),
        (" 7", None),
        (None, None),
        (7, None),
    ],
)
def test_channel_messages_are_parsed_strictly(data: object, parsed: object) -> None:
    assert parse_invalidation(data) == parsed


def test_bad_cache_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LocalSessionCache(max_age=0)
    with pytest.raises(ValueError, match="negative"):
        RedisSessionStore.from_url("redis://localhost:1/0", TIMEOUTS, local_cache_seconds=-1)


# --- two instances on one real Redis --------------------------------------------------------


def _evalsha_calls(server: RedisServer) -> int:
    with server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _cached_store(server: RedisServer) -> RedisSessionStore:
    store = RedisSessionStore.from_url(server.url, TIMEOUTS, local_cache_seconds=5.0)
    assert await store.wait_for_cache(), "the cache did not come on"
    return store


@pytest.fixture
async def two_instances(
    clean_redis: RedisServer,
) -> AsyncIterator[tuple[RedisSessionStore, RedisSessionStore]]:
    first, second = await _cached_store(clean_redis), await _cached_store(clean_redis)
    yield first, second
    await first.aclose()
    await second.aclose()


async def _eventually(check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until ``check`` held; fails after HEAR_WITHIN."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > HEAR_WITHIN:
            pytest.fail(f"not seen within {HEAR_WITHIN} s")
        await anyio.sleep(0.001)
    return time.monotonic() - started


async def test_a_cached_session_costs_no_round_trip(
    clean_redis: RedisServer, two_instances: tuple[RedisSessionStore, RedisSessionStore]
) -> None:
    store, _ = two_instances
    session = await store.create("alice")
    before = _evalsha_calls(clean_redis)
    for _ in range(200):
        assert await store.load(session.id) is not None
    assert _evalsha_calls(clean_redis) - before == 0


async def test_a_write_is_read_back_through_another_instance_at_once(
    two_instances: tuple[RedisSessionStore, RedisSessionStore],
) -> None:
    # A browser saves through one instance and reloads through the other, before the
    # invalidation message can have arrived there: the handler's read must see the write.
    writer, reader = two_instances
    session = await writer.create("alice", {"note": "old"})
    assert await reader.load(session.id) is not None  # cached on the reader
    for number in range(20):
        assert await writer.update(session.id, {"note": f"new {number}"})
        fresh = await reader.load(session.id, touch=False)
        assert fresh is not None
        assert fresh.data == {"note": f"new {number}"}


async def test_another_instances_update_is_seen(
    two_instances: tuple[RedisSessionStore, RedisSessionStore],
) -> None:
    writer, reader = two_instances
    session = await writer.create("alice", {"note": "first"})
    loaded = await reader.load(session.id)
    assert loaded is not None
    assert loaded.data == {"note": "first"}

    assert await writer.update(session.id, {"note": "second"})

    async def reader_sees_it() -> bool:
        # A touching load: the one the cache answers.
        current = await reader.load(session.id)
        return current is not None and current.data == {"note": "second"}

    await _eventually(reader_sees_it)


async def test_an_own_update_moves_the_cached_version_with_the_data(
    clean_redis: RedisServer, two_instances: tuple[RedisSessionStore, RedisSessionStore]
) -> None:
    store, _ = two_instances
    warm = await store.create("warm")
    assert await store.update(warm.id, {"k": 1})  # the script loaded once, before counting
    session = await store.create("alice", {"n": 0})
    cached = await store.load(session.id)
    assert cached is not None
    assert cached.version == 1
    before = _evalsha_calls(clean_redis)
    for number in range(1, 4):
        assert await store.update(session.id, {"n": number}, expected_version=cached.version)
        # Written through: the cache answers with the new data at the new version...
        cached = await store.load(session.id)
        assert cached is not None
        assert (cached.version, dict(cached.data)) == (1 + number, {"n": number})
    # ...with no round trip but the three updates.
    assert _evalsha_calls(clean_redis) - before == 3
    fresh = await store.load(session.id, touch=False)
    assert fresh is not None
    assert (fresh.version, dict(fresh.data)) == (4, {"n": 3})


async def test_a_stale_cached_version_fails_compare_and_set_and_is_never_served_again(
    clean_redis: RedisServer, two_instances: tuple[RedisSessionStore, RedisSessionStore]
) -> None:
    writer, reader = two_instances
    session = await writer.create("alice", {"n": 0})
    stale = await reader.load(session.id)  # cached on the reader, version 1
    assert stale is not None
    assert stale.version == 1
    # A write through the other instance whose message the reader has not heard (written
    # behind the channel's back, so that no message can arrive in time).
    with clean_redis.client() as client:
        client.hset(f"prodio:s:{session.id}", mapping={"d:n": "5", "v": "2"})
    cached = await reader.load(session.id)
    assert cached is not None
    assert cached.version == 1, "the test needs the reader's cache to be behind"

    with pytest.raises(SessionChanged):
        await reader.update(session.id, {"n": 1}, expected_version=stale.version)

    # Nothing changed in Redis, and the reader never answers with version 1 again: neither
    # the per-request (touching, cached) load nor a fresh one.
    touched = await reader.load(session.id)
    assert touched is not None
    assert (touched.version, dict(touched.data)) == (2, {"n": 5})
    fresh = await reader.load(session.id, touch=False)
    assert fresh is not None
    assert (fresh.version, dict(fresh.data)) == (2, {"n": 5})
    assert await reader.update(session.id, {"n": 6}, expected_version=fresh.version)


async def test_a_compare_and_set_after_another_instances_write_raises(
    two_instances: tuple[RedisSessionStore, RedisSessionStore],
) -> None:
    first, second = two_instances
    session = await first.create("alice", {"n": 0})
    on_second = await second.load(session.id)
    assert on_second is not None
    assert on_second.version == 1

    assert await first.update(session.id, {"n": 1}, expected_version=1)

    with pytest.raises(SessionChanged):
        await second.update(session.id, {"n": 1}, expected_version=on_second.version)
    fresh = await second.load(session.id, touch=False)
    assert fresh is not None
    assert (fresh.version, dict(fresh.data)) == (2, {"n": 1})
    # Read again, the change applies on top of the other instance's.
    assert await second.update(session.id, {"n": 2}, expected_version=fresh.version)
    now = await first.load(session.id, touch=False)
    assert now is not None
    assert (now.version, dict(now.data)) == (3, {"n": 2})


@pytest.mark.parametrize("how", ["logout", "logout everywhere"])
async def test_a_revocation_on_one_instance_ends_the_session_on_the_other(
    two_instances: tuple[RedisSessionStore, RedisSessionStore], how: str
) -> None:
    revoker, other = two_instances
    session = await revoker.create("alice")
    assert await other.load(session.id) is not None  # cached there now
    if how == "logout":
        assert await revoker.delete(session.id)
    else:
        assert await revoker.delete_user_sessions("alice") == 1
    # On the instance that revoked it: at once, without waiting for the message.
    assert await revoker.load(session.id) is None

    async def gone_on_the_other() -> bool:
        return await other.load(session.id) is None

    await _eventually(gone_on_the_other)


async def test_listing_a_users_sessions_asks_redis_not_the_cache(
    clean_redis: RedisServer, two_instances: tuple[RedisSessionStore, RedisSessionStore]
) -> None:
    here, there = two_instances
    gone = await here.create("alice")
    assert await here.load(gone.id) is not None  # cached here now
    # Removed behind every cache's back (no message): only Redis knows it is gone.
    with clean_redis.client() as client:
        assert client.delete(f"prodio:s:{gone.id}") == 1
    # The per-request check still answers from the cache here, as designed...
    assert await here.load(gone.id) is not None
    # Made on another instance a moment ago: in no cache here.
    made_there = await there.create("alice")

    # ...but the list is Redis's.
    listed = await here.list_user_sessions("alice")

    assert [session.id for session in listed] == [made_there.id]


async def test_a_broken_subscription_turns_the_cache_off_until_it_is_back(
    clean_redis: RedisServer, two_instances: tuple[RedisSessionStore, RedisSessionStore]
) -> None:
    writer, reader = two_instances
    session = await writer.create("alice", {"note": "first"})
    assert await reader.load(session.id) is not None
    with clean_redis.client() as client:
        killed = client.client_kill_filter(_type="pubsub")
    assert killed == 2
    # Changes made while an instance may not hear them must still be seen there.
    assert await writer.update(session.id, {"note": "while deaf"})

    async def reader_sees_it() -> bool:
        # A touching load: the one the cache answers.
        current = await reader.load(session.id)
        return current is not None and current.data == {"note": "while deaf"}

    await _eventually(reader_sees_it)
    assert await reader.wait_for_cache(), "the cache did not come back on"
    before = _evalsha_calls(clean_redis)
    assert await reader.load(session.id) is not None
    assert await reader.load(session.id) is not None
    assert _evalsha_calls(clean_redis) - before <= 1


@pytest.fixture
def quick_liveness(monkeypatch: pytest.MonkeyPatch) -> float:
    """A ping after 50 ms of silence, 500 ms unanswered a break; returns the time to notice."""
    monkeypatch.setattr(redis_cache, "PING_INTERVAL", 0.05)
    monkeypatch.setattr(redis_cache, "SILENCE_LIMIT", 0.5)
    return 0.5 + 2 * 0.05


async def test_a_quiet_channel_keeps_the_cache_on(
    clean_redis: RedisServer, quick_liveness: float
) -> None:
    # The pings' answers must count as answers: under RESP3 redis-py hands the answer to a
    # bare PING over as a message of type "P", and a listener that waited for "pong" alone
    # emptied and switched off the cache every silence limit (every ~4 s in production).
    store = await _cached_store(clean_redis)
    try:
        session = await store.create("alice")
        assert await store.load(session.id) is not None
        before = _evalsha_calls(clean_redis)
        started = time.monotonic()
        while time.monotonic() - started < 4 * quick_liveness:
            await anyio.sleep(0.02)
            assert await store.load(session.id) is not None
        assert _evalsha_calls(clean_redis) - before == 0, "the cache went off on a quiet channel"
    finally:
        await store.aclose()


async def test_a_hung_server_turns_the_cache_off(tmp_path: Path, quick_liveness: float) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = RedisSessionStore.from_url(
            server.url, TIMEOUTS, socket_timeout=0.5, local_cache_seconds=5.0
        )
        try:
            assert await store.wait_for_cache()
            session = await store.create("alice")
            assert await store.load(session.id) is not None
            server.pause()  # connections stay open; nothing answers, not even the pings
            try:
                # Soon the cache is off and a load asks the hung server, instead of answering
                # from memory for as long as the server hangs.
                deadline = time.monotonic() + quick_liveness + 5.0
                while True:
                    try:
                        with anyio.fail_after(5):
                            await store.load(session.id)
                    except SessionStoreUnavailable:
                        break
                    assert time.monotonic() < deadline, "the cache kept answering for a hung server"
                    await anyio.sleep(0.05)
            finally:
                server.resume()
            assert await store.load(session.id) is not None
        finally:
            await store.aclose()


async def test_garbage_on_the_channel_changes_nothing(
    clean_redis: RedisServer, two_instances: tuple[RedisSessionStore, RedisSessionStore]
) -> None:
    store, _ = two_instances
    session = await store.create("alice")
    assert await store.load(session.id) is not None
    with clean_redis.client() as client:
        for junk in ("", "no-version", f"{session.id} x", "\x00\xff", "a b c"):
            client.publish("prodio:invalidate", junk)
        client.publish("prodio:invalidate", f"{session.id} -")
    # The well-formed message behind the junk was still heard: the listener survived.
    assert await _eventually(lambda: _is_gone(store, session.id)) < HEAR_WITHIN


async def _is_gone(store: RedisSessionStore, session_id: str) -> bool:
    return await store.load(session_id) is None


async def test_cached_activity_still_moves_the_idle_expiry_in_redis(
    clean_redis: RedisServer,
) -> None:
    short = SessionTimeouts(idle=2.0, absolute=60.0)  # touches at most every 0.1 s
    store = RedisSessionStore.from_url(clean_redis.url, short, local_cache_seconds=5.0)
    try:
        assert await store.wait_for_cache()
        session = await store.create("alice")
        # Busy for longer than the idle timeout, through the cache.
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            assert await store.load(session.id) is not None
            await anyio.sleep(0.05)
        with clean_redis.client() as client:
            ttl_ms = client.pttl(f"prodio:s:{session.id}")
        assert ttl_ms > 1_500, "Redis would expire a session that is in use"
    finally:
        await store.aclose()


async def test_shutdown_does_not_hang_while_listening(clean_redis: RedisServer) -> None:
    store = await _cached_store(clean_redis)
    with anyio.fail_after(5):
        await store.aclose()
