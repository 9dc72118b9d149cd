"""Login throttling through the whole app: 429 with Retry-After, per account and per client,
no password hashing while locked, attempts in flight that are not failures, the owner's own
addresses spared by an account lock, shared by instances through Redis, closed when Redis is
down.

The client address is the ASGI scope's ``client``, set per test client through
``httpx.ASGITransport(client=...)`` as uvicorn would set it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from prodio.session.base import SessionTimeouts
from prodio.session.redis import RedisSessionStore
from tests import apptest
from tests.apptest import (
    BASE_URL,
    BOB_PASSWORD,
    MAX_FAILURES,
    PASSWORD,
    AppUnderTest,
    VerifyCounter,
    form_fields,
    running_app,
    session_cookie_of,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

MAX_PER_IP = 6
WINDOW = 60
LOCK_MESSAGE = "Too many failed sign-in attempts."
ATTACKER = "203.0.113.66"


@asynccontextmanager
async def client_at(env: AppUnderTest, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser at address ``ip``: its own cookie jar, the same app."""
    transport = httpx.ASGITransport(app=env.app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def login_from(env: AppUnderTest, ip: str, name: str, password: str) -> httpx.Response:
    async with client_at(env, ip) as client:
        return await env.login(name, password, client=client)


def app_with_users(tmp_path: Path, **overrides: Any) -> AbstractAsyncContextManager[AppUnderTest]:
    """The app with alice and bob, under the per-client limit and window counted with here."""
    settings: dict[str, Any] = {
        "login_max_failures_per_ip": MAX_PER_IP,
        "login_failure_window": WINDOW,
        **overrides,
    }
    return apptest.app_with_users(tmp_path, **settings)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AppUnderTest]:
    async with app_with_users(tmp_path) as app_env:
        yield app_env


def assert_locked(response: httpx.Response, window: float = WINDOW) -> None:
    assert response.status_code == 429
    assert LOCK_MESSAGE in response.text
    assert 1 <= int(response.headers["retry-after"]) <= window
    assert response.headers["cache-control"] == "no-store"
    assert session_cookie_of(response) is None
    # The page is the login form again, ready for when the lock ends.
    assert form_fields(response.text)["csrf_token"]


