"""RedisSessionStore through Redis Sentinel: settings, the session basics, failovers.

Real processes only: a master ``redis-server``, a Sentinel monitoring it (quorum 1, so it
alone decides), and for the failovers a replica that the Sentinel promotes, once the
master is killed or on ``SENTINEL FAILOVER``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedConnection

from prodio.config import Settings, SettingsError, load_settings
from prodio.session import (
    RedisSessionStore,
    SessionStoreUnavailable,
    SessionTimeouts,
    build_session_store,
)
from prodio.session.factory import build_login_throttle
from prodio.session.redis import SENTINEL_MASTER_RECHECK_SECONDS, check_sentinel_master_url
from tests.redis_server import RedisServer, SentinelServer, free_port

pytestmark = pytest.mark.anyio
logger = logging.getLogger(__name__)

TIMEOUTS = SessionTimeouts(idle=60, absolute=120)
SERVICE = "prodio-master"
MASTER_PASSWORD = "master-pw-7f3a"
SENTINEL_PASSWORD = "sentinel-pw-91c2"
SOCKET_TIMEOUT = 0.5
# Guards against a hang only: a failure must come within a few socket timeouts.
HANG_GUARD = SOCKET_TIMEOUT * 4 + 2
# Above WAIT's 1 s, which the failover tests send through the store's client.
FAILOVER_SOCKET_TIMEOUT = 2.0
# How long the failover test waits for the Sentinel to promote the replica at most.
FAILOVER_GUARD = 30.0


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def no_prodio_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read PRODIO_* variables: make sure none from the caller's shell leak in."""
    for name in list(os.environ):
        if name.startswith("PRODIO_"):
            monkeypatch.delenv(name)


class SentinelSet:
    """A password-protected master and one password-protected Sentinel monitoring it."""

    def __init__(self, directory: Path) -> None:
        self.master = RedisServer(
            directory / "master", extra_args=["--requirepass", MASTER_PASSWORD]
        )
        self.sentinel = SentinelServer(
            directory / "sentinel",
            master_port=0,
            service=SERVICE,
            master_password=MASTER_PASSWORD,
            password=SENTINEL_PASSWORD,
        )

    def start(self) -> None:
        self.master.start()
        self.sentinel.master_port = self.master.port
        self.sentinel.start()

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()

    def store(self, **options: Any) -> RedisSessionStore:
        values: dict[str, Any] = {
            "master_url": f"redis://:{MASTER_PASSWORD}@/0",
            "sentinel_password": SENTINEL_PASSWORD,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
        }
        values.update(options)
        return RedisSessionStore.from_sentinel([self.sentinel.address], SERVICE, TIMEOUTS, **values)

    def settings(self, **values: Any) -> Settings:
        host, port = self.sentinel.address
        return _settings(
            session_backend="redis",
            redis_sentinels=f"{host}:{port}",
            redis_sentinel_service=SERVICE,
            redis_sentinel_password=SENTINEL_PASSWORD,
            redis_url=f"redis://:{MASTER_PASSWORD}@/0",
            **values,
        )


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path_factory.mktemp("sentinel-set"))
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def clean_set(sentinel_set: SentinelSet) -> SentinelSet:
    with sentinel_set.master.client(MASTER_PASSWORD) as client:
        client.flushall()
    return sentinel_set


@pytest.fixture
async def store(clean_set: SentinelSet) -> AsyncIterator[RedisSessionStore]:
    store = clean_set.store()
    yield store
    await store.aclose()


# --- the session basics through the Sentinel ----------------------------------------------


async def test_sessions_live_on_the_master_that_the_sentinel_names(
    store: RedisSessionStore, clean_set: SentinelSet
) -> None:
    await store.ping()
    session = await store.create("alice", {"tab": "home"})
    with clean_set.master.client(MASTER_PASSWORD) as client:
        assert client.hget(f"prodio:s:{session.id}", "username") == "alice"
        # The database of the URL's path: db 0 here, nothing anywhere else.
        assert client.dbsize() == 2

    loaded = await store.load(session.id)
    assert loaded is not None
    assert (loaded.username, loaded.data) == ("alice", {"tab": "home"})

    assert await store.update(session.id, {"count": 3}, remove=["tab"])
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"count": 3}

    second = await store.create("alice")
    assert await store.delete(session.id)
    assert await store.load(session.id) is None
    assert await store.delete_user_sessions("alice") == 1
    assert await store.load(second.id) is None


