"""PasswordAuthenticator on a real SQLite store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from prodio.users import (
    PasswordAuthenticator,
    PasswordHasher,
    SqlUserStore,
    SupportsHashUpgrade,
    User,
    UserStore,
    UserStoreUnavailable,
)
from prodio.users.authenticate import (
    MAX_USERNAME_INPUT_LENGTH,
    TEMPORARY_PASSWORD_EXPIRED,
    WRONG_CREDENTIALS,
    PasswordCheck,
)
from prodio.users.passwords import MAX_PASSWORD_LENGTH
from tests.users.support import CHEAP_ARGON2, free_port

PASSWORD = "correct horse battery staple"


class CountingHasher(PasswordHasher):
    """A cheap hasher that records every verification and the thread it ran in."""

    def __init__(self, **parameters: int) -> None:
        super().__init__(**{**CHEAP_ARGON2, **parameters})
        self.verified: list[str | None] = []
        self.threads: list[int] = []

    def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified.append(password_hash)
        self.threads.append(threading.get_ident())
        return super().verify(password_hash, password)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlUserStore]:
    store = SqlUserStore(f"sqlite:///{tmp_path / 'users.db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def alice(sqlite_store: SqlUserStore, hasher: CountingHasher) -> User:
    return sqlite_store.add("alice", hasher.hash(PASSWORD))


@pytest.fixture
def authenticator(sqlite_store: SqlUserStore, hasher: CountingHasher) -> PasswordAuthenticator:
    return PasswordAuthenticator(sqlite_store, hasher)


@pytest.mark.anyio
async def test_right_password_logs_in(
    authenticator: PasswordAuthenticator, hasher: CountingHasher, alice: User
) -> None:
    user = await authenticator.authenticate("alice", PASSWORD)
    assert user == alice
    assert hasher.verified == [alice.password_hash]


@pytest.mark.anyio
async def test_name_is_normalized(authenticator: PasswordAuthenticator, alice: User) -> None:
    user = await authenticator.authenticate("  ALICE ", PASSWORD)
    assert user is not None
    assert user.username == "alice"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("username", "password", "verified_hash"),
    [
        ("alice", "wrong password", "alice's"),
        ("alice", "", "alice's"),
        ("bob", PASSWORD, None),  # unknown user
        ("bad name!", PASSWORD, None),  # not a valid name at all
        ("", PASSWORD, None),
    ],
)
async def test_every_refusal_is_none_after_one_verification(
    authenticator: PasswordAuthenticator,
    hasher: CountingHasher,
    alice: User,
    username: str,
    password: str,
    verified_hash: str | None,
) -> None:
    assert await authenticator.authenticate(username, password) is None
    expected = alice.password_hash if verified_hash == "alice's" else None
    assert hasher.verified == [expected]


@pytest.mark.anyio
async def test_disabled_account_is_refused_after_one_verification(
    authenticator: PasswordAuthenticator,
    hasher: CountingHasher,
    sqlite_store: SqlUserStore,
    alice: User,
) -> None:
    sqlite_store.set_disabled("alice", True)
    assert await authenticator.authenticate("alice", PASSWORD) is None
    assert hasher.verified == [alice.password_hash]
    sqlite_store.set_disabled("alice", False)
    assert await authenticator.authenticate("alice", PASSWORD) is not None


@pytest.mark.anyio
async def test_overlong_input_is_refused_without_hashing(
    authenticator: PasswordAuthenticator, hasher: CountingHasher, alice: User
) -> None:
    megabyte = "x" * 1_000_000
    assert await authenticator.authenticate(megabyte, PASSWORD) is None
    assert await authenticator.authenticate("alice", megabyte) is None
    assert await authenticator.authenticate("a" * (MAX_USERNAME_INPUT_LENGTH + 1), PASSWORD) is None
    assert await authenticator.authenticate("alice", "p" * (MAX_PASSWORD_LENGTH + 1)) is None
    assert hasher.verified == []


@pytest.mark.anyio
async def test_longest_allowed_password_logs_in(
    authenticator: PasswordAuthenticator, hasher: CountingHasher, sqlite_store: SqlUserStore
) -> None:
    longest = "p" * MAX_PASSWORD_LENGTH
    sqlite_store.add("carol", hasher.hash(longest))
    user = await authenticator.authenticate("carol", longest)
    assert user is not None
    assert user.username == "carol"


@pytest.mark.anyio
async def test_outdated_hash_is_upgraded_after_a_successful_login(
    sqlite_store: SqlUserStore,
) -> None:
    weak = CountingHasher()
    old = sqlite_store.add("alice", weak.hash(PASSWORD))
    stronger = CountingHasher(time_cost=2)
    authenticator = PasswordAuthenticator(sqlite_store, stronger)

    assert await authenticator.authenticate("alice", "wrong password") is None
    unchanged = sqlite_store.get("alice")
    assert unchanged is not None
    assert unchanged.password_hash == old.password_hash

    user = await authenticator.authenticate("alice", PASSWORD)
    assert user is not None
    stored = sqlite_store.get("alice")
    assert stored is not None
    assert stored.password_hash != old.password_hash
    assert stored.password_hash.startswith("$argon2id$v=19$m=8,t=2,p=1$")
    assert user.password_hash == stored.password_hash
    assert stronger.needs_rehash(stored.password_hash) is False
    # Upgrading the hash is not changing the password.
    assert stored.password_changed_at == old.password_changed_at
    assert await authenticator.authenticate("alice", PASSWORD) is not None


@pytest.mark.anyio
async def test_current_hash_is_left_alone(
    authenticator: PasswordAuthenticator, sqlite_store: SqlUserStore, alice: User
) -> None:
    assert await authenticator.authenticate("alice", PASSWORD) is not None
    stored = sqlite_store.get("alice")
    assert stored is not None
    assert stored.password_hash == alice.password_hash


class _StoreWithoutUpgrade:
    """A UserStore that offers only the protocol's methods (no hash upgrade)."""

    def __init__(self, inner: SqlUserStore) -> None:
        self._inner = inner
        self.migrate = inner.migrate
        self.get = inner.get
        self.add = inner.add
        self.list = inner.list
        self.count = inner.count
        self.set_password_hash = inner.set_password_hash
        self.set_disabled = inner.set_disabled
        self.renew_session_epoch = inner.renew_session_epoch
        self.remove = inner.remove
        self.ping = inner.ping
        self.close = inner.close


