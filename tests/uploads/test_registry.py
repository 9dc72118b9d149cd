"""The upload registry contract, for every backend: memory, and a real redis-server:
ownership records of files, and bindings of Gradio sessions to users.

The TTL is short so that records expire in real time for Redis's server-side TTLs too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from prodio.config import MAX_UPLOAD_LIFETIME, MIN_UPLOAD_LIFETIME, SettingsError, load_settings
from prodio.session import InMemorySessionStore, RedisSessionStore, SessionTimeouts
from prodio.uploads import (
    InMemoryUploadRegistry,
    Ownership,
    RedisUploadRegistry,
    UploadRegistry,
    UploadRegistryUnavailable,
    build_upload_registry,
    cleanup_interval,
    file_key,
    progress_key,
    record_ttl,
    session_binding_ttl,
    session_key,
)
from prodio.uploads.base import GRADIO_CLOSED_SESSION_SECONDS, renew_after
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TTL = 0.4
PAST_TTL = TTL + 0.15
KEY = "file:/tmp/gradio/0123abcd/report.pdf"
OTHER_KEY = "file:/tmp/gradio/4567ef01/photo.png"
SESSION = "k3j5h2l1m9x"  # a browser's session hash
OTHER_SESSION = "p0o9i8u7y6t"


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[UploadRegistry]:
    if request.param == "memory":
        yield InMemoryUploadRegistry(TTL)
        return
    server: RedisServer = request.getfixturevalue("clean_redis")
    redis_registry = RedisUploadRegistry(
        Redis.from_url(server.url, decode_responses=True), TTL, owns_client=True
    )
    yield redis_registry
    await redis_registry.aclose()


# --- the contract ------------------------------------------------------------------------


async def test_a_key_nobody_recorded_is_unrecorded(registry: UploadRegistry) -> None:
    assert await registry.ownership("alice", KEY) is Ownership.UNRECORDED
    assert await registry.ownership(None, KEY) is Ownership.UNRECORDED


async def test_the_uploader_owns_it_and_nobody_else(registry: UploadRegistry) -> None:
    await registry.record("alice", [KEY])
    assert await registry.ownership("alice", KEY) is Ownership.OWNER
    assert await registry.ownership("bob", KEY) is Ownership.OTHERS
    assert await registry.ownership(None, KEY) is Ownership.OTHERS
    assert await registry.ownership("", KEY) is Ownership.OTHERS


async def test_the_same_upload_by_two_users_belongs_to_both(registry: UploadRegistry) -> None:
    await registry.record("alice", [KEY])
    await registry.record("bob", [KEY])
    assert await registry.ownership("alice", KEY) is Ownership.OWNER
    assert await registry.ownership("bob", KEY) is Ownership.OWNER
    assert await registry.ownership("carol", KEY) is Ownership.OTHERS


async def test_one_call_records_every_file_of_an_upload(registry: UploadRegistry) -> None:
    await registry.record("alice", [KEY, OTHER_KEY])
    assert await registry.ownership("bob", KEY) is Ownership.OTHERS
    assert await registry.ownership("bob", OTHER_KEY) is Ownership.OTHERS
    assert await registry.ownership("alice", OTHER_KEY) is Ownership.OWNER


async def test_keys_are_independent(registry: UploadRegistry) -> None:
    await registry.record("alice", [KEY])
    assert await registry.ownership("bob", OTHER_KEY) is Ownership.UNRECORDED
    # An upload id spelled like a path is not that path.
    assert await registry.ownership("bob", progress_key(KEY)) is Ownership.UNRECORDED


async def test_recording_nothing_changes_nothing(registry: UploadRegistry) -> None:
    await registry.record("alice", [])
    assert await registry.ownership("bob", KEY) is Ownership.UNRECORDED


async def test_a_record_ends_after_its_ttl(registry: UploadRegistry) -> None:
    assert registry.ttl == TTL
    await registry.record("alice", [KEY])
    await anyio.sleep(PAST_TTL)
    assert await registry.ownership("bob", KEY) is Ownership.UNRECORDED


async def test_recording_again_restarts_the_ttl_for_every_owner(registry: UploadRegistry) -> None:
    """The same bytes uploaded again are written again (Gradio renames them into place, so
    the file's age restarts): the first owner keeps it as long as the file lives."""
    await registry.record("alice", [KEY])
    await anyio.sleep(TTL * 0.6)
    await registry.record("bob", [KEY])
    await anyio.sleep(TTL * 0.6)
    assert await registry.ownership("alice", KEY) is Ownership.OWNER
    assert await registry.ownership("carol", KEY) is Ownership.OTHERS


async def test_ping_answers(registry: UploadRegistry) -> None:
    await registry.ping()


# --- Gradio sessions: the contract ------------------------------------------------------


async def test_a_session_is_bound_to_its_first_user(registry: UploadRegistry) -> None:
    assert await registry.bind_session("alice", SESSION) is Ownership.OWNER
    assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
    assert await registry.bind_session("alice", SESSION) is Ownership.OWNER
    # Refused twice, still not bob's; another hash is bob's to take.
    assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
    assert await registry.bind_session("bob", OTHER_SESSION) is Ownership.OWNER
    assert await registry.bind_session("alice", OTHER_SESSION) is Ownership.OTHERS


async def test_nobody_signed_in_binds_no_session(registry: UploadRegistry) -> None:
    assert await registry.bind_session(None, SESSION) is Ownership.UNRECORDED
    assert await registry.bind_session("bob", SESSION) is Ownership.OWNER
    assert await registry.bind_session(None, SESSION) is Ownership.OTHERS


async def test_hashes_of_any_spelling_are_distinct_sessions(registry: UploadRegistry) -> None:
    """Gradio compares hashes as strings: so does the registry, whatever they hold."""
    spellings = ["", " ", SESSION.upper(), SESSION + "\n", "\ud800", "x" * 100_000, "é", "e\u0301"]
    assert await registry.bind_session("alice", SESSION) is Ownership.OWNER
    for spelling in spellings:
        assert await registry.bind_session("bob", spelling) is Ownership.OWNER, spelling
        assert await registry.bind_session("alice", spelling) is Ownership.OTHERS, spelling


async def test_sessions_and_files_do_not_mix(registry: UploadRegistry) -> None:
    await registry.record("alice", [session_key(SESSION), KEY])
    assert await registry.bind_session("bob", SESSION) is Ownership.OWNER
    assert await registry.bind_session("bob", KEY) is Ownership.OWNER
    assert await registry.ownership("bob", KEY) is Ownership.OTHERS


async def test_a_binding_ends_a_ttl_after_its_last_use(registry: UploadRegistry) -> None:
    assert registry.session_ttl == TTL
    await registry.bind_session("alice", SESSION)
    await anyio.sleep(TTL * 0.6)
    await registry.bind_session("alice", SESSION)  # used again: renewed
    await anyio.sleep(TTL * 0.6)
    assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
    await anyio.sleep(PAST_TTL)
    assert await registry.bind_session("bob", SESSION) is Ownership.OWNER


async def test_a_refusal_does_not_renew_the_binding(registry: UploadRegistry) -> None:
    await registry.bind_session("alice", SESSION)
    for _ in range(3):
        await anyio.sleep(TTL * 0.3)
        assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
    await anyio.sleep(TTL * 0.3)
    assert await registry.bind_session("bob", SESSION) is Ownership.OWNER


# --- memory ------------------------------------------------------------------------------


async def test_memory_forgets_expired_records() -> None:
    now = [0.0]
    registry = InMemoryUploadRegistry(10, clock=lambda: now[0])
    await registry.record("alice", [KEY, OTHER_KEY])
    assert len(registry) == 2
    now[0] = 5
    await registry.record("bob", [KEY])  # moves KEY's end to 15
    now[0] = 11
    assert await registry.ownership("carol", OTHER_KEY) is Ownership.UNRECORDED
    assert len(registry) == 1
    assert await registry.ownership("alice", KEY) is Ownership.OWNER


def test_a_registry_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError, match="positive"):
        InMemoryUploadRegistry(0)
    with pytest.raises(ValueError, match="positive"):
        InMemoryUploadRegistry(10, session_ttl=0)


