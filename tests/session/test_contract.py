"""The SessionStore contract, run against every backend (see ``store_harness`` in conftest).

Real time with short timeouts (idle 0.4 s, absolute 1.0 s), so that backends whose expiry
happens on a server (Redis TTLs) are held to exactly the same rules as the in-memory one.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import anyio
import pytest

from prodio.session import Session, SessionChanged, SessionStore
from tests.session.conftest import CONTRACT_TIMEOUTS, PAST_IDLE, StoreHarness

pytestmark = pytest.mark.anyio

IDLE = CONTRACT_TIMEOUTS.idle
ABSOLUTE = CONTRACT_TIMEOUTS.absolute
# Well under the idle timeout: a step that keeps a session alive.
SHORT_STEP = IDLE * 0.6
URL_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


async def _live(store: SessionStore, session_id: str) -> Session:
    session = await store.load(session_id, touch=False)
    assert session is not None, "the session should still be live"
    return session


# --- create -----------------------------------------------------------------------------


async def test_create_returns_the_new_session(store: SessionStore) -> None:
    before = time.time()
    session = await store.create("alice", {"theme": "dark", "n": 1})
    after = time.time()

    assert session.username == "alice"
    assert dict(session.data) == {"theme": "dark", "n": 1}
    # One clock for both backends here; a second of slack covers Redis's own clock.
    assert before - 1 <= session.created_at <= after + 1
    assert session.last_seen == session.created_at
    assert session.idle_expires_at == pytest.approx(session.created_at + IDLE)
    assert session.absolute_expires_at == pytest.approx(session.created_at + ABSOLUTE)
    assert session.expires_at == session.idle_expires_at
    assert await _live(store, session.id) == session


async def test_session_ids_are_long_random_and_url_safe(store: SessionStore) -> None:
    ids = [(await store.create("alice")).id for _ in range(200)]

    assert len(set(ids)) == len(ids)
    for session_id in ids:
        assert URL_SAFE_ID.fullmatch(session_id), session_id
        # Base64url carries 6 bits a character: at least 128 random bits.
        assert len(session_id) * 6 >= 128


async def test_create_without_data_has_empty_data(store: SessionStore) -> None:
    session = await store.create("alice")
    assert dict(session.data) == {}
    assert dict((await _live(store, session.id)).data) == {}


@pytest.mark.parametrize("username", ["", None, 42])
async def test_create_refuses_a_missing_username(
    store_harness: StoreHarness, username: Any
) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store_harness.store.create(username)
    assert await store_harness.count_sessions() == 0


# --- load -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "session_id",
    [
        "",
        "x",
        "does-not-exist-but-looks-fine-0123456789abcdefghijkl",
        "a" * 1_000_000,
        "../../../etc/passwd",
        "prodio:u:alice",
        "*",
        "ünïcødé-ünïcødé-ünïcødé-ünïcødé",
        "\x00\r\n",
    ],
    ids=["empty", "short", "unknown", "huge", "path", "key-like", "glob", "unicode", "control"],
)
async def test_load_of_an_id_never_issued_is_none_and_creates_nothing(
    store_harness: StoreHarness, session_id: str
) -> None:
    store = store_harness.store
    assert await store.load(session_id) is None
    assert await store.load(session_id, touch=False) is None
    assert await store.update(session_id, {"k": 1}) is False
    assert await store.delete(session_id) is False
    assert await store.load(session_id) is None
    assert await store_harness.count_sessions() == 0


@pytest.mark.parametrize("session_id", [None, 42, b"bytes-id-bytes-id-bytes-id", ["list"]])
async def test_an_id_that_is_not_a_string_is_no_session(
    store_harness: StoreHarness, session_id: Any
) -> None:
    store = store_harness.store
    await store.create("alice")
    assert await store.load(session_id) is None
    assert await store.update(session_id, {"k": 1}) is False
    assert await store.delete(session_id) is False
    assert await store_harness.count_sessions() == 1


async def test_load_touch_moves_last_seen_and_idle_expiry_but_not_absolute(
    store: SessionStore,
) -> None:
    session = await store.create("alice")
    await anyio.sleep(0.05)

    touched = await store.load(session.id)

    assert touched is not None
    assert touched.last_seen > session.last_seen
    assert touched.idle_expires_at > session.idle_expires_at
    assert touched.idle_expires_at == pytest.approx(touched.last_seen + IDLE)
    assert touched.created_at == session.created_at
    assert touched.absolute_expires_at == session.absolute_expires_at
    # The store kept the touch, not only the snapshot.
    assert (await _live(store, session.id)).last_seen == touched.last_seen


async def test_touching_keeps_a_session_alive_past_the_idle_timeout(store: SessionStore) -> None:
    session = await store.create("alice")
    for _ in range(3):  # 3 x 0.24 s > 0.4 s idle
        await anyio.sleep(SHORT_STEP)
        assert await store.load(session.id) is not None


async def test_load_without_touch_leaves_last_seen_and_expiry(store: SessionStore) -> None:
    session = await store.create("alice")
    await anyio.sleep(SHORT_STEP)

    untouched = await store.load(session.id, touch=False)
    assert untouched is not None
    assert untouched.last_seen == session.last_seen
    assert untouched.idle_expires_at == session.idle_expires_at

    # Had that load touched it, the session would live until SHORT_STEP + IDLE.
    await anyio.sleep(IDLE - SHORT_STEP + 0.1)
    assert await store.load(session.id) is None


async def test_idle_session_expires(store_harness: StoreHarness) -> None:
    store = store_harness.store
    session = await store.create("alice", {"k": 1})
    await anyio.sleep(PAST_IDLE)

    assert await store.load(session.id, touch=False) is None
    assert await store.load(session.id) is None


async def test_absolute_timeout_ends_even_a_busy_session(store: SessionStore) -> None:
    session = await store.create("alice")
    ended_at = None
    for _ in range(int(ABSOLUTE / 0.1) * 3):
        await anyio.sleep(0.1)
        loaded = await store.load(session.id)
        if loaded is None:
            ended_at = time.time()
            break
        assert loaded.absolute_expires_at == session.absolute_expires_at
        assert loaded.expires_at <= session.absolute_expires_at
    assert ended_at is not None, "a session touched all the time never expired"
    # It died of old age, not of idleness: only once its absolute expiry had passed.
    assert ended_at >= session.absolute_expires_at - 0.05


# --- update -----------------------------------------------------------------------------


async def test_update_sets_and_removes_only_the_named_keys(store: SessionStore) -> None:
    session = await store.create("alice", {"keep": 1, "change": 2, "drop": 3})

    assert await store.update(session.id, {"change": 20, "new": [1, {"a": None}]}, remove=["drop"])

    loaded = await _live(store, session.id)
    assert dict(loaded.data) == {"keep": 1, "change": 20, "new": [1, {"a": None}]}


async def test_update_removing_an_absent_key_is_fine(store: SessionStore) -> None:
    session = await store.create("alice", {"keep": 1})
    assert await store.update(session.id, remove=["never-there"])
    assert dict((await _live(store, session.id)).data) == {"keep": 1}


async def test_update_with_a_key_both_set_and_removed_removes_it(store: SessionStore) -> None:
    session = await store.create("alice", {"k": 1})
    assert await store.update(session.id, {"k": 2}, remove=["k"])
    assert dict((await _live(store, session.id)).data) == {}


async def test_update_does_not_touch(store: SessionStore) -> None:
    session = await store.create("alice")
    await anyio.sleep(0.05)
    assert await store.update(session.id, {"k": 1})
    assert (await _live(store, session.id)).last_seen == session.last_seen


async def test_update_refuses_one_string_as_the_keys_to_remove(store: SessionStore) -> None:
    session = await store.create("alice", {"theme": 1, "t": 2, "h": 3})
    with pytest.raises(TypeError):
        await store.update(session.id, remove="theme")
    assert dict((await _live(store, session.id)).data) == {"theme": 1, "t": 2, "h": 3}


async def test_update_of_a_deleted_session_is_false_and_does_not_resurrect_it(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    session = await store.create("alice", {"k": 1})
    assert await store.delete(session.id)

    assert await store.update(session.id, {"k": 2, "other": 3}, remove=["k"]) is False

    assert await store.load(session.id) is None
    assert await store_harness.count_sessions() == 0


async def test_update_of_an_expired_session_is_false_and_does_not_resurrect_it(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    session = await store.create("alice", {"k": 1})
    await anyio.sleep(PAST_IDLE)

    assert await store.update(session.id, {"k": 2}) is False

    assert await store.load(session.id) is None
    assert await store_harness.count_sessions() == 0


# --- versions and compare-and-set -------------------------------------------------------


async def test_the_version_counts_data_changes_and_nothing_else(store: SessionStore) -> None:
    session = await store.create("alice", {"n": 0})
    assert session.version == 1
    assert (await _live(store, session.id)).version == 1
    touched = await store.load(session.id)
    assert touched is not None
    assert touched.version == 1

    assert await store.update(session.id, {"n": 1})
    assert (await _live(store, session.id)).version == 2
    assert await store.update(session.id, remove=["n"])
    assert (await _live(store, session.id)).version == 3
    assert await store.update(session.id, {"a": 1, "b": 2}, remove=["c"])
    # One update, however many keys: one version.
    assert (await _live(store, session.id)).version == 4

    # Touching, reading and listing leave it.
    for _ in range(3):
        again = await store.load(session.id)
        assert again is not None
        assert again.version == 4
    [listed] = await store.list_user_sessions("alice")
    assert listed.version == 4
    assert (await _live(store, session.id)).version == 4


async def test_compare_and_set_with_the_current_version_applies(store: SessionStore) -> None:
    session = await store.create("alice", {"n": 0})
    assert await store.update(session.id, {"n": 1}, expected_version=session.version)
    after = await _live(store, session.id)
    assert dict(after.data) == {"n": 1}
    assert after.version == session.version + 1
    assert await store.update(session.id, remove=["n"], expected_version=after.version)
    assert dict((await _live(store, session.id)).data) == {}


@pytest.mark.parametrize("offset", [-1, +1], ids=["stale", "ahead"])
async def test_compare_and_set_with_another_version_raises_and_changes_nothing(
    store: SessionStore, offset: int
) -> None:
    session = await store.create("alice", {"n": 0, "keep": "me"})
    assert await store.update(session.id, {"n": 1})
    current = await _live(store, session.id)

    with pytest.raises(SessionChanged):
        await store.update(
            session.id, {"n": 99}, remove=["keep"], expected_version=current.version + offset
        )

    after = await _live(store, session.id)
    assert dict(after.data) == {"n": 1, "keep": "me"}
    assert after.version == current.version


async def test_of_two_compare_and_sets_from_one_snapshot_only_one_applies(
    store: SessionStore,
) -> None:
    session = await store.create("alice", {"n": 0})
    outcomes: list[str] = []

    async def increment() -> None:
        try:
            applied = await store.update(
                session.id,
                {"n": session.data["n"] + 1},
                expected_version=session.version,
            )
        except SessionChanged:
            outcomes.append("changed")
        else:
            outcomes.append(f"applied {applied}")

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(increment)

    assert sorted(outcomes) == ["applied True"] + ["changed"] * 4
    after = await _live(store, session.id)
    assert dict(after.data) == {"n": 1}
    assert after.version == session.version + 1


async def test_compare_and_set_on_a_dead_session_is_false(store: SessionStore) -> None:
    session = await store.create("alice")
    assert await store.delete(session.id)
    assert await store.update(session.id, {"k": 1}, expected_version=session.version) is False
    # Whatever the version asked for: a dead session is no conflict, it is no session.
    assert await store.update(session.id, {"k": 1}, expected_version=12345) is False
    never = "does-not-exist-but-looks-fine-0123456789abcdefghijkl"
    assert await store.update(never, {"k": 1}, expected_version=1) is False
    assert await store.load(session.id) is None


async def test_compare_and_set_on_an_expired_session_is_false(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    session = await store.create("alice")
    await anyio.sleep(PAST_IDLE)
    assert await store.update(session.id, {"k": 1}, expected_version=session.version) is False
    assert await store.load(session.id) is None


@pytest.mark.parametrize("version", [True, "1", 1.0, -1])
async def test_compare_and_set_refuses_a_version_that_is_not_a_count(
    store: SessionStore, version: Any
) -> None:
    session = await store.create("alice", {"n": 0})
    with pytest.raises(TypeError, match="expected_version"):
        await store.update(session.id, {"n": 1}, expected_version=version)
    after = await _live(store, session.id)
    assert dict(after.data) == {"n": 0}
    assert after.version == 1


# --- values -----------------------------------------------------------------------------


async def test_returned_data_is_a_copy(store: SessionStore) -> None:
    given: dict[str, Any] = {"nested": {"list": [1, 2]}}
    session = await store.create("alice", given)
    given["nested"]["list"].append("changed the caller's dict")
    session.data["nested"]["list"].append("changed the returned snapshot")

    loaded = await _live(store, session.id)
    assert dict(loaded.data) == {"nested": {"list": [1, 2]}}
    loaded.data["nested"]["list"].clear()
    assert dict((await _live(store, session.id)).data) == {"nested": {"list": [1, 2]}}


async def test_json_values_come_back_unchanged(store: SessionStore) -> None:
    values: dict[str, Any] = {
        "none": None,
        "true": True,
        "false": False,
        "int": -(2**62),
        "float": 0.1,
        "text": 'ünïcødé "quoted" \n ✓',
        "empty": "",
        "list": [1, "two", [3.5], {"four": None}],
        "dict": {"a": {"b": {"c": []}}},
        "": "an empty key",
        "d:looks:like:a:field": 1,
    }
    session = await store.create("alice", values)
    assert dict(session.data) == values
    assert dict((await _live(store, session.id)).data) == values

    assert await store.update(session.id, {"later": values})
    assert (await _live(store, session.id)).data["later"] == values


NOT_JSON: list[Any] = [
    object(),
    {1, 2},
    b"bytes",
    (1, 2),
    {1: "int key"},
    {"nested": {2: "int key"}},
    math.nan,
    math.inf,
    [math.nan],
]


@pytest.mark.parametrize("value", NOT_JSON, ids=lambda value: type(value).__name__)
async def test_non_json_values_are_refused_at_create(
    store_harness: StoreHarness, value: Any
) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store_harness.store.create("alice", {"k": value})
    assert await store_harness.count_sessions() == 0


@pytest.mark.parametrize("value", NOT_JSON, ids=lambda value: type(value).__name__)
async def test_non_json_values_are_refused_at_update_and_change_nothing(
    store: SessionStore, value: Any
) -> None:
    session = await store.create("alice", {"k": 1})
    with pytest.raises((TypeError, ValueError)):
        await store.update(session.id, {"fine": 2, "k": value})
    assert dict((await _live(store, session.id)).data) == {"k": 1}


async def test_non_str_keys_are_refused(store: SessionStore) -> None:
    with pytest.raises(TypeError):
        await store.create("alice", {1: "x"})  # type: ignore[dict-item]
    session = await store.create("alice")
    with pytest.raises(TypeError):
        await store.update(session.id, {2: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        await store.update(session.id, remove=[3])  # type: ignore[list-item]


async def test_deeply_nested_values_are_refused(store: SessionStore) -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises((TypeError, ValueError)):
        await store.create("alice", {"deep": value})


# --- delete -----------------------------------------------------------------------------


async def test_delete_ends_the_session(store_harness: StoreHarness) -> None:
    store = store_harness.store
    session = await store.create("alice")
    other = await store.create("alice")

    assert await store.delete(session.id) is True

    assert await store.load(session.id) is None
    assert await _live(store, other.id) is not None
    assert await store_harness.count_sessions() == 1


async def test_delete_twice_is_false_the_second_time(store: SessionStore) -> None:
    session = await store.create("alice")
    assert await store.delete(session.id) is True
    assert await store.delete(session.id) is False


async def test_delete_of_an_expired_session_is_false(store: SessionStore) -> None:
    session = await store.create("alice")
    await anyio.sleep(PAST_IDLE)
    assert await store.delete(session.id) is False


async def test_delete_user_sessions_ends_all_and_only_that_users_sessions(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    alices = [await store.create("alice", {"i": i}) for i in range(3)]
    bob = await store.create("bob")
    alice_prefixed = await store.create("alice2")

    assert await store.delete_user_sessions("alice") == 3

    for session in alices:
        assert await store.load(session.id) is None
    assert await _live(store, bob.id) is not None
    assert await _live(store, alice_prefixed.id) is not None
    assert await store_harness.count_sessions() == 2
    assert await store.delete_user_sessions("alice") == 0
    assert await store.delete_user_sessions("nobody") == 0


async def test_delete_user_sessions_counts_only_live_sessions(store: SessionStore) -> None:
    expired = await store.create("alice")
    await anyio.sleep(PAST_IDLE)
    live = await store.create("alice")

    assert await store.delete_user_sessions("alice") == 1

    assert await store.load(expired.id) is None
    assert await store.load(live.id) is None


async def test_a_new_login_after_logout_everywhere_is_live(store: SessionStore) -> None:
    await store.create("alice")
    await store.delete_user_sessions("alice")
    fresh = await store.create("alice")
    assert await _live(store, fresh.id) is not None
    assert await store.delete_user_sessions("alice") == 1


# --- list_user_sessions -----------------------------------------------------------------


async def test_list_user_sessions_is_exactly_that_users_live_sessions(
    store: SessionStore,
) -> None:
    alices = [
        await store.create("alice", {"i": i, "auth.user_agent": f"browser {i}"}) for i in range(3)
    ]
    await store.create("bob")
    await store.create("alice2")
    await store.create("Alice")

    listed = await store.list_user_sessions("alice")

    # Oldest first, each as a load would return it.
    assert [session.id for session in listed] == [session.id for session in alices]
    for session in listed:
        assert session == await _live(store, session.id)
        assert session.username == "alice"
    assert [dict(session.data) for session in listed] == [dict(s.data) for s in alices]
    assert await store.list_user_sessions("nobody") == []


async def test_list_user_sessions_leaves_out_ended_and_expired_sessions(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    expired = await store.create("alice")
    await anyio.sleep(PAST_IDLE)
    deleted = await store.create("alice")
    live = await store.create("alice")
    assert await store.delete(deleted.id)

    listed = await store.list_user_sessions("alice")

    assert [session.id for session in listed] == [live.id]
    assert await store.load(expired.id) is None
    # The dead ones are forgotten, not only hidden.
    assert await store_harness.count_sessions() == 1

    await store.delete_user_sessions("alice")
    assert await store.list_user_sessions("alice") == []


async def test_list_user_sessions_does_not_touch(store: SessionStore) -> None:
    session = await store.create("alice")
    # Listed again and again: had a listing touched the session, the last one would keep
    # it alive past the idle timeout counted from its creation.
    for _ in range(2):
        await anyio.sleep(IDLE / 3)
        [listed] = await store.list_user_sessions("alice")
        assert listed.last_seen == session.last_seen
        assert listed.idle_expires_at == session.idle_expires_at
    await anyio.sleep(IDLE / 3 + 0.1)
    assert await store.list_user_sessions("alice") == []
    assert await store.load(session.id) is None


async def test_a_listed_snapshot_is_a_copy(store: SessionStore) -> None:
    session = await store.create("alice", {"nested": {"list": [1]}})
    [listed] = await store.list_user_sessions("alice")
    listed.data["nested"]["list"].append("changed the listed snapshot")
    assert dict((await _live(store, session.id)).data) == {"nested": {"list": [1]}}


@pytest.mark.parametrize("username", ["", None, 42])
async def test_list_user_sessions_refuses_a_missing_username(
    store: SessionStore, username: Any
) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.list_user_sessions(username)


# --- purge, ping ------------------------------------------------------------------------


async def test_purge_expired_removes_expired_and_keeps_live_sessions(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    expired = [await store.create("alice") for _ in range(3)]
    await anyio.sleep(PAST_IDLE)
    live = await store.create("bob", {"k": 1})

    removed = await store.purge_expired()

    assert removed == (0 if store_harness.expires_by_itself else len(expired))
    assert await store_harness.count_sessions() == 1
    assert dict((await _live(store, live.id)).data) == {"k": 1}
    assert await store.purge_expired() == 0


async def test_purge_expired_with_nothing_expired_removes_nothing(
    store_harness: StoreHarness,
) -> None:
    store = store_harness.store
    sessions = [await store.create("alice") for _ in range(5)]
    assert await store.purge_expired() == 0
    assert await store_harness.count_sessions() == len(sessions)


async def test_ping_answers(store: SessionStore) -> None:
    assert await store.ping() is None


async def test_store_satisfies_the_protocol(store: SessionStore) -> None:
    assert isinstance(store, SessionStore)
    assert store.timeouts == CONTRACT_TIMEOUTS