async def test_the_url_database_is_used(clean_set: SentinelSet) -> None:
    store = clean_set.store(master_url=f"redis://:{MASTER_PASSWORD}@/3")
    try:
        session = await store.create("bob")
    finally:
        await store.aclose()
    with clean_set.master.client(MASTER_PASSWORD) as client:
        assert client.dbsize() == 0
        client.select(3)
        assert client.exists(f"prodio:s:{session.id}") == 1


async def test_a_dead_sentinel_in_the_list_is_skipped(clean_set: SentinelSet) -> None:
    nobody = ("127.0.0.1", free_port())
    store = RedisSessionStore.from_sentinel(
        [nobody, clean_set.sentinel.address],
        SERVICE,
        TIMEOUTS,
        master_url=f"redis://:{MASTER_PASSWORD}@/0",
        sentinel_password=SENTINEL_PASSWORD,
        socket_timeout=SOCKET_TIMEOUT,
    )
    try:
        session = await store.create("carol")
        assert await store.load(session.id) is not None
    finally:
        await store.aclose()


# --- built from the settings ---------------------------------------------------------------


async def test_the_factory_builds_the_sentinel_store_and_throttle_from_settings(
    clean_set: SentinelSet,
) -> None:
    settings = clean_set.settings(redis_key_prefix="app1:", redis_socket_timeout=SOCKET_TIMEOUT)
    store = build_session_store(settings)
    try:
        assert isinstance(store, RedisSessionStore)
        session = await store.create("alice")
        throttle = build_login_throttle(settings, store)
        attempt = await throttle.begin("alice", "192.0.2.7")
        assert attempt.allowed
        assert attempt.account_failures == 0  # in flight: not a failure
        with clean_set.master.client(MASTER_PASSWORD) as client:
            assert client.exists(f"app1:s:{session.id}") == 1
            # The throttle counts in the same Redis, through the store's client.
            assert any(key.startswith("app1:t:") for key in client.scan_iter())
    finally:
        await store.aclose()