async def test_memory_forgets_expired_bindings_and_keeps_no_hash() -> None:
    now = [0.0]
    registry = InMemoryUploadRegistry(10, session_ttl=20, clock=lambda: now[0])
    long_hash = "x" * 1_000_000
    await registry.bind_session("alice", long_hash)
    await registry.bind_session("alice", OTHER_SESSION)
    # Kept under a digest: a long hash costs no more than a short one.
    assert max(map(len, registry._bindings)) < 100
    now[0] = 15
    await registry.bind_session("alice", OTHER_SESSION)  # renewed: ends at 35
    now[0] = 21
    assert await registry.bind_session("bob", SESSION) is Ownership.OWNER
    assert registry.session_count == 2  # the long hash's binding is gone
    assert await registry.bind_session("bob", OTHER_SESSION) is Ownership.OTHERS


# --- Redis -------------------------------------------------------------------------------


async def test_redis_keys_expire_and_do_not_name_the_file(clean_redis: RedisServer) -> None:
    registry = RedisUploadRegistry(
        Redis.from_url(clean_redis.url, decode_responses=True),
        3600,
        key_prefix="app1:",
        owns_client=True,
    )
    try:
        await registry.record("alice", [KEY])
    finally:
        await registry.aclose()
    with clean_redis.client() as client:
        keys = list(client.scan_iter(match="*"))
        assert keys == [registry.redis_key(KEY)]
        [name] = keys
        assert name.startswith("app1:f:")
        assert "report" not in name
        assert 3590_000 < client.pttl(name) <= 3600_000
        assert client.smembers(name) == {"alice"}