@pytest.mark.anyio
async def test_store_without_hash_upgrade_still_logs_in(sqlite_store: SqlUserStore) -> None:
    old = sqlite_store.add("alice", CountingHasher().hash(PASSWORD))
    plain = _StoreWithoutUpgrade(sqlite_store)
    assert isinstance(plain, UserStore)
    assert not isinstance(plain, SupportsHashUpgrade)
    authenticator = PasswordAuthenticator(plain, CountingHasher(time_cost=2))
    assert await authenticator.authenticate("alice", PASSWORD) is not None
    stored = sqlite_store.get("alice")
    assert stored is not None
    # set_password_hash is not used instead: it would move password_changed_at.
    assert stored.password_hash == old.password_hash


class _UpgradeFails(_StoreWithoutUpgrade):
    def upgrade_password_hash(self, username: str, old_hash: str, new_hash: str) -> bool:
        raise UserStoreUnavailable("user database sqlite:///x is unavailable: disk I/O error")


@pytest.mark.anyio
async def test_failed_hash_upgrade_does_not_fail_the_login(
    sqlite_store: SqlUserStore, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite_store.add("alice", CountingHasher().hash(PASSWORD))
    authenticator = PasswordAuthenticator(_UpgradeFails(sqlite_store), CountingHasher(time_cost=2))
    with caplog.at_level(logging.WARNING, logger="prodio.users.authenticate"):
        user = await authenticator.authenticate("alice", PASSWORD)
    assert user is not None
    assert "could not upgrade the password hash of alice" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.anyio
async def test_unreachable_store_propagates(hasher: CountingHasher) -> None:
    store = SqlUserStore(f"postgresql://prodio:pw@127.0.0.1:{free_port()}/test")
    try:
        authenticator = PasswordAuthenticator(store, hasher)
        with pytest.raises(UserStoreUnavailable):
            await authenticator.authenticate("alice", PASSWORD)
    finally:
        store.close()


class _BlockingStore(_StoreWithoutUpgrade):
    """get() holds its thread until a task on the event loop has run, and records where
    it ran: if the authenticator called it on the loop, that task could never run."""

    def __init__(self, inner: SqlUserStore, loop_ran: threading.Event) -> None:
        super().__init__(inner)
        self._loop_ran = loop_ran
        self.saw_loop_run = False
        self.threads: list[int] = []
        self.get = self._get

    def _get(self, username: str) -> User | None:
        self.threads.append(threading.get_ident())
        # Bounded so that a regression fails instead of hanging the suite.
        self.saw_loop_run = self._loop_ran.wait(timeout=10)
        return self._inner.get(username)


@pytest.mark.anyio
async def test_store_and_verify_run_off_the_event_loop_in_one_thread(
    sqlite_store: SqlUserStore, alice: User, hasher: CountingHasher
) -> None:
    loop_ran = threading.Event()
    store = _BlockingStore(sqlite_store, loop_ran)
    authenticator = PasswordAuthenticator(store, hasher)
    result: list[User | None] = []

    async def log_in() -> None:
        result.append(await authenticator.authenticate("alice", PASSWORD))

    async def other_task() -> None:
        loop_ran.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(log_in)
        await anyio.lowlevel.checkpoint()  # log_in starts first
        tasks.start_soon(other_task)

    assert result == [alice]
    assert store.saw_loop_run is True
    loop_thread = threading.get_ident()
    assert store.threads[0] != loop_thread
    # One hop: the database read and the verification shared a worker thread.
    assert hasher.threads == store.threads


class FixedClock:
    """The authenticator's clock, set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


LIFETIME = 3600


@pytest.mark.anyio
async def test_a_temporary_password_expires_after_its_lifetime_at_the_same_cost(
    sqlite_store: SqlUserStore,
) -> None:
    weak = CountingHasher()
    carol = sqlite_store.add("carol", weak.hash(PASSWORD), must_change_password=True)
    # A stronger hasher than the stored hash's: a success upgrades the hash, which costs a
    # second hash. An expired password must not: it would take longer than a wrong one.
    stronger = CountingHasher(time_cost=2)
    clock = FixedClock(carol.password_changed_at + timedelta(seconds=LIFETIME))
    authenticator = PasswordAuthenticator(
        sqlite_store, stronger, temporary_password_lifetime=LIFETIME, clock=clock
    )

    expired = await authenticator.check("carol", PASSWORD)
    wrong = await authenticator.check("carol", "wrong password")
    assert expired == PasswordCheck(None, TEMPORARY_PASSWORD_EXPIRED)
    assert wrong == PasswordCheck(None, WRONG_CREDENTIALS)
    assert await authenticator.authenticate("carol", PASSWORD) is None
    # One verification each, and nothing stored: the hash was not upgraded.
    assert stronger.verified == [carol.password_hash] * 3
    assert sqlite_store.get("carol") == carol

    clock.now -= timedelta(seconds=1)  # one second younger: still within its lifetime
    ok = await authenticator.check("carol", PASSWORD)
    assert ok.user is not None
    assert ok.user.must_change_password is True
    assert ok.refusal is None


@pytest.mark.anyio
async def test_only_the_right_password_of_an_enabled_account_is_told_expired(
    sqlite_store: SqlUserStore, hasher: CountingHasher
) -> None:
    carol = sqlite_store.add("carol", hasher.hash(PASSWORD), must_change_password=True)
    clock = FixedClock(carol.password_changed_at + timedelta(days=30))
    authenticator = PasswordAuthenticator(sqlite_store, hasher, clock=clock)
    assert (await authenticator.check("carol", "wrong password")).refusal == WRONG_CREDENTIALS
    sqlite_store.set_disabled("carol", True)
    assert (await authenticator.check("carol", PASSWORD)).refusal == WRONG_CREDENTIALS


@pytest.mark.anyio
async def test_a_password_the_user_chose_never_expires(
    sqlite_store: SqlUserStore, hasher: CountingHasher, alice: User
) -> None:
    clock = FixedClock(alice.password_changed_at + timedelta(days=3650))
    authenticator = PasswordAuthenticator(sqlite_store, hasher, clock=clock)
    assert (await authenticator.check("alice", PASSWORD)).user == alice


@pytest.mark.anyio
async def test_the_default_lifetime_is_72_hours(
    sqlite_store: SqlUserStore, hasher: CountingHasher
) -> None:
    carol = sqlite_store.add("carol", hasher.hash(PASSWORD), must_change_password=True)
    clock = FixedClock(carol.password_changed_at + timedelta(hours=72) - timedelta(seconds=1))
    authenticator = PasswordAuthenticator(sqlite_store, hasher, clock=clock)
    assert authenticator.temporary_password_lifetime == 72 * 3600
    assert (await authenticator.check("carol", PASSWORD)).user is not None
    clock.now += timedelta(seconds=1)
    assert (await authenticator.check("carol", PASSWORD)).refusal == TEMPORARY_PASSWORD_EXPIRED
    with pytest.raises(ValueError, match="positive"):
        PasswordAuthenticator(sqlite_store, hasher, temporary_password_lifetime=0)