def test_sentinel_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODIO_SESSION_BACKEND", "redis")
    monkeypatch.setenv("PRODIO_REDIS_SENTINELS", " sentinel-1:26379, 10.0.0.2:26380 ,[::1]:26381")
    monkeypatch.setenv("PRODIO_REDIS_SENTINEL_SERVICE", "mymaster")
    monkeypatch.setenv("PRODIO_REDIS_SENTINEL_PASSWORD", "s3cret-sentinel")
    settings = load_settings(data_dir=tmp_path)
    assert settings.redis_sentinels == ["sentinel-1:26379", "10.0.0.2:26380", "[::1]:26381"]
    assert settings.redis_sentinel_service == "mymaster"
    assert settings.redis_url is None
    assert "s3cret-sentinel" not in repr(settings)

    monkeypatch.setenv("PRODIO_REDIS_SENTINELS", '["a:1", "b:2"]')
    assert load_settings(data_dir=tmp_path).redis_sentinels == ["a:1", "b:2"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis_sentinels": "sentinel-1"},
            "PRODIO_REDIS_SENTINELS: 'sentinel-1' is not host:port",
        ),
        ({"redis_sentinels": "a:1,b:"}, "PRODIO_REDIS_SENTINELS: 'b:' has no valid port"),
        ({"redis_sentinels": "a:70000"}, "has no valid port (1-65535)"),
        ({"redis_sentinels": "::1:26379"}, "put an IPv6 address in brackets"),
        ({"redis_sentinels": "[::1:26379"}, "is not [IPv6 address]:port"),
        ({"redis_sentinels": "a b:1"}, "has a space"),
        ({"redis_sentinels": "[not json"}, "is not a valid JSON list"),
        ({"redis_sentinels": "redis://:hunter2-pw@host:26379"}, "not URLs"),
        ({"redis_sentinels": "a:1"}, "needs PRODIO_REDIS_SENTINEL_SERVICE"),
        ({"redis_sentinels": "a:1", "redis_sentinel_service": "my master"}, "without spaces"),
        ({"redis_sentinel_service": "mymaster"}, "need PRODIO_REDIS_SENTINELS"),
        ({"redis_sentinel_password": "hunter2-pw"}, "need PRODIO_REDIS_SENTINELS"),
        (
            {
                "redis_sentinels": "a:1",
                "redis_sentinel_service": "m",
                "redis_url": "redis://:hunter2-pw@old-host:6379/0",
            },
            "not its host",
        ),
        (
            {
                "redis_sentinels": "a:1",
                "redis_sentinel_service": "m",
                "redis_url": "unix://:hunter2-pw@/run/redis.sock",
            },
            "must start with redis:// or rediss://",
        ),
        ({}, "needs PRODIO_REDIS_URL, or PRODIO_REDIS_SENTINELS"),
    ],
)
def test_bad_sentinel_settings_are_refused_clearly(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(data_dir=tmp_path, session_backend="redis", **values)
    assert message in str(caught.value)
    assert "hunter2-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_sentinels": ["nonsense"]}, "PRODIO_REDIS_SENTINELS: 'nonsense' is not"),
        ({"redis_sentinels": ["a:1"], "redis_sentinel_service": None}, "SENTINEL_SERVICE"),
        (
            {
                "redis_sentinels": ["a:1"],
                "redis_sentinel_service": "m",
                "redis_url": "redis://:hunter2-pw@host/0",
            },
            "PRODIO_REDIS_URL",
        ),
    ],
)
def test_hand_built_settings_still_fail_clearly_in_the_factory(
    values: dict[str, Any], message: str
) -> None:
    # Settings refuse these themselves; one built without validation must still fail clearly.
    settings = Settings.model_construct(session_backend="redis", **values)
    with pytest.raises(SettingsError, match=message) as caught:
        build_session_store(settings)
    assert "hunter2-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("sentinels", "service", "options", "message"),
    [
        ([], SERVICE, {}, "at least one Sentinel"),
        ([("127.0.0.1", 0)], SERVICE, {}, "is not host:port"),
        ([("", 26379)], SERVICE, {}, "is not host:port"),
        ([("127.0.0.1", 26379)], "", {}, "service name"),
        ([("127.0.0.1", 26379)], SERVICE, {"socket_timeout": 0}, "must be positive"),
        ([("127.0.0.1", 26379)], SERVICE, {"max_connections": 0}, "at least one connection"),
        ([("127.0.0.1", 26379)], SERVICE, {"master_url": "redis://:hunter2-pw@h/0"}, "host"),
    ],
)
def test_unusable_sentinel_options_are_refused(
    sentinels: list[tuple[str, int]], service: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        RedisSessionStore.from_sentinel(sentinels, service, TIMEOUTS, **options)
    assert "hunter2-pw" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis:///0", "redis://:pw@/2", "rediss://user:pw@/0"])
def test_master_urls_without_a_host_are_accepted(url: str) -> None:
    check_sentinel_master_url(url)


async def test_a_rediss_master_url_asks_for_tls_with_its_options(tmp_path: Path) -> None:
    store = RedisSessionStore.from_sentinel(
        [("127.0.0.1", 26379)],
        SERVICE,
        TIMEOUTS,
        master_url=f"rediss://:pw@/2?ssl_ca_certs={tmp_path / 'ca.crt'}",
    )
    try:
        options = store.client.connection_pool.connection_kwargs
        connection_class = store.client.connection_pool.connection_class
    finally:
        await store.aclose()
    assert issubclass(connection_class, SSLConnection)
    assert issubclass(connection_class, SentinelManagedConnection)
    assert (options["db"], options["password"]) == (2, "pw")
    assert options["ssl_ca_certs"] == str(tmp_path / "ca.crt")


# --- failures: unreachable, hung, wrong passwords, unknown service ------------------------


async def test_unreachable_sentinels_are_unavailable_not_a_hang() -> None:
    nobody = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]
    store = RedisSessionStore.from_sentinel(
        nobody, SERVICE, TIMEOUTS, socket_timeout=SOCKET_TIMEOUT
    )
    try:
        with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable) as caught:
            await store.ping()
        with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable):
            await store.create("alice")
    finally:
        await store.aclose()
    message = str(caught.value)
    assert f"no Sentinel named a live master for {SERVICE!r}" in message
    assert f"Sentinel 127.0.0.1:{nobody[1][1]}: ConnectionError" in message


