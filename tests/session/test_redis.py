"""RedisSessionStore beyond the contract: TTLs on every key, concurrency, several app
instances, round trips, and a Redis that dies, comes back or hangs.

Everything runs against real ``redis-server`` processes started by these tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection

from prodio.session import (
    RedisSessionStore,
    SessionChanged,
    SessionStoreUnavailable,
    SessionTimeouts,
)
from prodio.session.redis import check_redis_url, redacted_url
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TIMEOUTS = SessionTimeouts(idle=30, absolute=60)
SOCKET_TIMEOUT = 0.5
# Guards against a hang only: a failure must come within a few socket timeouts.
HANG_GUARD = SOCKET_TIMEOUT * 4 + 2


class CountingConnection(Connection):
    """A connection that counts the requests it sends: one per round trip."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def store(clean_redis: RedisServer) -> AsyncIterator[RedisSessionStore]:
    store = RedisSessionStore.from_url(clean_redis.url, TIMEOUTS, socket_timeout=5.0)
    yield store
    await store.aclose()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server this test alone may kill, pause and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _all_keys_ttl_ms(server: RedisServer) -> dict[str, int]:
    with server.client() as client:
        return {key: client.pttl(key) for key in client.scan_iter()}


def _assert_every_key_expires(server: RedisServer) -> dict[str, int]:
    ttls = _all_keys_ttl_ms(server)
    forever = [key for key, ttl in ttls.items() if ttl < 0]
    assert not forever, f"keys without a TTL: {forever}"
    return ttls


# --- keys and TTLs ----------------------------------------------------------------------