async def test_failures_lock_the_account_from_every_unknown_address(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = VerifyCounter(env, monkeypatch)
    for _ in range(MAX_FAILURES):
        assert (await login_from(env, ATTACKER, "alice", "guess")).status_code == 401
    assert verify.calls == MAX_FAILURES

    # Alice herself, elsewhere, with the right password: refused until the lock ends.
    response = await login_from(env, "198.51.100.1", "alice", PASSWORD)
    assert_locked(response)
    assert "15 minutes" not in response.text
    assert "1 minute" in response.text
    # No password was checked for a refused attempt.
    assert verify.calls == MAX_FAILURES
    assert_locked(await login_from(env, "2001:db8::7", "ALICE", PASSWORD))
    assert verify.calls == MAX_FAILURES


async def test_other_accounts_are_unaffected(env: AppUnderTest) -> None:
    for _ in range(MAX_FAILURES):
        await login_from(env, ATTACKER, "alice", "guess")
    assert (await login_from(env, ATTACKER, "bob", BOB_PASSWORD)).status_code == 303
    assert_locked(await login_from(env, ATTACKER, "alice", PASSWORD))


async def test_a_success_resets_the_account_count(env: AppUnderTest) -> None:
    for _ in range(MAX_FAILURES - 1):
        await login_from(env, ATTACKER, "alice", "guess")
    assert (await login_from(env, "198.51.100.1", "alice", PASSWORD)).status_code == 303
    for _ in range(MAX_FAILURES - 1):
        assert (await login_from(env, ATTACKER, "alice", "guess")).status_code == 401
    assert (await login_from(env, ATTACKER, "alice", PASSWORD)).status_code == 303


async def test_the_lock_expires_by_itself(tmp_path: Path) -> None:
    async with app_with_users(tmp_path, login_failure_window=0.5) as env:
        for _ in range(MAX_FAILURES):
            await login_from(env, ATTACKER, "alice", "guess")
        assert_locked(await login_from(env, ATTACKER, "alice", PASSWORD), window=1)
        await anyio.sleep(0.6)
        assert (await login_from(env, ATTACKER, "alice", PASSWORD)).status_code == 303


async def test_unknown_names_lock_exactly_like_accounts(env: AppUnderTest) -> None:
    for name, ip in (("alice", "192.0.2.1"), ("nobody", "192.0.2.2")):
        for _ in range(MAX_FAILURES):
            assert (await login_from(env, ip, name, "guess")).status_code == 401
    real = await login_from(env, "198.51.100.1", "alice", PASSWORD)
    unknown = await login_from(env, "198.51.100.2", "nobody", PASSWORD)
    assert_locked(real)
    assert_locked(unknown)

    def comparable(response: httpx.Response) -> tuple[Any, ...]:
        token = form_fields(response.text)["csrf_token"]
        body = response.text.replace(token, "").replace("alice", "NAME").replace("nobody", "NAME")
        ignored = {"set-cookie", "x-request-id", "content-length"}
        headers = {k: v for k, v in response.headers.items() if k not in ignored}
        return response.status_code, headers, body

    assert comparable(real) == comparable(unknown)


async def test_the_per_address_limit_covers_every_account(env: AppUnderTest) -> None:
    for index in range(MAX_PER_IP):
        # One failure per name: no account comes near its own limit.
        assert (await login_from(env, ATTACKER, f"user{index}", "guess")).status_code == 401
    assert_locked(await login_from(env, ATTACKER, "bob", BOB_PASSWORD))
    # Bob from his own address is fine: only the attacker's address is locked.
    assert (await login_from(env, "198.51.100.1", "bob", BOB_PASSWORD)).status_code == 303


async def test_an_address_is_not_reset_by_a_success(env: AppUnderTest) -> None:
    for index in range(MAX_PER_IP - 1):
        await login_from(env, ATTACKER, f"user{index}", "guess")
    assert (await login_from(env, ATTACKER, "bob", BOB_PASSWORD)).status_code == 303
    assert (await login_from(env, ATTACKER, "carol", "guess")).status_code == 401
    assert_locked(await login_from(env, ATTACKER, "bob", BOB_PASSWORD))


async def test_guesses_sent_at_once_check_no_more_passwords_than_the_limit(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify = VerifyCounter(env, monkeypatch)
    # Each guess with its own form and address, all posted at the same time.
    forms: list[tuple[httpx.AsyncClient, dict[str, str]]] = []
    statuses: list[int] = []
    async with AsyncExitStack() as stack:
        for index in range(12):
            client = await stack.enter_async_context(client_at(env, f"192.0.2.{index}"))
            token = form_fields((await client.get("/login")).text)["csrf_token"]
            data = {"username": "alice", "password": f"guess {index}", "csrf_token": token}
            forms.append((client, data))

        async def post(client: httpx.AsyncClient, data: dict[str, str]) -> None:
            response = await client.post("/login", data=data, headers={"origin": BASE_URL})
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tasks:
            for client, data in forms:
                tasks.start_soon(post, client, data)
    assert sorted(statuses) == [401] * MAX_FAILURES + [429] * (12 - MAX_FAILURES)
    assert verify.calls == MAX_FAILURES


async def test_failures_and_locks_are_audited(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prodio.audit")
    for _ in range(MAX_FAILURES):
        await login_from(env, ATTACKER, "Alice", "guess")
    await login_from(env, ATTACKER, "alice", PASSWORD)
    events = [
        (r.event, r.outcome, r.user, r.client)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "prodio.audit" and r.event.startswith("login")  # type: ignore[attr-defined]
    ]
    assert events == [
        ("login", "failure", "alice", ATTACKER),
        ("login", "failure", "alice", ATTACKER),
        ("login", "failure", "alice", ATTACKER),
        ("login.lockout", "locked", "alice", ATTACKER),
        ("login", "locked", "alice", ATTACKER),
    ]
    lockout = next(r for r in caplog.records if getattr(r, "event", "") == "login.lockout")
    assert lockout.locked == "account"  # type: ignore[attr-defined]
    assert lockout.failures == MAX_FAILURES  # type: ignore[attr-defined]
    assert lockout.levelno == logging.WARNING
    refused = [r for r in caplog.records if getattr(r, "event", "") == "login"][-1]
    assert refused.outcome == "locked"  # type: ignore[attr-defined]
    assert refused.locked_by == "account"  # type: ignore[attr-defined]
    assert 1 <= refused.retry_after <= WINDOW  # type: ignore[attr-defined]


# --- the attacks of issue 6.1.1 -----------------------------------------------------------

HOME = "198.51.100.77"


async def test_the_owner_signs_in_while_an_attacker_hammers_the_account(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Malicious lockout: anyone who knows a user name could lock the account for everyone.
    The account's own recent addresses are spared; every other address stays locked."""
    assert (await login_from(env, HOME, "alice", PASSWORD)).status_code == 303
    verify = VerifyCounter(env, monkeypatch)
    for index in range(MAX_FAILURES):
        response = await login_from(env, f"203.0.113.{index + 1}", "alice", "guess")
        assert response.status_code == 401
    for index in range(5):
        # The attacker keeps trying, from anywhere: refused, no password checked.
        assert_locked(await login_from(env, f"203.0.113.{index + 50}", "alice", "guess"))
    assert verify.calls == MAX_FAILURES
    # Alice, at home: in. From a new place: locked, like the attacker.
    assert (await login_from(env, HOME, "alice", PASSWORD)).status_code == 303
    assert_locked(await login_from(env, "192.0.2.88", "alice", PASSWORD))
    # The attacker cannot borrow her address's exemption by guessing from it: it has a limit
    # of its own (an office NAT shared with the attacker gives no unlimited guesses).
    for _ in range(MAX_FAILURES):
        assert (await login_from(env, HOME, "alice", "guess")).status_code == 401
    assert_locked(await login_from(env, HOME, "alice", PASSWORD))


class SlowPasswords:
    """Holds every password check until released: logins that stay in flight."""

    def __init__(self, env: AppUnderTest, monkeypatch: pytest.MonkeyPatch, held: int) -> None:
        self.release = anyio.Event()
        self.all_held = anyio.Event()
        self.waiting = 0
        original = env.services.passwords.check

        async def slow_check(username: str, password: str) -> Any:
            self.waiting += 1
            if self.waiting == held:
                self.all_held.set()
            await self.release.wait()
            return await original(username, password)

        monkeypatch.setattr(env.services.passwords, "check", slow_check)


async def test_a_queue_of_slow_logins_does_not_lock_the_account(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempts still being checked used to count as failures: a queue of slow logins
    locked the account for a whole window. Now they only make others wait a moment."""
    await login_from(env, "203.0.113.1", "alice", "guess")  # one real failure
    slow = SlowPasswords(env, monkeypatch, held=2)
    statuses: list[int] = []

    async def slow_login(ip: str) -> None:
        statuses.append((await login_from(env, ip, "alice", PASSWORD)).status_code)

    async with anyio.create_task_group() as tasks:
        for ip in ("192.0.2.1", "192.0.2.2"):
            tasks.start_soon(slow_login, ip)
        await slow.all_held.wait()
        # One failure and two in flight: the limit of 3 is taken, but nothing is locked.
        busy = await login_from(env, "192.0.2.3", "alice", PASSWORD)
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == "1"
        assert "Too many sign-in attempts at the same time" in busy.text
        assert LOCK_MESSAGE not in busy.text
        slow.release.set()
    assert statuses == [303, 303]
    assert (await login_from(env, "192.0.2.3", "alice", PASSWORD)).status_code == 303


# --- Redis: several instances, and the backend down -----------------------------------------


@pytest.fixture
def redis_url(clean_redis: RedisServer) -> str:
    return clean_redis.url


def redis_store(url: str) -> RedisSessionStore:
    return RedisSessionStore.from_url(url, SessionTimeouts(1800, 28800), socket_timeout=2.0)


@asynccontextmanager
async def redis_instance(tmp_path: Path, url: str) -> AsyncIterator[AppUnderTest]:
    """One prodio instance on the shared Redis and the shared user database."""
    async with running_app(
        tmp_path,
        sessions=redis_store(url),
        session_backend="redis",
        redis_url=url,
        login_max_failures=MAX_FAILURES,
        login_failure_window=WINDOW,
    ) as env:
        yield env


async def test_instances_share_the_counters_through_redis(
    tmp_path: Path, redis_url: str, clean_redis: RedisServer
) -> None:
    async with (
        redis_instance(tmp_path, redis_url) as first,
        redis_instance(tmp_path, redis_url) as second,
    ):
        first.add_user("alice", PASSWORD)
        assert (await login_from(first, ATTACKER, "alice", "guess")).status_code == 401
        assert (await login_from(second, "198.51.100.1", "alice", "guess")).status_code == 401
        assert (await login_from(first, "198.51.100.2", "alice", "guess")).status_code == 401
        for instance in (first, second):
            assert_locked(await login_from(instance, "192.0.2.1", "alice", PASSWORD))
        with clean_redis.client() as inspect:
            keys = inspect.keys("prodio:t:*")
            assert "prodio:t:a:alice" in keys
            assert all(inspect.pttl(key) > 0 for key in keys)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_throttle_backend_down_fails_closed(
    tmp_path: Path, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prodio.audit")
    async with redis_instance(tmp_path, own_redis.url) as env:
        env.add_user("alice", PASSWORD)
        async with client_at(env, ATTACKER) as client:
            page = await client.get("/login")
            token = form_fields(page.text)["csrf_token"]
            own_redis.kill()
            response = await client.post(
                "/login",
                data={"username": "alice", "password": PASSWORD, "csrf_token": token},
                headers={"origin": BASE_URL},
            )
        assert response.status_code == 503
        assert session_cookie_of(response) is None
        assert "temporarily unavailable" in response.text
        [record] = [r for r in caplog.records if getattr(r, "outcome", "") == "unavailable"]
        assert record.reason == "login throttle backend unreachable"  # type: ignore[attr-defined]
        assert re.fullmatch(r"[0-9a-f]{32}", record.request_id)  # type: ignore[attr-defined]
        own_redis.start()