async def test_a_hung_sentinel_is_unavailable_within_the_timeout(
    clean_set: SentinelSet, tmp_path: Path
) -> None:
    hung = SentinelServer(tmp_path / "hung", master_port=clean_set.master.port, service=SERVICE)
    hung.start()
    store = RedisSessionStore.from_sentinel(
        [hung.address],
        SERVICE,
        TIMEOUTS,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
    )
    try:
        hung.pause()
        for operation in (store.ping, lambda: store.create("alice")):
            with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable):
                await operation()
    finally:
        hung.stop()
        await store.aclose()


async def test_open_connections_outlive_the_sentinels(
    clean_set: SentinelSet, tmp_path: Path
) -> None:
    own = SentinelServer(
        tmp_path / "own",
        master_port=clean_set.master.port,
        service=SERVICE,
        master_password=MASTER_PASSWORD,
    )
    own.start()
    store = RedisSessionStore.from_sentinel(
        [own.address],
        SERVICE,
        TIMEOUTS,
        master_url=f"redis://:{MASTER_PASSWORD}@/0",
        socket_timeout=SOCKET_TIMEOUT,
    )
    try:
        session = await store.create("frank")
        own.kill()
        # The master it found still answers; only a new connection would need a Sentinel.
        for step in range(3):
            assert await store.update(session.id, {"step": step})
            await anyio.sleep(SENTINEL_MASTER_RECHECK_SECONDS / 2)
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"step": 2}
    finally:
        own.stop()
        await store.aclose()


async def test_an_unknown_service_is_unavailable(clean_set: SentinelSet) -> None:
    store = RedisSessionStore.from_sentinel(
        [clean_set.sentinel.address],
        "no-such-service",
        TIMEOUTS,
        sentinel_password=SENTINEL_PASSWORD,
        socket_timeout=SOCKET_TIMEOUT,
    )
    try:
        with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable) as caught:
            await store.create("alice")
    finally:
        await store.aclose()
    assert "monitors no master named 'no-such-service'" in str(caught.value)


@pytest.mark.parametrize("wrong", ["sentinel", "master"])
async def test_wrong_passwords_are_unavailable_and_never_shown(
    clean_set: SentinelSet, wrong: str
) -> None:
    bad = "wr0ng-pw-5150"
    options = (
        {"sentinel_password": bad} if wrong == "sentinel" else {"master_url": f"redis://:{bad}@/0"}
    )
    store = clean_set.store(**options)
    try:
        with anyio.fail_after(HANG_GUARD), pytest.raises(SessionStoreUnavailable) as caught:
            await store.create("alice")
    finally:
        await store.aclose()
    message = str(caught.value)
    for secret in (bad, MASTER_PASSWORD, SENTINEL_PASSWORD):
        assert secret not in message
    assert "invalid username-password pair" in message or "WRONGPASS" in message


# --- failover ---------------------------------------------------------------------------


@pytest.fixture
def failover_set(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, SentinelServer]]:
    """A master, a replica of it in sync, and a Sentinel that knows both."""
    # No 5 s pause before the initial sync (diskless sync waits for more replicas).
    master = RedisServer(tmp_path / "master", extra_args=["--repl-diskless-sync-delay", "0"])
    master.start()
    replica = RedisServer(
        tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(master.port)]
    )
    sentinel = SentinelServer(tmp_path / "sentinel", master_port=master.port, service=SERVICE)
    try:
        replica.start()
        _wait_for(lambda: _replica_in_sync(replica), "the replica to sync with the master")
        # Started after the replica is attached, so its first INFO of the master lists it.
        sentinel.start()
        _wait_for(lambda: replica.port in sentinel.known_replicas(), "Sentinel to see the replica")
        yield master, replica, sentinel
    finally:
        # Nothing to keep, and a master would wait for its replicas before a clean shutdown.
        for server in (sentinel, replica, master):
            server.kill()


def _replica_in_sync(replica: RedisServer) -> bool:
    with replica.client() as client:
        return client.info("replication").get("master_link_status") == "up"


def _wait_for(condition: Any, what: str, limit: float = FAILOVER_GUARD) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