async def test_instances_sharing_redis_share_the_records(clean_redis: RedisServer) -> None:
    """Two instances, two connection pools, one Redis: what one records the other sees."""
    instances = [
        RedisUploadRegistry(
            Redis.from_url(clean_redis.url, decode_responses=True), 60, owns_client=True
        )
        for _ in range(2)
    ]
    try:
        await instances[0].record("alice", [KEY])
        assert await instances[1].ownership("bob", KEY) is Ownership.OTHERS
        assert await instances[1].ownership("alice", KEY) is Ownership.OWNER
    finally:
        for instance in instances:
            await instance.aclose()


class CommandCount:
    """How many times Redis ran the binding script (EVALSHA, or EVAL the first time)."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        with server.client() as client:
            client.config_resetstat()

    def __call__(self) -> int:
        with self.server.client() as client:
            stats = client.info("commandstats")
        return sum(
            int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
        )


async def test_redis_bindings_expire_and_do_not_name_the_session(
    clean_redis: RedisServer,
) -> None:
    registry = RedisUploadRegistry(
        Redis.from_url(clean_redis.url, decode_responses=True),
        60,
        session_ttl=3600,
        key_prefix="app1:",
        owns_client=True,
    )
    try:
        await registry.bind_session("alice", SESSION)
    finally:
        await registry.aclose()
    with clean_redis.client() as client:
        [name] = list(client.scan_iter(match="*"))
        assert name == registry.session_redis_key(SESSION)
        assert name.startswith("app1:g:")
        assert SESSION not in name
        assert 3590_000 < client.pttl(name) <= 3600_000
        assert client.get(name) == "alice"


async def test_redis_is_asked_once_in_a_while_not_on_every_request(
    clean_redis: RedisServer,
) -> None:
    """An instance remembers the bindings it learnt: a refusal until the binding's end,
    the owner's own use until a twentieth of the TTL has passed; then it renews."""
    now = [0.0]
    registry = RedisUploadRegistry(
        Redis.from_url(clean_redis.url, decode_responses=True),
        60,
        session_ttl=100,
        owns_client=True,
        clock=lambda: now[0],
    )
    assert renew_after(registry.session_ttl) == 5
    calls = CommandCount(clean_redis)
    try:
        for _ in range(50):
            assert await registry.bind_session("alice", SESSION) is Ownership.OWNER
            assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
        assert calls() == 1
        now[0] = 4.9
        await registry.bind_session("alice", SESSION)
        assert calls() == 1
        now[0] = 5.0
        await registry.bind_session("alice", SESSION)  # renewed in Redis
        assert calls() == 2
        with clean_redis.client() as client:
            assert client.pttl(registry.session_redis_key(SESSION)) > 99_000
        now[0] = 104.9  # bob's refusals still come from memory...
        assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
        assert calls() == 2
        now[0] = 105.0  # ... until what Redis reported at 5.0 (100 s more) is up
        assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
        assert calls() == 3
    finally:
        await registry.aclose()


