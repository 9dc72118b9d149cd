"""The Notepad tab's handlers, with real requests and the real in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import anyio
import gradio as gr
import pytest

from prodio.pages.notepad import MAX_NOTE_CHARS, NotepadTab
from prodio.session.base import Session, SessionStore, SessionTimeouts
from prodio.session.redis import RedisSessionStore
from prodio.ui.state import SESSION_GONE_MESSAGE, UserState
from tests.redis_server import RedisServer
from tests.ui.helpers import CountingStore, gradio_request, new_store

pytestmark = pytest.mark.anyio


def built_tab(store: SessionStore) -> NotepadTab:
    tab = NotepadTab()
    with gr.Blocks():
        tab.build(UserState(store))
    return tab


async def save(tab: NotepadTab, store: SessionStore, session: Session, text: str) -> str:
    return await tab.save(text, await gradio_request(store, session))


async def test_first_load_is_empty() -> None:
    store = new_store()
    tab = built_tab(store)
    session = await store.create("alice")
    assert await tab.load(await gradio_request(store, session)) == ("", "Not saved yet.")


async def test_saved_note_survives_a_reload_and_counts_saves() -> None:
    store = new_store()
    tab = built_tab(store)
    session = await store.create("alice")
    first = await save(tab, store, session, "buy milk")
    assert first.startswith("Saved 1 time · last at ")
    second = await save(tab, store, session, "buy milk and bread")
    assert second.startswith("Saved 2 times")
    text, status = await tab.load(await gradio_request(store, session))
    assert text == "buy milk and bread"
    assert status.startswith("Saved 2 times")


async def test_another_user_does_not_see_the_note() -> None:
    store = new_store()
    tab = built_tab(store)
    alice, bob = await store.create("alice"), await store.create("bob")
    await save(tab, store, alice, "alice only")
    assert await tab.load(await gradio_request(store, bob)) == ("", "Not saved yet.")


async def test_a_second_instance_sees_the_note() -> None:
    """Two app instances share only the store: a tab built elsewhere reads the note."""
    store = new_store()
    session = await store.create("alice")
    await save(built_tab(store), store, session, "from instance A")
    text, _ = await built_tab(store).load(await gradio_request(store, session))
    assert text == "from instance A"


async def test_another_session_of_the_same_user_starts_empty() -> None:
    store = new_store()
    tab = built_tab(store)
    first, second = await store.create("alice"), await store.create("alice")
    await save(tab, store, first, "in session one")
    assert (await tab.load(await gradio_request(store, second)))[0] == ""


async def test_clearing_the_note_saves_an_empty_text() -> None:
    store = new_store()
    tab = built_tab(store)
    session = await store.create("alice")
    await save(tab, store, session, "something")
    await tab.save(None, await gradio_request(store, session))
    assert (await tab.load(await gradio_request(store, session)))[0] == ""


async def test_too_long_note_is_refused_with_a_message() -> None:
    store = new_store()
    tab = built_tab(store)
    session = await store.create("alice")
    await save(tab, store, session, "kept")
    with pytest.raises(gr.Error, match="the limit is 20,000"):
        await save(tab, store, session, "x" * (MAX_NOTE_CHARS + 1))
    assert (await tab.load(await gradio_request(store, session)))[0] == "kept"


async def test_saving_after_logout_asks_to_sign_in_again() -> None:
    store = new_store()
    tab = built_tab(store)
    session = await store.create("alice")
    request = await gradio_request(store, session)
    await store.delete(session.id)
    with pytest.raises(gr.Error) as info:
        await tab.save("too late", request)
    assert info.value.message == SESSION_GONE_MESSAGE


async def test_unexpected_stored_shape_reads_as_empty() -> None:
    store = new_store()
    tab = built_tab(store)
    session = await store.create("alice", {"ui.notepad.note": "not a dict"})
    assert await tab.load(await gradio_request(store, session)) == ("", "Not saved yet.")


@pytest.fixture(params=["memory", "redis-cached"])
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield new_store()
        return
    server: RedisServer = request.getfixturevalue("clean_redis")
    store = RedisSessionStore.from_url(
        server.url, SessionTimeouts(idle=600, absolute=3600), local_cache_seconds=5.0
    )
    assert await store.wait_for_cache(), "the session cache did not come on"
    yield store
    await store.aclose()


async def test_a_save_is_one_store_call(any_store: SessionStore) -> None:
    session = await any_store.create("alice")
    counting = CountingStore(any_store)
    tab = built_tab(cast(SessionStore, counting))
    for number in range(1, 4):
        request = await gradio_request(any_store, session)
        counting.calls.clear()
        status = await tab.save(f"version {number}", request)
        assert status.startswith(f"Saved {number} time")
        assert dict(counting.calls) == {"update": 1}


async def test_two_tabs_saving_at_once_both_count(any_store: SessionStore) -> None:
    tab = built_tab(any_store)
    session = await any_store.create("alice")
    await save(tab, any_store, session, "first")
    # Both tabs' save events were checked in (their snapshots taken) before either saved.
    one, other = await gradio_request(any_store, session), await gradio_request(any_store, session)
    statuses: dict[str, str] = {}

    async def save_from(name: str, request: gr.Request) -> None:
        statuses[name] = await tab.save(f"from {name}", request)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(save_from, "one", one)
        tasks.start_soon(save_from, "other", other)

    assert sorted(status.split(" · ")[0] for status in statuses.values()) == [
        "Saved 2 times",
        "Saved 3 times",
    ]
    text, status = await tab.load(await gradio_request(any_store, session))
    assert status.startswith("Saved 3 times")
    assert text in ("from one", "from other")