async def test_every_key_has_a_ttl_after_every_operation(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    alice = await store.create("alice", {"a": 1})
    ttls = _assert_every_key_expires(clean_redis)
    assert set(ttls) == {f"prodio:s:{alice.id}", "prodio:u:alice"}

    second = await store.create("alice")
    _assert_every_key_expires(clean_redis)
    await store.load(alice.id)
    _assert_every_key_expires(clean_redis)
    await store.load(alice.id, touch=False)
    _assert_every_key_expires(clean_redis)
    await store.update(alice.id, {"b": [2]}, remove=["a"])
    _assert_every_key_expires(clean_redis)
    await store.delete(alice.id)
    ttls = _assert_every_key_expires(clean_redis)
    assert set(ttls) == {f"prodio:s:{second.id}", "prodio:u:alice"}
    await store.update(alice.id, {"c": 3})  # a dead session: writes nothing
    _assert_every_key_expires(clean_redis)
    await store.list_user_sessions("alice")
    _assert_every_key_expires(clean_redis)
    await store.create("bob")
    await store.delete_user_sessions("alice")
    ttls = _assert_every_key_expires(clean_redis)
    assert {key.rsplit(":", 1)[0] for key in ttls} == {"prodio:s", "prodio:u"}
    assert "prodio:u:alice" not in ttls


async def test_listing_forgets_the_ids_of_dead_sessions(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    expired = await store.create("alice")
    stale = await store.create("alice")
    live = await store.create("alice", {"k": 1})
    with clean_redis.client() as client:
        # One expired by Redis (only its id is left in the user's set), one whose idle
        # timeout has passed a moment before Redis's TTL would fire.
        client.delete(f"prodio:s:{expired.id}")
        long_ago = str(int((time.time() - TIMEOUTS.idle - 5) * 1_000_000))
        client.hset(f"prodio:s:{stale.id}", "last_seen", long_ago)
        before = client.hget(f"prodio:s:{live.id}", "last_seen")

    listed = await store.list_user_sessions("alice")

    assert [session.id for session in listed] == [live.id]
    assert dict(listed[0].data) == {"k": 1}
    with clean_redis.client() as client:
        assert client.smembers("prodio:u:alice") == {live.id}
        assert not client.exists(f"prodio:s:{stale.id}")
        # Looked at, not touched.
        assert client.hget(f"prodio:s:{live.id}", "last_seen") == before


async def test_a_record_of_another_user_in_the_set_is_never_listed(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    bobs = await store.create("bob")
    alices = await store.create("alice")
    with clean_redis.client() as client:
        # A corrupt set (written by hand, or by something else sharing the prefix).
        client.sadd("prodio:u:alice", bobs.id)
    assert [session.id for session in await store.list_user_sessions("alice")] == [alices.id]
    assert await store.load(bobs.id) is not None


async def test_session_key_ttl_is_the_idle_timeout_and_user_set_outlives_it(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    session = await store.create("alice")
    ttls = _all_keys_ttl_ms(clean_redis)
    assert TIMEOUTS.idle * 1000 - 1000 < ttls[f"prodio:s:{session.id}"] <= TIMEOUTS.idle * 1000
    assert ttls["prodio:u:alice"] > TIMEOUTS.absolute * 1000 - 1000


async def test_ttl_never_exceeds_what_is_left_of_the_absolute_timeout(
    clean_redis: RedisServer,
) -> None:
    timeouts = SessionTimeouts(idle=0.5, absolute=0.6)
    store = RedisSessionStore.from_url(clean_redis.url, timeouts)
    try:
        session = await store.create("alice")
        await anyio.sleep(0.3)
        assert await store.load(session.id) is not None  # a touch: idle would give 500 ms
        checked_at = time.time()
        ttl_ms = _all_keys_ttl_ms(clean_redis)[f"prodio:s:{session.id}"]
    finally:
        await store.aclose()
    left_ms = (session.absolute_expires_at - checked_at) * 1000
    assert 0 < ttl_ms <= left_ms + 1


async def test_a_users_set_forgets_sessions_that_expired_by_themselves(
    clean_redis: RedisServer,
) -> None:
    short = RedisSessionStore.from_url(clean_redis.url, SessionTimeouts(idle=0.2, absolute=1))
    try:
        for _ in range(5):
            await short.create("alice")
        await anyio.sleep(0.3)
        latest = await short.create("alice")
    finally:
        await short.aclose()
    with clean_redis.client() as client:
        assert client.smembers("prodio:u:alice") == {latest.id}


async def test_logout_everywhere_still_works_after_the_timeouts_were_raised(
    clean_redis: RedisServer,
) -> None:
    before = RedisSessionStore.from_url(clean_redis.url, SessionTimeouts(idle=0.3, absolute=0.3))
    after = RedisSessionStore.from_url(clean_redis.url, SessionTimeouts(idle=5, absolute=10))
    try:
        session = await before.create("alice")  # its user set was given 0.3 s
        assert await after.load(session.id) is not None  # now it may live 10 s
        await anyio.sleep(0.4)
        assert await after.load(session.id) is not None

        assert await after.delete_user_sessions("alice") == 1

        assert await after.load(session.id) is None
    finally:
        await before.aclose()
        await after.aclose()
    _assert_every_key_expires(clean_redis)


async def test_key_prefix_separates_apps_sharing_one_redis(clean_redis: RedisServer) -> None:
    first = RedisSessionStore.from_url(clean_redis.url, TIMEOUTS, key_prefix="app1:")
    second = RedisSessionStore.from_url(clean_redis.url, TIMEOUTS, key_prefix="app2:")
    try:
        session = await first.create("alice")
        assert await second.load(session.id) is None
        assert await second.delete_user_sessions("alice") == 0
        assert await first.load(session.id) is not None
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_malformed_record_is_no_session(
    clean_redis: RedisServer, store: RedisSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = await store.create("alice")
    with clean_redis.client() as client:
        client.hdel(f"prodio:s:{session.id}", "username")
    assert await store.load(session.id) is None
    assert "malformed" in caplog.text
    assert session.id not in caplog.text


async def test_a_record_without_a_version_counts_as_version_zero(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    session = await store.create("alice", {"n": 0})
    with clean_redis.client() as client:
        client.hdel(f"prodio:s:{session.id}", "v")  # as written before versions existed
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.version == 0
    with pytest.raises(SessionChanged):
        await store.update(session.id, {"n": 1}, expected_version=1)
    assert await store.update(session.id, {"n": 1}, expected_version=0)
    after = await store.load(session.id, touch=False)
    assert after is not None
    assert (after.version, dict(after.data)) == (1, {"n": 1})


async def test_a_key_of_another_type_is_an_error_not_a_crash(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    session_id = "A" * 43
    with clean_redis.client() as client:
        client.set(f"prodio:s:{session_id}", "not a hash", ex=60)
    with pytest.raises(SessionStoreUnavailable):
        await store.load(session_id)


# --- concurrency and several instances --------------------------------------------------


async def test_concurrent_updates_of_different_keys_all_survive(store: RedisSessionStore) -> None:
    session = await store.create("alice", {"base": 0})

    async def set_key(i: int) -> None:
        assert await store.update(session.id, {f"key{i}": i})

    async with anyio.create_task_group() as tasks:
        for i in range(50):
            tasks.start_soon(set_key, i)

    loaded = await store.load(session.id)
    assert loaded is not None
    assert dict(loaded.data) == {"base": 0, **{f"key{i}": i for i in range(50)}}


async def test_updates_racing_a_logout_cannot_resurrect_the_session(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    session = await store.create("alice", {"k": 0})
    outcomes: list[bool] = []

    async def update(i: int) -> None:
        outcomes.append(await store.update(session.id, {f"key{i}": i}))

    async with anyio.create_task_group() as tasks:
        for i in range(50):
            tasks.start_soon(update, i)
            if i == 25:
                tasks.start_soon(store.delete, session.id)
    # A slow request still holding the session it read before the logout:
    assert await store.update(session.id, {"late": True}) is False

    assert await store.load(session.id) is None
    assert _all_keys_ttl_ms(clean_redis) == {}
    assert len(outcomes) == 50


async def test_logout_everywhere_across_two_app_instances(clean_redis: RedisServer) -> None:
    instance_a = RedisSessionStore.from_url(clean_redis.url, TIMEOUTS)
    instance_b = RedisSessionStore.from_url(clean_redis.url, TIMEOUTS)
    try:
        on_a = [await instance_a.create("alice") for _ in range(2)]
        on_b = [await instance_b.create("alice") for _ in range(3)]
        bob = await instance_a.create("bob")
        # Each instance sees the sessions the other made.
        assert await instance_b.load(on_a[0].id) is not None
        assert await instance_a.load(on_b[0].id) is not None

        assert await instance_b.delete_user_sessions("alice") == 5

        for session in on_a + on_b:
            assert await instance_a.load(session.id) is None
            assert await instance_b.load(session.id) is None
        assert await instance_b.load(bob.id) is not None
    finally:
        await instance_a.aclose()
        await instance_b.aclose()


# --- round trips ------------------------------------------------------------------------


@pytest.fixture
async def counting_store(clean_redis: RedisServer) -> AsyncIterator[RedisSessionStore]:
    pool = BlockingConnectionPool.from_url(
        clean_redis.url, connection_class=CountingConnection, decode_responses=True
    )
    store = RedisSessionStore(Redis.from_pool(pool), TIMEOUTS)
    yield store
    await store.aclose()


async def _round_trips(operation: Callable[[], Awaitable[object]]) -> int:
    before = CountingConnection.sent
    await operation()
    return CountingConnection.sent - before


async def test_each_operation_is_one_round_trip(counting_store: RedisSessionStore) -> None:
    store = counting_store
    # Warm up: the first connection's handshake, and each script loaded once.
    warm = await store.create("warm")
    await store.load(warm.id)
    await store.update(warm.id, {"k": 1})
    await store.delete(warm.id)
    await store.delete_user_sessions("warm")
    await store.list_user_sessions("warm")

    session = await store.create("alice")
    assert await _round_trips(lambda: store.create("alice", {"k": 1})) == 1
    assert await _round_trips(lambda: store.load(session.id)) == 1
    assert await _round_trips(lambda: store.load(session.id, touch=False)) == 1
    assert await _round_trips(lambda: store.update(session.id, {"a": 1}, remove=["b"])) == 1
    version = (await store.load(session.id, touch=False)).version  # type: ignore[union-attr]
    assert (
        await _round_trips(lambda: store.update(session.id, {"a": 2}, expected_version=version))
        == 1
    )

    async def conflicting_update() -> None:
        with pytest.raises(SessionChanged):
            await store.update(session.id, {"a": 3}, expected_version=version)

    assert await _round_trips(conflicting_update) == 1
    assert await _round_trips(lambda: store.delete(session.id)) == 1
    for number in range(5):
        await store.create("bob", {"n": number})
    assert await _round_trips(lambda: store.list_user_sessions("bob")) == 1
    assert await _round_trips(lambda: store.delete_user_sessions("alice")) == 1
    assert await _round_trips(store.purge_expired) == 0


async def test_malformed_ids_never_reach_redis(counting_store: RedisSessionStore) -> None:
    store = counting_store
    await store.ping()
    for bad in ["", "*", "prodio:u:alice", "a" * 10_000, "\x00", "x y"]:
        assert await _round_trips(lambda bad=bad: store.load(bad)) == 0  # type: ignore[misc]
        assert await _round_trips(lambda bad=bad: store.update(bad, {"k": 1})) == 0  # type: ignore[misc]
        assert await _round_trips(lambda bad=bad: store.delete(bad)) == 0  # type: ignore[misc]


async def test_scripts_come_back_after_the_server_forgets_them(
    clean_redis: RedisServer, store: RedisSessionStore
) -> None:
    session = await store.create("alice")
    with clean_redis.client() as client:
        client.script_flush()
    assert await store.load(session.id) is not None
    assert await store.update(session.id, {"k": 1})


# --- a Redis that fails -----------------------------------------------------------------


def _every_operation(
    store: RedisSessionStore, session_id: str
) -> list[Callable[[], Awaitable[Any]]]:
    return [
        store.ping,
        lambda: store.create("alice"),
        lambda: store.load(session_id),
        lambda: store.load(session_id, touch=False),
        lambda: store.update(session_id, {"k": 1}),
        lambda: store.delete(session_id),
        lambda: store.delete_user_sessions("alice"),
        lambda: store.list_user_sessions("alice"),
    ]


async def test_a_killed_server_makes_every_operation_unavailable_then_recovers(
    own_server: RedisServer,
) -> None:
    store = RedisSessionStore.from_url(
        own_server.url,
        TIMEOUTS,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
    )
    try:
        session = await store.create("alice")
        own_server.kill()

        for operation in _every_operation(store, session.id):
            with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable):
                await operation()

        own_server.start()  # same port, empty: the sessions died with it

        # The pool holds connections to the dead server; the store heals by itself.
        await store.ping()
        assert await store.load(session.id) is None
        fresh = await store.create("alice", {"k": 1})
        loaded = await store.load(fresh.id)
        assert loaded is not None
        assert dict(loaded.data) == {"k": 1}
    finally:
        await store.aclose()


async def test_a_restart_between_requests_is_invisible(own_server: RedisServer) -> None:
    store = RedisSessionStore.from_url(own_server.url, TIMEOUTS, socket_timeout=SOCKET_TIMEOUT)
    try:
        await store.create("alice")  # leaves an open connection in the pool
        own_server.kill()
        own_server.start()
        # No error at all: the dead pooled connection is replaced on first use.
        session = await store.create("alice")
        assert await store.load(session.id) is not None
    finally:
        await store.aclose()


async def test_a_hung_server_makes_every_operation_unavailable_then_recovers(
    own_server: RedisServer,
) -> None:
    store = RedisSessionStore.from_url(
        own_server.url,
        TIMEOUTS,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
    )
    # Count requests on the connections the store's own pool makes from now on.
    store._client.connection_pool.connection_class = CountingConnection
    try:
        session = await store.create("alice")
        own_server.pause()
        try:
            for operation in _every_operation(store, session.id):
                sent_before = CountingConnection.sent
                with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable):
                    await operation()
                # One request, then the socket timeout: a timeout is never retried, so a
                # hung server costs a request one socket timeout, not several.
                assert CountingConnection.sent - sent_before == 1
        finally:
            own_server.resume()

        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.username == "alice"
    finally:
        await store.aclose()


async def test_an_unreachable_server_is_unavailable_at_once(tmp_path: Path) -> None:
    never_started = RedisServer(tmp_path / "redis")
    store = RedisSessionStore.from_url(never_started.url, TIMEOUTS, socket_timeout=SOCKET_TIMEOUT)
    try:
        with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable) as caught:
            await store.ping()
    finally:
        await store.aclose()
    assert "Redis did not answer" in str(caught.value)


async def test_a_wrong_password_is_unavailable_and_never_shown(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", extra_args=["--requirepass", "right-pw-123"]) as server:
        wrong = RedisSessionStore.from_url(
            f"redis://:wr0ng-pw-456@127.0.0.1:{server.port}/0", TIMEOUTS
        )
        right = RedisSessionStore.from_url(
            f"redis://:right-pw-123@127.0.0.1:{server.port}/0", TIMEOUTS
        )
        try:
            with pytest.raises(SessionStoreUnavailable) as caught:
                await wrong.create("alice")
            assert await right.create("alice") is not None
        finally:
            await wrong.aclose()
            await right.aclose()
    for shown in (str(caught.value), repr(caught.value.__cause__)):
        assert "wr0ng-pw-456" not in shown
        assert "right-pw-123" not in shown


# --- URLs -------------------------------------------------------------------------------


async def test_unix_socket_url(redis_server: RedisServer) -> None:
    store = RedisSessionStore.from_url(redis_server.unix_url, TIMEOUTS)
    try:
        session = await store.create("alice", {"via": "unix"})
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data["via"] == "unix"
        assert await store.delete(session.id)
    finally:
        await store.aclose()


async def test_tls_url_with_a_trusted_certificate(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", tls=True) as server:
        assert server.url.startswith("rediss://")
        store = RedisSessionStore.from_url(server.url, TIMEOUTS)
        untrusting = RedisSessionStore.from_url(
            f"rediss://127.0.0.1:{server.port}/0", TIMEOUTS, socket_timeout=SOCKET_TIMEOUT
        )
        try:
            session = await store.create("alice", {"via": "tls"})
            loaded = await store.load(session.id)
            assert loaded is not None
            assert loaded.data["via"] == "tls"
            # Without the CA the server's certificate is not trusted: no silent downgrade.
            with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable):
                await untrusting.ping()
        finally:
            await store.aclose()
            await untrusting.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379",
        "localhost:6379",
        "redis://",
        "redis://:secret-pw@:6379/0",
        "redis://localhost:notaport/0",
        "unix://",
        "",
    ],
)
def test_unusable_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="Redis URL") as caught:
        check_redis_url(url)
    assert "secret-pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://user:pw@cache.example:6380/1", "unix:///run/r.sock"],
)
def test_usable_urls_are_accepted(url: str) -> None:
    check_redis_url(url)


def test_redacted_url_hides_only_the_password() -> None:
    assert redacted_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redacted_url("rediss://:pw@host/0") == "rediss://:***@host/0"
    assert redacted_url("redis://host:1/0") == "redis://host:1/0"


@pytest.mark.parametrize(
    "options",
    [
        {"socket_timeout": 0},
        {"socket_connect_timeout": -1},
        {"max_connections": 0},
        {"health_check_interval": -1},
    ],
)
def test_unusable_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Redis"):
        RedisSessionStore.from_url("redis://localhost:6379/0", TIMEOUTS, **options)


async def test_no_session_id_is_ever_logged(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = RedisSessionStore.from_url(own_server.url, TIMEOUTS, socket_timeout=SOCKET_TIMEOUT)
    try:
        session = await store.create("alice")
        await store.load(session.id)
        own_server.kill()
        with pytest.raises(SessionStoreUnavailable) as caught:
            await store.load(session.id)
    finally:
        await store.aclose()
    assert session.id not in caplog.text
    assert session.id not in str(caught.value)