async def test_instances_sharing_redis_share_the_bindings(clean_redis: RedisServer) -> None:
    instances = [
        RedisUploadRegistry(
            Redis.from_url(clean_redis.url, decode_responses=True), 60, owns_client=True
        )
        for _ in range(2)
    ]
    try:
        assert await instances[0].bind_session("alice", SESSION) is Ownership.OWNER
        assert await instances[1].bind_session("bob", SESSION) is Ownership.OTHERS
        assert await instances[1].bind_session("alice", SESSION) is Ownership.OWNER
        assert await instances[1].bind_session("bob", OTHER_SESSION) is Ownership.OWNER
        assert await instances[0].bind_session("alice", OTHER_SESSION) is Ownership.OTHERS
    finally:
        for instance in instances:
            await instance.aclose()


async def test_a_binding_redis_lost_is_not_believed_past_its_reported_end(
    clean_redis: RedisServer,
) -> None:
    """What an instance remembers never outlives what Redis said: once that time is up it
    asks again (here Redis lost the key meanwhile, and bob may have the hash)."""
    now = [0.0]
    registry = RedisUploadRegistry(
        Redis.from_url(clean_redis.url, decode_responses=True),
        60,
        session_ttl=10,
        owns_client=True,
        clock=lambda: now[0],
    )
    try:
        await registry.bind_session("alice", SESSION)
        with clean_redis.client() as client:
            client.delete(registry.session_redis_key(SESSION))
        now[0] = 9.9
        assert await registry.bind_session("bob", SESSION) is Ownership.OTHERS
        now[0] = 10.0
        assert await registry.bind_session("bob", SESSION) is Ownership.OWNER
    finally:
        await registry.aclose()


