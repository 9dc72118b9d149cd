"""The login throttle contract, for every backend: memory, and a real redis-server.

Limits are small and the window short, so that locks expire in real time for Redis's
server-side TTLs too. The in-flight limits are set high in ``LIMITS`` so that the tests of
failures do not meet them; the tests of the in-flight limits set their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
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
    LoginFailure,
    LoginThrottle,
    RedisLoginThrottle,
    ThrottleLimits,
    ThrottleUnavailable,
    account_key,
    client_key,
    pair_key,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

LIMITS = ThrottleLimits(
    max_failures=3,
    max_failures_per_client=5,
    window=0.6,
    max_in_flight=50,
    max_in_flight_per_client=50,
)
PAST_WINDOW = LIMITS.window + 0.15
IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"
THIRD_IP = "192.0.2.33"

MakeThrottle = Callable[[ThrottleLimits], LoginThrottle]


class CountingRedis(Redis):
    """A real client that counts the commands it sends: one per round trip."""

    sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return await super().execute_command(*args, **options)


@pytest.fixture(params=["memory", "redis"])
async def make_throttle(request: pytest.FixtureRequest) -> AsyncIterator[MakeThrottle]:
    """Build throttles of one backend with the limits a test needs (all share one Redis)."""
    made: list[LoginThrottle] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("clean_redis")

    def make(limits: ThrottleLimits) -> LoginThrottle:
        throttle: LoginThrottle
        if server is None:
            throttle = InMemoryLoginThrottle(limits)
        else:
            client = Redis.from_url(server.url, decode_responses=True)
            throttle = RedisLoginThrottle(client, limits, owns_client=True)
        made.append(throttle)
        return throttle

    yield make
    for throttle in made:
        await throttle.aclose()


@pytest.fixture
def throttle(make_throttle: MakeThrottle) -> LoginThrottle:
    return make_throttle(LIMITS)


async def fail(throttle: LoginThrottle, name: str, ip: str | None = IP) -> LoginFailure:
    """One attempt whose password turns out wrong."""
    attempt = await throttle.begin(name, ip)
    assert attempt.allowed, attempt
    return await throttle.failed(attempt)


async def succeed(throttle: LoginThrottle, name: str, ip: str | None = IP) -> LoginAttempt:
    """One attempt whose password is right."""
    attempt = await throttle.begin(name, ip)
    assert attempt.allowed, attempt
    await throttle.succeeded(attempt)
    return attempt


# --- the account limit ------------------------------------------------------------------


async def test_failures_lock_the_account_at_the_limit(throttle: LoginThrottle) -> None:
    first = await fail(throttle, "alice")
    assert (first.account_failures, first.client_failures, first.locks) == (1, 1, ())
    assert (await fail(throttle, "alice")).account_failures == 2
    third = await fail(throttle, "alice")
    assert third.account_failures == 3
    assert third.locks == ("account",)

    refused = await throttle.begin("alice", IP)
    assert not refused.allowed
    assert not refused.busy
    assert refused.refused_by == ("account",)
    assert 0 < refused.retry_after <= LIMITS.window
    assert refused.retry_after_seconds == 1
    # A refused attempt is not counted: the lock does not grow with the attacker's tries.
    assert refused.account_failures == 3
    assert (await throttle.begin("alice", IP)).account_failures == 3


async def test_a_locked_account_is_locked_from_every_unknown_address(
    throttle: LoginThrottle,
) -> None:
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
    assert bob.account_failures == 0


async def test_success_forgets_the_account_failures_but_not_the_clients(
    throttle: LoginThrottle,
) -> None:
    await fail(throttle, "alice")
    await fail(throttle, "alice")
    await succeed(throttle, "alice")
    after = await throttle.begin("alice", OTHER_IP)
    assert after.allowed
    assert after.account_failures == 0
    # The client's count keeps its failures.
    assert (await throttle.begin("bob", IP)).client_failures == 2


async def test_the_lock_expires_by_itself(throttle: LoginThrottle) -> None:
    for _ in range(3):
        await fail(throttle, "alice")
    assert not (await throttle.begin("alice", IP)).allowed
    await anyio.sleep(PAST_WINDOW)
    again = await throttle.begin("alice", IP)
    assert again.allowed
    assert again.account_failures == 0


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


# --- attempts in flight -------------------------------------------------------------------


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
    # Failures + attempts in flight never pass the limit: at most 3 passwords get checked.
    assert sum(result.allowed for result in results) == LIMITS.max_failures
    refused = [result for result in results if not result.allowed]
    assert all(result.busy and result.refused_by == ("account",) for result in refused)


async def test_attempts_in_flight_are_not_failures(throttle: LoginThrottle) -> None:
    """The attack of the old throttle: a queue of slow logins locked the account, since
    each attempt counted as a failure until it ended. Now it is only busy, briefly."""
    await fail(throttle, "alice", OTHER_IP)
    in_flight = [await throttle.begin("alice", IP) for _ in range(2)]
    assert all(attempt.allowed for attempt in in_flight)
    busy = await throttle.begin("alice", THIRD_IP)
    assert not busy.allowed
    assert busy.busy
    assert busy.refused_by == ("account",)
    # "Try again in a moment", not the window of a lock.
    assert busy.retry_after_seconds == 1
    assert busy.account_failures == 1
    for attempt in in_flight:
        await throttle.succeeded(attempt)
    after = await throttle.begin("alice", THIRD_IP)
    assert after.allowed
    assert after.account_failures == 0


async def test_at_most_max_in_flight_attempts_per_account(make_throttle: MakeThrottle) -> None:
    limits = dataclasses.replace(LIMITS, max_failures=10, max_in_flight=2)
    throttle = make_throttle(limits)
    first = await throttle.begin("alice", IP)
    second = await throttle.begin("alice", OTHER_IP)
    assert first.allowed
    assert second.allowed
    third = await throttle.begin("alice", THIRD_IP)
    assert (third.allowed, third.busy, third.refused_by) == (False, True, ("account",))
    await throttle.abandon(first)
    assert (await throttle.begin("alice", THIRD_IP)).allowed


async def test_at_most_max_in_flight_attempts_per_client(make_throttle: MakeThrottle) -> None:
    limits = dataclasses.replace(LIMITS, max_failures_per_client=50, max_in_flight_per_client=3)
    throttle = make_throttle(limits)
    flying = [await throttle.begin(f"user{index}", IP) for index in range(3)]
    assert all(attempt.allowed for attempt in flying)
    refused = await throttle.begin("user9", IP)
    assert (refused.allowed, refused.busy, refused.refused_by) == (False, True, ("client",))
    assert (await throttle.begin("user9", OTHER_IP)).allowed
    await throttle.failed(flying[0])
    assert (await throttle.begin("user9", IP)).allowed


async def test_abandon_counts_nothing_and_frees_the_slot(throttle: LoginThrottle) -> None:
    await fail(throttle, "alice")
    undecided = [await throttle.begin("alice", IP) for _ in range(2)]
    assert not (await throttle.begin("alice", IP)).allowed  # 1 failure + 2 in flight
    for attempt in undecided:
        await throttle.abandon(attempt)
    after = await throttle.begin("alice", IP)
    assert after.allowed
    assert (after.account_failures, after.client_failures) == (1, 1)


async def test_an_unreported_attempt_counts_as_a_failure_after_its_timeout(
    make_throttle: MakeThrottle,
) -> None:
    limits = dataclasses.replace(LIMITS, attempt_timeout=0.3, window=5)
    throttle = make_throttle(limits)
    # Three attempts whose process died before saying how they ended.
    lost = [await throttle.begin("alice", ip) for ip in (IP, OTHER_IP, THIRD_IP)]
    assert all(attempt.allowed for attempt in lost)
    await anyio.sleep(0.4)
    refused = await throttle.begin("alice", "192.0.2.200")
    assert not refused.allowed
    assert not refused.busy
    assert refused.account_failures == 3
    # A late report of a reaped attempt is not counted twice.
    late = await throttle.failed(lost[0])
    assert late.account_failures == 3
    assert late.locks == ()


# --- the client limit -------------------------------------------------------------------


async def test_failures_from_one_client_lock_it_for_every_account(
    throttle: LoginThrottle,
) -> None:
    for index in range(5):
        failure = await fail(throttle, f"user{index}")
    assert failure.client_failures == 5
    assert failure.locks == ("client",)
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
        attempt = await throttle.begin(f"user{index}", None)
        assert attempt.client is None
        failure = await throttle.failed(attempt)
        assert failure.client_failures == 0
        assert not attempt.known_client


# --- known clients: the owner is not locked out of where they sign in from ----------------


async def test_an_attack_from_elsewhere_does_not_lock_the_owner_out(
    throttle: LoginThrottle,
) -> None:
    """The malicious lockout: anyone who knows the name locked the account for everyone.
    Now the addresses the account signed in from lately keep working."""
    await succeed(throttle, "alice", IP)  # alice at home, yesterday
    for ip in (OTHER_IP, THIRD_IP, "2001:db8::66"):
        await fail(throttle, "alice", ip)  # the attacker
    assert not (await throttle.begin("alice", "192.0.2.200")).allowed
    home = await throttle.begin("alice", IP)
    assert home.allowed
    assert home.known_client
    assert home.account_failures == 3
    await throttle.succeeded(home)
    # Her success does not lift the lock the attacker caused, for everyone else.
    refused = await throttle.begin("alice", "192.0.2.201")
    assert refused.refused_by == ("account",)


async def test_a_known_client_has_a_limit_of_its_own(throttle: LoginThrottle) -> None:
    await succeed(throttle, "alice", IP)
    first = await fail(throttle, "alice", IP)
    assert (first.pair_failures, first.account_failures) == (1, 1)
    await fail(throttle, "alice", IP)
    third = await fail(throttle, "alice", IP)
    # Its failures count for the account too: both limits are reached together here.
    assert third.locks == ("account_client", "account")
    refused = await throttle.begin("alice", IP)
    assert (refused.allowed, refused.refused_by) == (False, ("account_client",))
    assert 0 < refused.retry_after <= LIMITS.window
    assert refused.pair_failures == 3


async def test_a_known_client_is_known_for_that_account_only(throttle: LoginThrottle) -> None:
    await succeed(throttle, "alice", IP)
    for _ in range(3):
        await fail(throttle, "bob", OTHER_IP)
    refused = await throttle.begin("bob", IP)
    assert not refused.allowed
    assert not refused.known_client
    assert (await throttle.begin("alice", IP)).known_client


async def test_known_clients_are_forgotten_after_their_lifetime(
    make_throttle: MakeThrottle,
) -> None:
    throttle = make_throttle(dataclasses.replace(LIMITS, known_client_ttl=0.3, window=5))
    await succeed(throttle, "alice", IP)
    assert (await throttle.begin("alice", IP)).known_client
    await anyio.sleep(0.4)
    for ip in (OTHER_IP, THIRD_IP, "192.0.2.200"):
        await fail(throttle, "alice", ip)
    refused = await throttle.begin("alice", IP)
    assert not refused.allowed
    assert not refused.known_client


async def test_known_clients_can_be_turned_off(make_throttle: MakeThrottle) -> None:
    throttle = make_throttle(dataclasses.replace(LIMITS, known_client_ttl=0))
    await succeed(throttle, "alice", IP)
    for ip in (OTHER_IP, THIRD_IP, "192.0.2.200"):
        await fail(throttle, "alice", ip)
    refused = await throttle.begin("alice", IP)
    assert (refused.allowed, refused.known_client) == (False, False)


async def test_the_attacker_cannot_keep_the_owner_busy_either(throttle: LoginThrottle) -> None:
    await succeed(throttle, "alice", IP)
    flying = [await throttle.begin("alice", ip) for ip in (OTHER_IP, THIRD_IP, "192.0.2.9")]
    assert all(attempt.allowed for attempt in flying)
    assert (await throttle.begin("alice", "192.0.2.10")).busy
    # The owner's attempts are in flight in a set of their own.
    assert (await throttle.begin("alice", IP)).allowed


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


def test_pair_keys_name_neither_the_account_nor_the_address() -> None:
    key = pair_key("alice", IP)
    assert len(key) == 32
    assert "alice" not in key
    assert IP not in key
    assert key != pair_key("alice", OTHER_IP)
    assert key != pair_key("bob", IP)


@pytest.mark.parametrize(
    "values",
    [
        {"max_failures": 0, "max_failures_per_client": 5, "window": 1},
        {"max_failures": 5, "max_failures_per_client": 0, "window": 1},
        {"max_failures": 5, "max_failures_per_client": 5, "window": 0},
        {"max_failures": 5, "max_failures_per_client": 5, "window": float("nan")},
        {"max_failures": 5, "max_failures_per_client": 5, "window": float("inf")},
        {"max_failures": 5, "max_failures_per_client": 5, "window": 1, "max_in_flight": 0},
        {
            "max_failures": 5,
            "max_failures_per_client": 5,
            "window": 1,
            "max_in_flight_per_client": 0,
        },
        {"max_failures": 5, "max_failures_per_client": 5, "window": 1, "attempt_timeout": 0},
        {"max_failures": 5, "max_failures_per_client": 5, "window": 1, "known_client_ttl": -1},
    ],
)
def test_limits_refuse_nonsense(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="login"):
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
        await fail(throttle, f"user{index}", f"192.0.2.{index}")
    assert len(throttle) == 200
    clock.now += 60
    await throttle.begin("late", None)
    assert len(throttle) == 1  # the in-flight set of "late"


async def test_memory_forgets_attempts_nobody_reported() -> None:
    clock = FakeClock()
    limits = ThrottleLimits(3, 500, window=60, attempt_timeout=30, max_in_flight_per_client=500)
    throttle = InMemoryLoginThrottle(limits, clock=clock)
    for index in range(100):
        assert (await throttle.begin(f"user{index}", IP)).allowed
    assert len(throttle) == 101  # 100 account sets, one client set
    clock.now += 30
    # Reaped as failures (the counters last a window), then forgotten with them.
    await throttle.abandon(await throttle.begin("late", None))
    assert len(throttle) == 101
    clock.now += 60
    await throttle.begin("later", None)
    assert len(throttle) == 1


async def test_memory_forgets_known_clients() -> None:
    clock = FakeClock()
    limits = ThrottleLimits(3, 5, window=60, known_client_ttl=3600)
    throttle = InMemoryLoginThrottle(limits, clock=clock)
    await succeed(throttle, "alice", IP)
    assert len(throttle) == 1
    clock.now += 3600
    assert not (await throttle.begin("alice", IP)).known_client


async def test_memory_lock_ends_exactly_one_window_after_the_locking_failure() -> None:
    clock = FakeClock()
    throttle = InMemoryLoginThrottle(ThrottleLimits(2, 50, window=60), clock=clock)
    await fail(throttle, "alice")
    clock.now += 30
    await fail(throttle, "alice")  # locks until now + 60
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
    await throttle.failed(warm_up)
    for method in (throttle.succeeded, throttle.abandon):
        await method(await throttle.begin("warm-up", None))
    for call in range(6):
        before = client.sent
        attempt = await throttle.begin("alice", IP)
        assert client.sent - before == 1, call
        if attempt.allowed:
            before = client.sent
            await throttle.failed(attempt)
            assert client.sent - before == 1, call
    assert not attempt.allowed
    for method in (throttle.succeeded, throttle.abandon):
        before = client.sent
        await method(await throttle.begin("bob", IP))
        assert client.sent - before == 2


async def test_redis_every_key_has_a_ttl_and_the_prefix(
    counting: tuple[RedisLoginThrottle, CountingRedis], clean_redis: RedisServer
) -> None:
    throttle, _ = counting
    for index in range(3):
        await fail(throttle, "alice", f"2001:db8:{index}::1")
    await fail(throttle, "bad name!", IP)
    await succeed(throttle, "bob", IP)
    await fail(throttle, "bob", IP)  # a known client's own counter
    await throttle.abandon(await throttle.begin("carol", OTHER_IP))
    await throttle.begin("dave", THIRD_IP)  # still in flight
    longest = LIMITS.known_client_ttl * 1000
    with clean_redis.client() as inspect:
        keys = sorted(inspect.keys("*"))
        assert all(key.startswith("app1:t:") for key in keys)
        pair = pair_key("bob", IP)
        for expected in (
            "app1:t:a:alice",
            "app1:t:c:2001:db8:2::/64",
            f"app1:t:k:{pair}",
            f"app1:t:p:{pair}",
            "app1:t:ai:dave",
            f"app1:t:ci:{THIRD_IP}",
        ):
            assert expected in keys, expected
        for key in keys:
            assert 0 < inspect.pttl(key) <= longest, key
        # Counters last a window; in-flight sets one attempt timeout more.
        assert inspect.pttl("app1:t:a:alice") <= LIMITS.window * 1000
        assert inspect.pttl("app1:t:ai:dave") <= (LIMITS.window + LIMITS.attempt_timeout) * 1000


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
    await fail(throttle, "bob", None)
    with clean_redis.client() as inspect:
        assert inspect.pttl("app1:t:a:alice") > 0
        assert inspect.pttl("app1:t:a:bob") > 0


async def test_redis_instances_share_the_counters(clean_redis: RedisServer) -> None:
    first = RedisLoginThrottle(Redis.from_url(clean_redis.url), LIMITS, owns_client=True)
    second = RedisLoginThrottle(Redis.from_url(clean_redis.url), LIMITS, owns_client=True)
    try:
        await fail(first, "alice")
        await fail(second, "alice", OTHER_IP)
        # One attempt in flight on the first instance takes the last free attempt for both.
        flying = await first.begin("alice", THIRD_IP)
        assert flying.allowed
        assert (await second.begin("alice", "192.0.2.1")).busy
        await first.failed(flying)
        refused = await second.begin("alice", "192.0.2.1")
        assert (refused.allowed, refused.busy) == (False, False)
        # A client one instance saw succeed is known to the other.
        await succeed(first, "bob", IP)
        for ip in (OTHER_IP, THIRD_IP, "192.0.2.7"):
            await fail(first, "bob", ip)
        assert (await second.begin("bob", IP)).known_client
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
        await fail(throttle, "alice")
        attempt = await throttle.begin("alice", IP)
        server.kill()
        for call in (
            throttle.begin("alice", IP),
            throttle.failed(attempt),
            throttle.succeeded(attempt),
            throttle.abandon(attempt),
            throttle.ping(),
        ):
            with pytest.raises(ThrottleUnavailable):
                await call
        server.start()
        # Back, empty (no persistence): counting starts again.
        assert (await throttle.begin("alice", IP)).account_failures == 0
    finally:
        await throttle.aclose()
        server.stop()


# --- settings and the factory -------------------------------------------------------------


def test_the_settings_have_safe_defaults() -> None:
    limits = throttle_limits(Settings(_env_file=None))  # type: ignore[call-arg]
    assert limits == ThrottleLimits(max_failures=5, max_failures_per_client=50, window=900)
    assert (limits.max_in_flight, limits.max_in_flight_per_client) == (3, 10)
    assert limits.attempt_timeout == 60
    assert limits.known_client_ttl == 30 * 24 * 3600


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
        await fail(throttle, "alice")
        with clean_redis.client() as inspect:
            assert sorted(inspect.keys("*")) == ["acme:t:a:alice", f"acme:t:c:{IP}"]
            assert 29_000 < inspect.pttl("acme:t:a:alice") <= 30_000
        # The pool is the store's: closing the throttle leaves it open.
        await throttle.aclose()
        await store.ping()
    finally:
        await store.aclose()
