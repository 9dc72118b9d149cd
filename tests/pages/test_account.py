"""The Account tab: what the middleware loaded, shown to its user."""

from __future__ import annotations

import gradio as gr
import pytest

from prodio.pages.account import AccountTab, describe_session
from prodio.session.base import Session
from prodio.ui.state import SESSION_GONE_MESSAGE, UserState
from tests.ui.helpers import bare_gradio_request, gradio_request, new_store

pytestmark = pytest.mark.anyio


def built_tab() -> AccountTab:
    tab = AccountTab()
    with gr.Blocks():
        tab.build(UserState(new_store()))
    return tab


async def test_summary_shows_user_and_session_times() -> None:
    store = new_store(idle=1800, absolute=8 * 3600)
    session = await store.create("alice_b")
    summary = await built_tab().summary(await gradio_request(store, session))
    assert r"**alice\_b**" in summary
    assert "Session started" in summary
    assert "in 30 minutes" in summary
    assert "in 8 hours" in summary or "in 7 h 59 min" in summary


def test_describe_session_formats_utc_times() -> None:
    session = Session(
        id="x",
        username="bob",
        created_at=0.0,
        last_seen=60.0,
        idle_expires_at=60.0 + 1800,
        absolute_expires_at=3600.0 * 8,
    )
    text = describe_session("bob", session, now=60.0)
    assert "1970-01-01 00:00 UTC" in text
    assert "1970-01-01 00:31 UTC (in 30 minutes)" in text
    assert "1970-01-01 08:00 UTC (in 7 h 59 min)" in text


async def test_without_middleware_state_the_user_is_asked_to_sign_in() -> None:
    with pytest.raises(gr.Error) as info:
        await built_tab().summary(bare_gradio_request({}))
    assert info.value.message == SESSION_GONE_MESSAGE


async def test_logout_button_runs_in_the_browser_only() -> None:
    with gr.Blocks() as blocks:
        AccountTab().build(UserState(new_store()))
    config = blocks.get_config_file()
    logout = [d for d in config["dependencies"] if d.get("js") and "logout" in d["js"]]
    assert len(logout) == 1
    assert logout[0]["backend_fn"] is False


async def test_change_password_is_a_plain_link_to_prodios_page() -> None:
    with gr.Blocks() as blocks:
        AccountTab().build(UserState(new_store()))
    config = blocks.get_config_file()
    [button] = [
        c for c in config["components"] if c["props"].get("elem_id") == "account-change-password"
    ]
    assert button["props"]["link"] == "/account/password"
    assert button["props"]["link_target"] == "_self"
    # No event: the browser opens the page, which carries its own CSRF token.
    assert not any(button["id"] in d.get("targets", [[None]])[0] for d in config["dependencies"])


async def test_your_sessions_is_a_plain_link_to_prodios_page() -> None:
    with gr.Blocks() as blocks:
        AccountTab().build(UserState(new_store()))
    config = blocks.get_config_file()
    [button] = [c for c in config["components"] if c["props"].get("elem_id") == "account-sessions"]
    assert button["props"]["link"] == "/account/sessions"
    assert button["props"]["link_target"] == "_self"
    assert button["props"]["value"] == "Your sessions"
    # No event: the browser opens the page, which carries its own CSRF token.
    assert not any(button["id"] in d.get("targets", [[None]])[0] for d in config["dependencies"])