async def test_the_store_follows_a_failover_to_the_promoted_replica(
    failover_set: tuple[RedisServer, RedisServer, SentinelServer],
) -> None:
    master, replica, sentinel = failover_set
    store = RedisSessionStore.from_sentinel(
        [sentinel.address], SERVICE, TIMEOUTS, socket_timeout=FAILOVER_SOCKET_TIMEOUT
    )
    try:
        sessions = [await store.create(f"user{n}", {"n": n}) for n in range(5)]
        assert await store.update(sessions[0].id, {"note": "before failover"})
        # Writes are acknowledged before they reach the replica: wait until they have.
        assert await store.client.execute_command("WAIT", 1, 1000) == 1
        assert sentinel.master_address() == ("127.0.0.1", master.port)

        master.kill()
        killed_at = time.monotonic()
        failed_operations = 0
        with anyio.fail_after(FAILOVER_GUARD):
            while True:
                try:
                    recovered = await store.load(sessions[0].id)
                    break
                except SessionStoreUnavailable:
                    failed_operations += 1
                    await anyio.sleep(0.05)
        # A figure for the docs, not an assert (see bench/ for speed).
        logger.info(
            "failover: %.2f s from the kill to the first answer, %d operations failed",
            time.monotonic() - killed_at,
            failed_operations,
        )

        assert sentinel.master_address() == ("127.0.0.1", replica.port)
        assert recovered is not None
        assert recovered.data == {"n": 0, "note": "before failover"}
        for n, session in enumerate(sessions[1:], start=1):
            loaded = await store.load(session.id)
            assert loaded is not None
            assert (loaded.username, loaded.data) == (f"user{n}", {"n": n})

        # Writing works on the new master (the scripts are loaded there afresh).
        assert await store.update(sessions[1].id, {"after": True})
        fresh = await store.create("dave")
        with replica.client() as client:
            assert client.hget(f"prodio:s:{fresh.id}", "username") == "dave"
            assert client.hget(f"prodio:s:{sessions[1].id}", "d:after") == "true"
        assert await store.delete(sessions[2].id)
        assert await store.load(sessions[2].id) is None
        await store.ping()
    finally:
        await store.aclose()


async def test_a_planned_failover_moves_writes_off_the_old_master_before_it_drops_them(
    failover_set: tuple[RedisServer, RedisServer, SentinelServer],
) -> None:
    # SENTINEL FAILOVER with the master alive: it stays a master, taking writes, for some
    # ten seconds after the Sentinel names the replica; then it is demoted and those writes
    # are gone. The store must stop writing to it before then, by itself.
    master, replica, sentinel = failover_set

    def store() -> RedisSessionStore:
        return RedisSessionStore.from_sentinel(
            [sentinel.address], SERVICE, TIMEOUTS, socket_timeout=FAILOVER_SOCKET_TIMEOUT
        )

    idle, broken = store(), store()
    # This one never asks the Sentinels on its own, only when a connection (re)connects.
    broken.client.connection_pool.master_recheck_interval = math.inf
    try:
        session = await idle.create("erin", {"step": 1})
        assert await idle.client.execute_command("WAIT", 1, 1000) == 1
        assert await broken.load(session.id) is not None

        with sentinel.client() as client:
            assert client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        _wait_for(lambda: _master_port_reported(sentinel) == replica.port, "the failover")
        assert not _is_replica(master), "the old master is demoted only seconds later"

        # An idle pool: the next operation after the recheck interval asks the Sentinels.
        await anyio.sleep(SENTINEL_MASTER_RECHECK_SECONDS)
        assert await idle.update(session.id, {"step": 2})
        # A broken connection (as when the Sentinel kills the old master's clients): its
        # one retry reconnects to the master the Sentinels name, not to the old address.
        with master.client() as client:
            client.client_kill_filter(_type="normal", skipme=True)
        assert await broken.update(session.id, {"other": "x"})

        with replica.client() as client:
            assert client.hget(f"prodio:s:{session.id}", "d:step") == "2"
            assert client.hget(f"prodio:s:{session.id}", "d:other") == '"x"'
        with master.client() as client:
            assert client.hget(f"prodio:s:{session.id}", "d:step") == "1"
            assert client.hget(f"prodio:s:{session.id}", "d:other") is None
    finally:
        await idle.aclose()
        await broken.aclose()


def _master_port_reported(sentinel: SentinelServer) -> int:
    """The master's port as ``SENTINEL MASTERS`` lists it, which is what clients go by."""
    with sentinel.client() as client:
        return int(client.sentinel_master(SERVICE)["port"])


def _is_replica(server: RedisServer) -> bool:
    with server.client() as client:
        return client.info("replication").get("role") == "slave"
