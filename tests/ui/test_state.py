"""UserState: per-user values in the real in-memory session store."""

from __future__ import annotations

import gradio as gr
import pytest

from prodio.session.base import SessionStoreUnavailable, SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from prodio.ui.state import (
    SESSION_GONE_MESSAGE,
    STORAGE_PREFIX,
    STORE_DOWN_MESSAGE,
    InvalidStateKey,
    NotJSON,
    SessionGone,
    UserState,
    user_facing_errors,
)
from tests.ui.helpers import bare_gradio_request, gradio_request, new_store

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
