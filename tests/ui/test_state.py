"""UserState: per-user values in the real in-memory session store."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import cast

import anyio
import gradio as gr
import pytest

from prodio.session.base import (
    JSONValue,
    Session,
    SessionChanged,
    SessionStore,
    SessionStoreUnavailable,
    SessionTimeouts,
)
from prodio.session.memory import InMemorySessionStore
from prodio.session.redis import RedisSessionStore
from prodio.ui.state import (
    CONFLICT_MESSAGE,
    MAX_MODIFY_ATTEMPTS,
    SESSION_GONE_MESSAGE,
    STORAGE_PREFIX,
    STORE_DOWN_MESSAGE,
    InvalidStateKey,
    NotJSON,
    SessionGone,
    StateConflict,
    UserState,
    user_facing_errors,
)
from tests.redis_server import RedisServer
from tests.ui.helpers import CountingStore, bare_gradio_request, gradio_request, new_store

pytestmark = pytest.mark.anyio


async def test_set_then_get_in_a_later_request() -> None:
    store = new_store()
    session = await store.create("alice")
    state = UserState(store)
    await state.set(await gradio_request(store, session), "notepad.text", {"a": [1, 2]})
    later = await gradio_request(store, session)
    assert await state.get(later, "notepad.text") == {"a": [1, 2]}


async def test_values_are_kept_apart_from_other_session_data() -> None:
    store = new_store()
    session = await store.create("alice", {"csrf": "keep-me"})
    state = UserState(store)
    await state.set(await gradio_request(store, session), "csrf.token", "page value")
    stored = await store.load(session.id)
    assert stored is not None
    assert stored.data["csrf"] == "keep-me"
    assert stored.data[STORAGE_PREFIX + "csrf.token"] == "page value"


async def test_missing_key_gives_the_default() -> None:
    store = new_store()
    session = await store.create("alice")
    request = await gradio_request(store, session)
    assert await UserState(store).get(request, "notepad.text") is None
    assert await UserState(store).get(request, "notepad.text", default="") == ""


async def test_two_users_do_not_see_each_other() -> None:
    store = new_store()
    alice, bob = await store.create("alice"), await store.create("bob")
    state = UserState(store)
    await state.set(await gradio_request(store, alice), "notepad.text", "alice's secret")
    assert await state.get(await gradio_request(store, bob), "notepad.text") is None


async def test_namespace_prefixes_keys() -> None:
    store = new_store()
    session = await store.create("alice")
    notes = UserState(store).namespace("notepad")
    await notes.set(await gradio_request(store, session), "text", "hi")
    assert await UserState(store).get(await gradio_request(store, session), "notepad.text") == "hi"


async def test_delete_forgets_and_tolerates_missing_keys() -> None:
    store = new_store()
    session = await store.create("alice")
    state = UserState(store)
    request = await gradio_request(store, session)
    await state.set(request, "notepad.text", "x")
    await state.delete(request, "notepad.text")
    await state.delete(request, "notepad.never_set")
    assert await state.get(request, "notepad.text", "gone") == "gone"


@pytest.mark.parametrize("key", ["text", "Notepad.text", "notepad.", ".text", "a.b c", "", "a..b"])
async def test_keys_must_be_namespaced(key: str) -> None:
    store = new_store()
    session = await store.create("alice")
    with pytest.raises(InvalidStateKey, match=r"must look like 'page\.name'"):
        await UserState(store).get(await gradio_request(store, session), key)


def test_namespace_name_is_checked() -> None:
    with pytest.raises(InvalidStateKey):
        UserState(new_store()).namespace("Not OK")


@pytest.mark.parametrize("value", [{1, 2}, float("nan"), object(), b"bytes"])
async def test_values_must_be_json(value: object) -> None:
    store = new_store()
    session = await store.create("alice")
    with pytest.raises(NotJSON, match="cannot be stored as JSON"):
        await UserState(store).set(await gradio_request(store, session), "notepad.x", value)


async def test_ended_session_raises_session_gone() -> None:
    store = new_store()
    session = await store.create("alice")
    request = await gradio_request(store, session)
    await store.delete(session.id)
    state = UserState(store)
    with pytest.raises(SessionGone):
        await state.get(request, "notepad.text")
    with pytest.raises(SessionGone):
        await state.set(request, "notepad.text", "x")
    with pytest.raises(SessionGone):
        await state.delete(request, "notepad.text")


async def test_expired_session_raises_session_gone() -> None:
    now = [1000.0]
    store = InMemorySessionStore(SessionTimeouts(idle=10, absolute=100), clock=lambda: now[0])
    session = await store.create("alice")
    request = await gradio_request(store, session)
    now[0] += 11
    with pytest.raises(SessionGone):
        await UserState(store).set(request, "notepad.text", "late")


async def test_request_without_session_id_is_a_clear_error() -> None:
    store = new_store()
    with pytest.raises(SessionGone, match="session middleware"):
        await UserState(store).get(bare_gradio_request({}), "notepad.text")
    with pytest.raises(SessionGone, match=r"gr\.Request"):
        await UserState(store).get(None, "notepad.text")


def test_session_gone_is_not_a_gradio_error() -> None:
    assert not issubclass(SessionGone, gr.Error)


async def test_user_facing_errors_translates_session_failures() -> None:
    @user_facing_errors
    async def gone() -> None:
        raise SessionGone("ended")

    @user_facing_errors
    async def down() -> None:
        raise SessionStoreUnavailable("redis timed out")

    @user_facing_errors
    async def fine() -> int:
        return 7

    with pytest.raises(gr.Error) as gone_info:
        await gone()
    assert gone_info.value.message == SESSION_GONE_MESSAGE
    assert gone_info.value.print_exception is False
    with pytest.raises(gr.Error) as down_info:
        await down()
    assert down_info.value.message == STORE_DOWN_MESSAGE
    assert await fine() == 7


# --- modify: read-modify-write with compare-and-set ---------------------------------------


class BusyStore(CountingStore):
    """Another tab writes to the session just before each of this store's updates."""

    async def update(
        self,
        session_id: str,
        changes: Mapping[str, JSONValue] | None = None,
        *,
        remove: Iterable[str] = (),
        expected_version: int | None = None,
    ) -> bool:
        self.calls["update"] += 1
        assert await self.inner.update(session_id, {"other.tab": self.calls["update"]})
        return await self.inner.update(
            session_id, changes, remove=remove, expected_version=expected_version
        )