async def test_redis_down_is_unavailable_never_unrecorded(tmp_path: Path) -> None:
    """A look-up that cannot be made must not pass for "nobody's file"."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    registry = RedisUploadRegistry(
        Redis.from_url(server.url, decode_responses=True, socket_timeout=0.5),
        60,
        owns_client=True,
    )
    try:
        await registry.record("alice", [KEY])
        server.stop()
        with pytest.raises(UploadRegistryUnavailable):
            await registry.ownership("bob", KEY)
        with pytest.raises(UploadRegistryUnavailable):
            await registry.record("bob", [KEY])
        with pytest.raises(UploadRegistryUnavailable):
            await registry.ping()
        with pytest.raises(UploadRegistryUnavailable):
            await registry.bind_session("bob", SESSION)
    finally:
        server.stop()
        await registry.aclose()


# --- keys --------------------------------------------------------------------------------


def test_every_alias_of_a_file_has_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    target = folder / "report.pdf"
    target.write_bytes(b"%PDF")
    (tmp_path / "link").symlink_to(tmp_path / "gradio")
    monkeypatch.chdir(tmp_path / "gradio")
    aliases = [
        str(target),
        f"{folder}/./report.pdf",
        f"{folder}/../0123abcd/report.pdf",
        f"{folder}//report.pdf",
        f"{target}/",
        f"/proc/self/root{target}",
        "/proc/self/cwd/0123abcd/report.pdf",
        "0123abcd/report.pdf",
        f"{tmp_path}/link/0123abcd/report.pdf",
    ]
    keys = {alias: file_key(alias) for alias in aliases}
    assert set(keys.values()) == {"file:" + os.path.realpath(target)}, keys
    assert file_key(str(folder / "other.pdf")) != file_key(str(target))


def test_a_path_with_a_nul_byte_names_no_file() -> None:
    assert file_key("/tmp/gradio/x\x00.txt") is None


# --- lifetime and assembly ---------------------------------------------------------------


@pytest.mark.parametrize("lifetime", [MIN_UPLOAD_LIFETIME, 600, 86_400, MAX_UPLOAD_LIFETIME])
def test_a_record_outlives_its_file(lifetime: int) -> None:
    """Gradio deletes a file at the first sweep after ``lifetime``: at most one interval
    late. Its record must last beyond that."""
    interval = cleanup_interval(lifetime)
    assert 60 <= interval <= 3600
    assert interval <= lifetime
    assert record_ttl(lifetime) > lifetime + interval


@pytest.mark.parametrize("lifetime", [MIN_UPLOAD_LIFETIME, 600, 86_400, MAX_UPLOAD_LIFETIME])
@pytest.mark.parametrize("absolute", [60, 8 * 3600, 30 * 86_400])
def test_a_binding_outlives_what_gradio_keeps_of_a_session(lifetime: int, absolute: int) -> None:
    """A session's files, a closed tab's gr.State (an hour), a whole sign-in session:
    a binding renewed as late as the backends may still lasts beyond each."""
    ttl = session_binding_ttl(lifetime, absolute)
    renewed_late = ttl - renew_after(ttl)
    assert renewed_late > lifetime + cleanup_interval(lifetime)
    assert renewed_late >= max(absolute, GRADIO_CLOSED_SESSION_SECONDS) * 0.95
    assert ttl >= max(absolute, GRADIO_CLOSED_SESSION_SECONDS, record_ttl(lifetime))


def test_the_upload_lifetime_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(_env_file=None, secret_key="k" * 40)
    assert settings.upload_lifetime == 24 * 60 * 60
    monkeypatch.setenv("PRODIO_UPLOAD_LIFETIME", "3600")
    assert load_settings(_env_file=None, secret_key="k" * 40).upload_lifetime == 3600
    for wrong in (str(MIN_UPLOAD_LIFETIME - 1), str(MAX_UPLOAD_LIFETIME + 1), "a day"):
        monkeypatch.setenv("PRODIO_UPLOAD_LIFETIME", wrong)
        with pytest.raises(SettingsError, match="PRODIO_UPLOAD_LIFETIME"):
            load_settings(_env_file=None, secret_key="k" * 40)


async def test_the_registry_follows_the_session_backend(
    clean_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        _env_file=None, secret_key="k" * 40, upload_lifetime=600, redis_key_prefix="app2:"
    )
    timeouts = SessionTimeouts(idle=60, absolute=120)
    memory = build_upload_registry(settings, InMemorySessionStore(timeouts))
    assert isinstance(memory, InMemoryUploadRegistry)
    assert memory.ttl == record_ttl(600)
    assert memory.session_ttl == session_binding_ttl(600, settings.session_absolute_timeout)
    store = RedisSessionStore.from_url(clean_redis.url, timeouts)
    try:
        shared = build_upload_registry(settings, store)
        assert isinstance(shared, RedisUploadRegistry)
        assert shared.ttl == record_ttl(600)
        assert shared.session_ttl == memory.session_ttl
        await shared.record("alice", [KEY])
        with clean_redis.client() as client:
            assert [key for key in client.scan_iter(match="app2:f:*")] == [shared.redis_key(KEY)]
    finally:
        await store.aclose()
