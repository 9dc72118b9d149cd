"""The login throttle contract, for every backend: memory, and a real redis-server.

Limits are small and the window short, so that locks expire in real time for Redis's
server-side TTLs too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from prodio.config import Settings, SettingsError, load_settings
from prodio.session import InMemorySessionStore, SessionTimeouts, build_session_store
from prodio.session.factory import build_login_throttle, throttle_limits
from prodio.session.throttle import (
    InMemoryLoginThrottle,
    LoginAttempt,
    LoginThrottle,
    RedisLoginThrottle,
    ThrottleLimits,
    ThrottleUnavailable,
    account_key,
    client_key,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

LIMITS = ThrottleLimits(max_failures=3, max_failures_per_client=5, window=0.6)
PAST_WINDOW = LIMITS.window + 0.15
IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"


class CountingRedis(Redis):
    """A real client that counts the commands it sends: one per round trip."""

    sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return await super().execute_command(*args, **options)


@pytest.fixture(params=["memory", "redis"])
async def throttle(request: pytest.FixtureRequest) -> AsyncIterator[LoginThrottle]:
    if request.param == "memory":
        memory = InMemoryLoginThrottle(LIMITS)
        yield memory
        await memory.aclose()
        return
    server: RedisServer = request.getfixturevalue("clean_redis")
    client = Redis.from_url(server.url, decode_responses=True)
    redis_throttle = RedisLoginThrottle(client, LIMITS, owns_client=True)
    yield redis_throttle
    await redis_throttle.aclose()


async def fail(throttle: LoginThrottle, name: str, ip: str | None = IP) -> LoginAttempt:
    """One attempt whose password turns out wrong (it stays counted)."""
    attempt = await throttle.begin(name, ip)
    assert attempt.allowed
    return attempt


# --- the account limit ------------------------------------------------------------------


async def test_failures_lock_the_account_at_the_limit(throttle: LoginThrottle) -> None:
    first = await fail(throttle, "alice")
    assert (first.account_failures, first.client_failures, first.locks) == (1, 1, ())
    second = await fail(throttle, "alice")
    assert second.account_failures == 2
    third = await fail(throttle, "alice")
    assert third.account_failures == 3
    assert third.locks == ("account",)

    refused = await throttle.begin("alice", IP)
    assert not refused.allowed
    assert refused.refused_by == ("account",)
    assert 0 < refused.retry_after <= LIMITS.window
    assert refused.retry_after_seconds == 1
    # A refused attempt is not counted: the lock does not grow with the attacker's tries.
    assert refused.account_failures == 3
    assert (await throttle.begin("alice", IP)).account_failures == 3


async def test_a_locked_account_is_locked_from_every_address(throttle: LoginThrottle) -> None:
    for ip in (IP, OTHER_IP, "2001:db8::1"):
        await fail(throttle, "alice", ip)
    for ip in ("192.0.2.99", "2001:db8:ffff::5", None):
        refused = await throttle.begin("alice", ip)
        assert not refused.allowed
        assert refused.refused_by == ("account",)


async def test_other_accounts_are_unaffected(throttle: LoginThrottle) -> None:
    for _ in range(3):
        await fail(throttle, "alice", None)
    assert not (await throttle.begin("alice", None)).allowed
    bob = await throttle.begin("bob", None)
    assert bob.allowed
    assert bob.account_failures == 1


async def test_success_forgets_the_account_failures_but_not_the_clients(
    throttle: LoginThrottle,
) -> None:
    await fail(throttle, "alice")
    await fail(throttle, "alice")
    success = await fail(throttle, "alice")
    assert success.locks == ("account",)  # it would have locked, had it failed
    await throttle.succeeded(success)
    after = await throttle.begin("alice", IP)
    assert after.allowed
    assert after.account_failures == 1
    # Two failures, one success uncounted, and this attempt: the client's count keeps
    # the failures.
    assert after.client_failures == 3


async def test_the_lock_expires_by_itself(throttle: LoginThrottle) -> None:
    for _ in range(3):
        await fail(throttle, "alice")
    assert not (await throttle.begin("alice", IP)).allowed
    await anyio.sleep(PAST_WINDOW)
    again = await throttle.begin("alice", IP)
    assert again.allowed
    assert again.account_failures == 1


async def test_failures_older_than_the_window_are_forgotten(throttle: LoginThrottle) -> None:
    await fail(throttle, "alice")
    await fail(throttle, "alice")
    await anyio.sleep(PAST_WINDOW)
    assert (await fail(throttle, "alice")).account_failures == 1


async def test_names_count_as_the_account_they_normalize_to(throttle: LoginThrottle) -> None:
    await fail(throttle, "Alice")
    await fail(throttle, "  ALICE ")
    await fail(throttle, "alice")
    assert not (await throttle.begin("aLiCe", IP)).allowed


@pytest.mark.parametrize("name", ["nobody", "bad name!", "", "x" * 5000, "\x00\n\u202e"])
async def test_names_that_are_no_account_lock_just_like_accounts(
    throttle: LoginThrottle, name: str
) -> None:
    for count in (1, 2, 3):
        assert (await fail(throttle, name)).account_failures == count
    refused = await throttle.begin(name, IP)
    assert not refused.allowed
    assert refused.refused_by == ("account",)
    assert (await throttle.begin("bad name?", OTHER_IP)).allowed


async def test_many_attempts_at_once_get_no_more_than_the_limit(
    throttle: LoginThrottle,
) -> None:
    results: list[LoginAttempt] = []

    async def attempt(ip: str) -> None:
        results.append(await throttle.begin("alice", ip))

    async with anyio.create_task_group() as tasks:
        for index in range(20):
            tasks.start_soon(attempt, f"192.0.2.{index}")
    assert len(results) == 20
    assert sum(result.allowed for result in results) == LIMITS.max_failures


async def test_abandon_uncounts_the_attempt_everywhere(throttle: LoginThrottle) -> None:
    await fail(throttle, "alice")
    undecided = await fail(throttle, "alice")
    await throttle.abandon(undecided)
    after = await throttle.begin("alice", IP)
    assert (after.account_failures, after.client_failures) == (2, 2)


# --- the client limit -------------------------------------------------------------------


async def test_failures_from_one_client_lock_it_for_every_account(
    throttle: LoginThrottle,
) -> None:
    for index in range(5):
        attempt = await fail(throttle, f"user{index}")
    assert attempt.client_failures == 5
    assert attempt.locks == ("client",)
    refused = await throttle.begin("someone-else", IP)
    assert not refused.allowed
    assert refused.refused_by == ("client",)
    assert 0 < refused.retry_after <= LIMITS.window
    # Another address is fine, and so is the account from there.
    assert (await throttle.begin("someone-else", OTHER_IP)).allowed


async def test_both_locks_report_the_longer_wait(throttle: LoginThrottle) -> None:
    for _ in range(3):
        await fail(throttle, "alice", OTHER_IP)  # the account's lock starts now
    await anyio.sleep(LIMITS.window / 2)
    for index in range(5):
        await fail(throttle, f"user{index}")  # the client's lock starts now
    refused = await throttle.begin("alice", IP)
    assert set(refused.refused_by) == {"account", "client"}
    # At most half a window is left of the account's lock: the wait is the client's.
    assert refused.retry_after > LIMITS.window / 2


async def test_an_ipv6_client_is_its_64_network(throttle: LoginThrottle) -> None:
    for index in range(5):
        await fail(throttle, f"user{index}", f"2001:db8:1:2::{index + 1}")
    assert not (await throttle.begin("fresh", "2001:db8:1:2:ffff::9")).allowed
    assert (await throttle.begin("fresh", "2001:db8:1:3::1")).allowed


async def test_an_ipv4_mapped_address_is_the_ipv4_address(throttle: LoginThrottle) -> None:
    for index in range(5):
        await fail(throttle, f"user{index}", "::ffff:203.0.113.7")
    assert not (await throttle.begin("fresh", IP)).allowed


async def test_without_an_address_only_the_account_counts(throttle: LoginThrottle) -> None:
    for index in range(10):
        attempt = await fail(throttle, f"user{index}", None)
        assert attempt.client is None
        assert attempt.client_failures == 0


# --- the keys ---------------------------------------------------------------------------


def test_account_keys() -> None:
    assert account_key(" Alice ") == "alice"
    invalid = account_key("bad name!")
    assert invalid.startswith("#")
    assert len(invalid) == 33
    assert account_key("bad name!") == invalid
    assert account_key("bad name?") != invalid
    assert len(account_key("y" * 100_000)) == 33


def test_client_keys() -> None:
    assert client_key(None) is None
    assert client_key("") is None
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key("testclient") == client_key("testclient")
    assert (client_key("testclient") or "").startswith("#")


@pytest.mark.parametrize(
    "values",
    [
        {"max_failures": 0, "max_failures_per_client": 5, "window": 1},
        {"max_failures": 5, "max_failures_per_client": 0, "window": 1},
        {"max_failures": 5, "max_failures_per_client": 5, "window": 0},
        {"max_failures": 5, "max_failures_per_client": 5, "window": float("nan")},
        {"max_failures": 5, "max_failures_per_client": 5, "window": float("inf")},
    ],
)
def test_limits_refuse_nonsense(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="login failure"):
        ThrottleLimits(**values)


# --- memory only ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_forgets_expired_counters() -> None:
    clock = FakeClock()
    throttle = InMemoryLoginThrottle(ThrottleLimits(3, 5, window=60), clock=clock)
    for index in range(100):
        await throttle.begin(f"user{index}", f"192.0.2.{index}")
    assert len(throttle) == 200
    clock.now += 60
    await throttle.begin("late", None)
    assert len(throttle) == 1


async def test_memory_lock_ends_exactly_one_window_after_the_locking_failure() -> None:
    clock = FakeClock()
    throttle = InMemoryLoginThrottle(ThrottleLimits(2, 50, window=60), clock=clock)
    await throttle.begin("alice", IP)
    clock.now += 30
    await throttle.begin("alice", IP)  # locks until now + 60
    clock.now += 59.5
    refused = await throttle.begin("alice", IP)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert (await throttle.begin("alice", IP)).allowed


# --- Redis only -------------------------------------------------------------------------


@pytest.fixture
async def counting(clean_redis: RedisServer) -> AsyncIterator[tuple[RedisLoginThrottle, Any]]:
    client = CountingRedis.from_url(clean_redis.url, decode_responses=True)
    throttle = RedisLoginThrottle(client, LIMITS, key_prefix="app1:", owns_client=True)
    yield throttle, client
    await throttle.aclose()


async def test_redis_every_call_is_one_round_trip(
    counting: tuple[RedisLoginThrottle, CountingRedis], clean_redis: RedisServer
) -> None:
    throttle, client = counting
    with clean_redis.client() as inspect:
        inspect.script_flush()  # as after a restart: the server knows no script
    await throttle.ping()  # connects, so the counts below are of calls only
    # The first call of a script on a server that does not know it yet (a fresh or
    # restarted Redis) costs two more: EVALSHA fails, SCRIPT LOAD, EVALSHA again.
    before = client.sent
    warm_up = await throttle.begin("warm-up", None)
    assert client.sent - before == 3
    for method in (throttle.succeeded, throttle.abandon):
        await method(warm_up)
    for call in range(6):
        before = client.sent
        attempt = await throttle.begin("alice", IP)
        assert client.sent - before == 1, call
    assert not attempt.allowed
    for method in (throttle.succeeded, throttle.abandon):
        before = client.sent
        await method(attempt)
        assert client.sent - before == 1


async def test_redis_every_key_has_a_ttl_and_the_prefix(
    counting: tuple[RedisLoginThrottle, CountingRedis], clean_redis: RedisServer
) -> None:
    throttle, _ = counting
    for index in range(4):
        await throttle.begin("alice", f"2001:db8:{index}::1")
    await throttle.begin("bad name!", IP)
    success = await throttle.begin("bob", IP)
    await throttle.succeeded(success)
    undecided = await throttle.begin("carol", OTHER_IP)
    await throttle.abandon(undecided)
    with clean_redis.client() as inspect:
        keys = sorted(inspect.keys("*"))
        assert keys
        assert all(key.startswith("app1:t:") for key in keys)
        assert "app1:t:a:alice" in keys
        assert "app1:t:c:2001:db8:2::/64" in keys
        for key in keys:
            assert 0 < inspect.pttl(key) <= LIMITS.window * 1000, key


async def test_redis_the_locking_failure_starts_a_whole_window(clean_redis: RedisServer) -> None:
    throttle = RedisLoginThrottle(
        Redis.from_url(clean_redis.url), ThrottleLimits(3, 50, window=60), owns_client=True
    )
    try:
        await fail(throttle, "alice")
        with clean_redis.client() as inspect:
            # As if most of the window had passed since the first failure.
            inspect.pexpire("prodio:t:a:alice", 5000)
        await fail(throttle, "alice")
        with clean_redis.client() as inspect:
            assert inspect.pttl("prodio:t:a:alice") <= 5000
        await fail(throttle, "alice")  # locks
        with clean_redis.client() as inspect:
            assert inspect.pttl("prodio:t:a:alice") > 55_000
    finally:
        await throttle.aclose()


async def test_redis_a_counter_without_ttl_gets_one(
    counting: tuple[RedisLoginThrottle, CountingRedis], clean_redis: RedisServer
) -> None:
    throttle, _ = counting
    with clean_redis.client() as inspect:
        inspect.set("app1:t:a:alice", "7")
        inspect.set("app1:t:a:bob", "1")
    assert not (await throttle.begin("alice", None)).allowed
    assert (await throttle.begin("bob", None)).allowed
    with clean_redis.client() as inspect:
        assert inspect.pttl("app1:t:a:alice") > 0
        assert inspect.pttl("app1:t:a:bob") > 0


async def test_redis_instances_share_the_counters(clean_redis: RedisServer) -> None:
    first = RedisLoginThrottle(Redis.from_url(clean_redis.url), LIMITS, owns_client=True)
    second = RedisLoginThrottle(Redis.from_url(clean_redis.url), LIMITS, owns_client=True)
    try:
        await fail(first, "alice")
        await fail(second, "alice", OTHER_IP)
        await fail(first, "alice")
        assert not (await second.begin("alice", "192.0.2.1")).allowed
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_down_fails_closed(tmp_path: Any) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    throttle = RedisLoginThrottle(
        Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1),
        LIMITS,
        owns_client=True,
    )
    try:
        attempt = await fail(throttle, "alice")
        server.kill()
        with pytest.raises(ThrottleUnavailable):
            await throttle.begin("alice", IP)
        with pytest.raises(ThrottleUnavailable):
            await throttle.succeeded(attempt)
        with pytest.raises(ThrottleUnavailable):
            await throttle.abandon(attempt)
        with pytest.raises(ThrottleUnavailable):
            await throttle.ping()
        server.start()
        # Back, empty (no persistence): counting starts again.
        assert (await throttle.begin("alice", IP)).account_failures == 1
    finally:
        await throttle.aclose()
        server.stop()


# --- settings and the factory -------------------------------------------------------------


def test_the_settings_have_safe_defaults() -> None:
    limits = throttle_limits(Settings(_env_file=None))  # type: ignore[call-arg]
    assert limits == ThrottleLimits(max_failures=5, max_failures_per_client=50, window=900)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PRODIO_LOGIN_MAX_FAILURES", "0"),
        ("PRODIO_LOGIN_MAX_FAILURES", "many"),
        ("PRODIO_LOGIN_MAX_FAILURES_PER_IP", "-1"),
        ("PRODIO_LOGIN_FAILURE_WINDOW", "0"),
        ("PRODIO_LOGIN_FAILURE_WINDOW", "nan"),
        ("PRODIO_LOGIN_FAILURE_WINDOW", "1e12"),
    ],
)
def test_bad_settings_get_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("PRODIO_DATA_DIR", str(tmp_path))
    with pytest.raises(SettingsError, match=variable):
        load_settings(_env_file=None)


async def test_the_throttle_follows_a_memory_store() -> None:
    settings = Settings(_env_file=None, login_max_failures=2)  # type: ignore[call-arg]
    throttle = build_login_throttle(settings, InMemorySessionStore(SessionTimeouts(60, 600)))
    assert isinstance(throttle, InMemoryLoginThrottle)
    assert throttle.limits.max_failures == 2


async def test_the_throttle_shares_a_redis_stores_connections(clean_redis: RedisServer) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        session_backend="redis",
        redis_url=clean_redis.url,
        redis_key_prefix="acme:",
        login_failure_window=30,
    )
    store = build_session_store(settings)
    throttle = build_login_throttle(settings, store)
    try:
        assert isinstance(throttle, RedisLoginThrottle)
        await throttle.begin("alice", IP)
        with clean_redis.client() as inspect:
            assert sorted(inspect.keys("*")) == ["acme:t:a:alice", f"acme:t:c:{IP}"]
            assert 29_000 < inspect.pttl("acme:t:a:alice") <= 30_000
        # The pool is the store's: closing the throttle leaves it open.
        await throttle.aclose()
        assert await store.load((await store.create("alice")).id) is not None
    finally:
        await store.aclose()