def increment(current: JSONValue) -> JSONValue:
    return (current or 0) + 1


async def test_modify_writes_from_the_requests_snapshot_in_one_store_call() -> None:
    inner = new_store()
    session = await inner.create("alice")
    store = CountingStore(inner)
    state = UserState(cast(SessionStore, store)).namespace("counter")
    request = await gradio_request(inner, session)

    assert await state.modify(request, "n", increment) == 1

    assert store.calls == Counter({"update": 1})
    stored = await inner.load(session.id, touch=False)
    assert stored is not None
    assert stored.data[STORAGE_PREFIX + "counter.n"] == 1
    assert stored.version == session.version + 1


async def test_modify_passes_the_current_value_or_the_default() -> None:
    store = new_store()
    session = await store.create("alice", {STORAGE_PREFIX + "notepad.items": ["a"]})
    state = UserState(store)
    seen: list[JSONValue] = []

    def append(current: JSONValue) -> JSONValue:
        seen.append(current)
        current.append("b")  # editing the argument in place is allowed
        return current

    request = await gradio_request(store, session)
    assert await state.modify(request, "notepad.items", append) == ["a", "b"]
    assert await state.modify(request, "notepad.missing", lambda value: value, default=7) == 7
    assert seen == [["a", "b"]]
    assert await state.get(request, "notepad.items") == ["a", "b"]


async def test_a_second_modify_in_one_request_needs_no_reread() -> None:
    inner = new_store()
    session = await inner.create("alice")
    store = CountingStore(inner)
    state = UserState(cast(SessionStore, store))
    request = await gradio_request(inner, session)

    assert await state.modify(request, "counter.n", increment) == 1
    assert await state.modify(request, "counter.n", increment) == 2

    assert store.calls == Counter({"update": 2})


async def test_modify_from_a_stale_snapshot_retries_and_keeps_both_changes() -> None:
    inner = new_store()
    session = await inner.create("alice")
    # Two tabs whose requests were checked before either wrote: the same snapshot.
    first, second = await gradio_request(inner, session), await gradio_request(inner, session)
    store = CountingStore(inner)
    state = UserState(cast(SessionStore, store))

    assert await state.modify(first, "counter.n", increment) == 1
    assert await state.modify(second, "counter.n", increment) == 2

    # The second: a conflicting update, a fresh read (never touching), and the update.
    assert store.calls == Counter({"update": 3, "load": 1})
    assert await state.get(first, "counter.n") == 2


