"""mount_home on a bare FastAPI app, over HTTP (httpx ASGITransport)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Match

from prodio.config import Settings
from prodio.routes.home import mount_home
from prodio.routes.static import mount_static
from prodio.session.memory import InMemorySessionStore
from prodio.ui.mount import GradioApiShortcut, page_head
from tests.ui.helpers import TEST_COOKIE, FakeAuthMiddleware, new_store

pytestmark = pytest.mark.anyio

MAX_FILE_SIZE = 3 * 1024 * 1024


def make_app(store: InMemorySessionStore, **overrides: Any) -> FastAPI:
    settings = Settings(secret_key="k" * 40, max_file_size=MAX_FILE_SIZE, **overrides)
    # The parent app's own docs are the lead's choice; off here so that the test sees
    # whether the mounted Gradio app serves any.
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(FakeAuthMiddleware, store=store)
    mount_static(app)
    mount_home(app, settings, store)
    return app


def gradio_blocks(app: FastAPI, path: str = "") -> Any:
    for route in app.routes:
        if getattr(route, "path", None) == path and hasattr(route, "app"):
            return route.app.get_blocks()
    raise AssertionError(f"no Gradio app mounted at {path!r}")


async def client_for(app: FastAPI, session_id: str | None) -> httpx.AsyncClient:
    cookies = {TEST_COOKIE: session_id} if session_id else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", cookies=cookies
    )


@pytest.fixture
def store() -> InMemorySessionStore:
    return new_store()


@pytest.fixture
async def alice(store: InMemorySessionStore) -> AsyncIterator[httpx.AsyncClient]:
    session = await store.create("alice")
    async with await client_for(make_app(store), session.id) as client:
        yield client


def fn_index(config: dict[str, Any], api_name: str) -> int:
    matches = [d["id"] for d in config["dependencies"] if d["api_name"] == api_name]
    assert len(matches) == 1, api_name
    return int(matches[0])


async def call(client: httpx.AsyncClient, api_name: str, data: list[Any]) -> httpx.Response:
    config = (await client.get("/config")).json()
    return await client.post(
        "/gradio_api/run/predict",
        json={"fn_index": fn_index(config, api_name), "data": data, "session_hash": "h1"},
    )


async def test_config_is_served_to_a_signed_in_user(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/config")
    assert response.status_code == 200
    config = response.json()
    assert config["username"] == "alice"
    assert any(c["type"] == "tabitem" for c in config["components"])


async def test_production_options_are_in_effect(
    alice: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = (await alice.get("/config")).json()
    assert config["show_error"] is False
    assert config["footer_links"] == []
    assert config["max_file_size"] == MAX_FILE_SIZE
    assert config["analytics_enabled"] is False
    assert config["run_history"] is False
    assert config["pwa"] is False
    assert config["mcp_server"] is False
    assert "/static/prodio.js?v=" in config["head"]
    assert "/static/prodio.css?v=" in config["head"]
    assert config["stylesheets"] == []  # system fonts: nothing fetched for the theme


async def test_ssr_and_run_history_stay_off_whatever_the_environment(
    store: InMemorySessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADIO_SSR_MODE", "true")
    monkeypatch.setenv("GRADIO_RUN_HISTORY", "true")
    blocks = gradio_blocks(make_app(store))
    assert blocks.ssr_mode is False
    assert blocks.run_history is False
    assert blocks.show_error is False


async def test_api_link_only_when_show_api(store: InMemorySessionStore) -> None:
    session = await store.create("alice")
    async with await client_for(make_app(store, show_api=True), session.id) as client:
        assert (await client.get("/config")).json()["footer_links"] == ["api"]


async def test_page_html_carries_the_head(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/")
    assert response.status_code == 200
    assert "window.gradio_config" in response.text
    match = re.search(r"window\.gradio_config = (\{.*?\});</script>", response.text)
    assert match is not None
    assert "prodio.js" in json.loads(match.group(1))["head"]


async def test_openapi_of_the_gradio_app_is_not_served(alice: httpx.AsyncClient) -> None:
    assert (await alice.get("/openapi.json")).status_code == 404
    assert (await alice.get("/docs")).status_code == 404


async def test_unauthenticated_requests_never_reach_gradio(store: InMemorySessionStore) -> None:
    async with await client_for(make_app(store), None) as client:
        response = await client.get("/config")
    assert response.status_code == 401
    assert response.json()["login_url"].startswith("/login")


async def test_gradio_refuses_a_request_without_user_even_past_the_middleware(
    store: InMemorySessionStore,
) -> None:
    """Defence in depth: without request.state.user Gradio answers 401 by itself."""
    app = FastAPI()
    mount_home(app, Settings(secret_key="k" * 40), store)
    async with await client_for(app, None) as client:
        assert (await client.get("/config")).status_code == 401
        assert (await client.get("/")).status_code == 401


async def test_notepad_round_trip_over_http(alice: httpx.AsyncClient) -> None:
    saved = await call(alice, "notepad_save", ["hello from http"])
    assert saved.status_code == 200, saved.text
    assert saved.json()["data"][0].startswith("Saved 1 time")
    loaded = await call(alice, "notepad_load", [])
    assert loaded.json()["data"][0] == "hello from http"


async def test_two_instances_share_only_the_store(store: InMemorySessionStore) -> None:
    """A page served by instance A posts its events to instance B: same ids, same data."""
    session = await store.create("alice")
    async with (
        await client_for(make_app(store), session.id) as instance_a,
        await client_for(make_app(store), session.id) as instance_b,
    ):
        config_a = (await instance_a.get("/config")).json()
        config_b = (await instance_b.get("/config")).json()
        assert config_a["app_id"] == config_b["app_id"]
        assert config_a["dependencies"] == config_b["dependencies"]
        await call(instance_a, "notepad_save", ["written on A"])
        assert (await call(instance_b, "notepad_load", [])).json()["data"][0] == "written on A"


async def test_users_are_isolated_over_http(store: InMemorySessionStore) -> None:
    alice_session, bob_session = await store.create("alice"), await store.create("bob")
    app = make_app(store)
    async with (
        await client_for(app, alice_session.id) as alice,
        await client_for(app, bob_session.id) as bob,
    ):
        await call(alice, "notepad_save", ["for alice only"])
        assert (await call(bob, "notepad_load", [])).json()["data"][0] == ""
        header = await call(bob, "header_user", [])
        assert "<strong>bob</strong>" in header.json()["data"][0]


async def test_a_handler_error_shows_its_message_but_no_traceback(
    alice: httpx.AsyncClient,
) -> None:
    response = await call(alice, "text_stats", ["x" * 200_001])
    assert response.status_code == 500
    body = response.json()
    assert "the limit is 200,000" in body["error"]
    assert "Traceback" not in response.text


async def test_account_summary_over_http(alice: httpx.AsyncClient) -> None:
    response = await call(alice, "account_summary", [])
    assert response.status_code == 200
    assert "**alice**" in response.json()["data"][0]


def test_page_head_escapes_the_app_name() -> None:
    head = page_head(Settings(secret_key="k" * 40, app_name='x"><script>'))
    assert '"><script>' not in head
    assert "x&quot;&gt;&lt;script&gt;" in head


@pytest.mark.parametrize("mount_path", ["/", "/app"])
def test_gradio_api_requests_go_straight_to_the_mount(
    store: InMemorySessionStore, mount_path: str
) -> None:
    app = make_app(store, mount_path=mount_path)
    shortcut = app.router.routes[0]
    assert isinstance(shortcut, GradioApiShortcut)
    base = mount_path.rstrip("/")

    def match(path: str) -> Match:
        scope = {"type": "http", "path": path, "root_path": "", "method": "POST"}
        return shortcut.matches(scope)[0]

    assert match(f"{base}/gradio_api/run/predict") == Match.FULL
    assert match(f"{base}/gradio_api/queue/join") == Match.FULL
    # Everything else is left to the routes in their order: prodio's own, then the mount.
    for path in ("/login", "/static/prodio.css", f"{base}/config", f"{base}/gradio_apix"):
        assert match(path) == Match.NONE


async def test_events_work_through_the_shortcut_under_a_mount_path(
    store: InMemorySessionStore,
) -> None:
    session = await store.create("alice")
    async with await client_for(make_app(store, mount_path="/app"), session.id) as client:
        config = (await client.get("/app/config")).json()
        response = await client.post(
            "/app/gradio_api/run/predict",
            json={
                "fn_index": fn_index(config, "notepad_save"),
                "data": ["through the shortcut"],
                "session_hash": "h1",
            },
        )
    assert response.status_code == 200, response.text
    assert "Saved 1 time" in json.dumps(response.json())