async def test_modify_gives_up_after_repeated_conflicts() -> None:
    inner = new_store()
    session = await inner.create("alice")
    store = BusyStore(inner)
    state = UserState(cast(SessionStore, store))
    request = await gradio_request(inner, session)

    with pytest.raises(StateConflict):
        await state.modify(request, "counter.n", increment)

    assert store.calls["update"] == MAX_MODIFY_ATTEMPTS
    assert store.calls["load"] == MAX_MODIFY_ATTEMPTS - 1
    assert await state.get(request, "counter.n") is None  # never written

    @user_facing_errors
    async def handler() -> JSONValue:
        return await state.modify(request, "counter.n", increment)

    with pytest.raises(gr.Error) as info:
        await handler()
    assert info.value.message == CONFLICT_MESSAGE
    assert info.value.print_exception is False
    assert await state.get(request, "counter.n") is None


async def test_modify_without_a_snapshot_starts_from_a_fresh_read() -> None:
    inner = new_store()
    session = await inner.create("alice", {STORAGE_PREFIX + "counter.n": 41})
    store = CountingStore(inner)
    request = bare_gradio_request({"session_id": session.id})

    assert await UserState(cast(SessionStore, store)).modify(request, "counter.n", increment) == 42

    assert store.calls == Counter({"load": 1, "update": 1})
    assert await UserState(inner).get(request, "counter.n") == 42


async def test_modify_of_an_ended_session_raises_session_gone() -> None:
    store = new_store()
    session = await store.create("alice")
    request = await gradio_request(store, session)
    await store.delete(session.id)
    with pytest.raises(SessionGone):
        await UserState(store).modify(request, "counter.n", increment)
    with pytest.raises(SessionGone):
        await UserState(store).modify(
            bare_gradio_request({"session_id": session.id}), "a.b", increment
        )


async def test_modify_refuses_a_value_that_is_not_json() -> None:
    store = new_store()
    session = await store.create("alice", {STORAGE_PREFIX + "counter.n": 1})
    request = await gradio_request(store, session)
    with pytest.raises(NotJSON):
        await UserState(store).modify(request, "counter.n", lambda _: {1, 2})
    assert await UserState(store).get(request, "counter.n") == 1


@pytest.fixture
async def two_cached_instances(
    clean_redis: RedisServer,
) -> AsyncIterator[tuple[RedisSessionStore, RedisSessionStore]]:
    timeouts = SessionTimeouts(idle=60, absolute=600)
    stores = [
        RedisSessionStore.from_url(clean_redis.url, timeouts, local_cache_seconds=5.0)
        for _ in range(2)
    ]
    for store in stores:
        assert await store.wait_for_cache(), "the session cache did not come on"
    yield stores[0], stores[1]
    for store in stores:
        await store.aclose()


async def test_concurrent_modifies_on_two_redis_instances_all_count(
    two_cached_instances: tuple[RedisSessionStore, RedisSessionStore],
) -> None:
    """Real Redis, each instance answering its requests' session check from its near cache.

    Each conflict of a modify means another one applied, so as many modifies at once as it
    has attempts always all get through.
    """
    first, second = two_cached_instances
    session = await first.create("alice")
    stores = [first, second, first, second, first][:MAX_MODIFY_ATTEMPTS]
    requests = [await gradio_request(store, session) for store in stores]

    async def bump(index: int) -> None:
        await UserState(stores[index]).modify(requests[index], "counter.n", increment)

    async with anyio.create_task_group() as tasks:
        for index in range(len(stores)):
            tasks.start_soon(bump, index)

    fresh = await second.load(session.id, touch=False)
    assert fresh is not None
    assert fresh.data[STORAGE_PREFIX + "counter.n"] == len(stores)
    assert fresh.version == session.version + len(stores)


async def test_a_stale_cached_snapshot_is_corrected_by_modify(
    two_cached_instances: tuple[RedisSessionStore, RedisSessionStore],
) -> None:
    first, second = two_cached_instances
    session = await first.create("alice")
    stale_request = await gradio_request(second, session)  # cached on the second instance
    assert (
        await UserState(first).modify(await gradio_request(first, session), "counter.n", increment)
        == 1
    )
    snapshot = stale_request.state.session
    assert isinstance(snapshot, Session)
    assert snapshot.version == session.version

    assert await UserState(second).modify(stale_request, "counter.n", increment) == 2


async def test_user_facing_errors_maps_a_bare_session_changed_too() -> None:
    @user_facing_errors
    async def conflicting() -> None:
        raise SessionChanged("version 3, not 2")

    with pytest.raises(gr.Error) as info:
        await conflicting()
    assert info.value.message == CONFLICT_MESSAGE
