"""Cross-site requests through the whole app: Gradio's state-changing routes and CORS.

Each attack comes with the victim's valid session cookie (the browser would attach it) and
must be refused with nothing done; the same request from our own page must go through.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gradio.route_utils import CustomCORSMiddleware
from starlette.datastructures import Headers

from prodio.middleware.origin import REFUSED_DETAIL
from tests.apptest import BASE_URL, FETCH, PAGE, AppUnderTest, running_app

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
SAME_ORIGIN = {**FETCH, "origin": BASE_URL, "sec-fetch-site": "same-origin"}
CROSS_SITE = {**FETCH, "origin": "http://evil.example", "sec-fetch-site": "cross-site"}
NULL_ORIGIN = {**FETCH, "origin": "null", "sec-fetch-site": "cross-site"}
NO_ORIGIN_INFO = {"accept": "application/json"}
REFUSED_HEADERS = [
    pytest.param(CROSS_SITE, id="cross-site"),
    pytest.param({**FETCH, "origin": "http://evil.example"}, id="foreign-origin-only"),
    pytest.param(NULL_ORIGIN, id="null-origin"),
    pytest.param({**FETCH, "origin": "null"}, id="null-origin-only"),
    pytest.param({**FETCH, "sec-fetch-site": "same-site"}, id="same-site-subdomain"),
    pytest.param(NO_ORIGIN_INFO, id="neither-header"),
]


_user_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def shared_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AppUnderTest]:
    # One app for the module (building the Gradio app is the slow part); each test signs
    # in as a user of its own, whose note and session no other test touches.
    async with running_app(tmp_path_factory.mktemp("app")) as app_env:
        yield app_env


@pytest.fixture
def user() -> str:
    return f"user{next(_user_numbers)}"


@pytest.fixture
async def env(shared_app: AppUnderTest, user: str) -> AsyncIterator[AppUnderTest]:
    shared_app.add_user(user, PASSWORD)
    async with shared_app.new_client() as client:
        assert (await shared_app.login(user, PASSWORD, client=client)).status_code == 303
        yield dataclasses.replace(shared_app, client=client)


def gradio_app(env: AppUnderTest) -> Any:
    for route in env.app.routes:
        if hasattr(getattr(route, "app", None), "get_blocks"):
            return route.app  # type: ignore[attr-defined]
    raise AssertionError("no Gradio app mounted")


async def fn_index(client: httpx.AsyncClient, api_name: str) -> int:
    config = (await client.get("/config", headers=FETCH)).json()
    [index] = [d["id"] for d in config["dependencies"] if d["api_name"] == api_name]
    return int(index)


async def saved_note(env: AppUnderTest) -> str:
    body = {"fn_index": await fn_index(env.client, "notepad_load"), "data": []}
    response = await env.client.post("/gradio_api/run/predict", json=body, headers=SAME_ORIGIN)
    assert response.status_code == 200, response.text
    note: str = response.json()["data"][0]
    return note


def upload_folder_files(env: AppUnderTest) -> set[Path]:
    folder = Path(gradio_app(env).uploaded_file_dir)
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": REFUSED_DETAIL}


# --- Gradio's routes ------------------------------------------------------------------


@pytest.mark.parametrize("headers", REFUSED_HEADERS)
async def test_forged_predict_is_refused_and_changes_nothing(
    env: AppUnderTest, headers: dict[str, str]
) -> None:
    body = {"fn_index": await fn_index(env.client, "notepad_save"), "data": ["forged"]}
    response = await env.client.post("/gradio_api/run/predict", json=body, headers=headers)
    assert_refused(response)
    assert await saved_note(env) == ""


async def test_predict_from_our_page_goes_through(env: AppUnderTest) -> None:
    body = {"fn_index": await fn_index(env.client, "notepad_save"), "data": ["mine"]}
    response = await env.client.post("/gradio_api/run/predict", json=body, headers=SAME_ORIGIN)
    assert response.status_code == 200, response.text
    assert await saved_note(env) == "mine"


def join_body(index: int, session_hash: str) -> dict[str, Any]:
    return {"data": ["forged"], "fn_index": index, "session_hash": session_hash, "trigger_id": None}


@pytest.mark.parametrize("headers", REFUSED_HEADERS)
async def test_forged_queue_join_is_refused_and_queues_nothing(
    env: AppUnderTest, user: str, headers: dict[str, str]
) -> None:
    index = await fn_index(env.client, "notepad_save")
    response = await env.client.post(
        "/gradio_api/queue/join", json=join_body(index, user), headers=headers
    )
    assert_refused(response)
    queue = gradio_app(env).get_blocks()._queue
    assert [e for e in queue.event_ids_to_events.values() if e.session_hash == user] == []
    assert await saved_note(env) == ""


async def test_queue_join_from_our_page_goes_through(env: AppUnderTest) -> None:
    index = await fn_index(env.client, "notepad_save")
    response = await env.client.post(
        "/gradio_api/queue/join", json=join_body(index, "ours"), headers=SAME_ORIGIN
    )
    assert response.status_code == 200, response.text
    assert response.json()["event_id"]


@pytest.mark.parametrize("headers", REFUSED_HEADERS)
async def test_forged_upload_is_refused_and_stores_nothing(
    env: AppUnderTest, headers: dict[str, str]
) -> None:
    before = upload_folder_files(env)
    response = await env.client.post(
        "/gradio_api/upload",
        files={"files": ("planted.html", b"<script>alert(1)</script>", "text/html")},
        headers=headers,
    )
    assert_refused(response)
    assert upload_folder_files(env) == before


async def test_upload_from_our_page_goes_through(env: AppUnderTest) -> None:
    response = await env.client.post(
        "/gradio_api/upload",
        files={"files": ("note.txt", b"hello", "text/plain")},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert await anyio.Path(stored).read_bytes() == b"hello"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/gradio_api/call/notepad_save"),
        ("POST", "/gradio_api/component_server"),
        ("POST", "/gradio_api/reset"),
        ("POST", "/gradio_api/cancel"),
        ("POST", "/gradio_api/queue/join"),
        ("POST", "/gradio_api/stream/x"),
        ("PUT", "/gradio_api/upload"),
        ("PATCH", "/config"),
        ("DELETE", "/gradio_api/file=x"),
        ("POST", "/api/session"),
    ],
)
async def test_every_state_changing_route_checks_the_origin(
    env: AppUnderTest, method: str, path: str
) -> None:
    response = await env.client.request(method, path, headers=CROSS_SITE, content=b"{}")
    assert_refused(response)


async def test_a_cross_site_form_post_gets_a_page(env: AppUnderTest) -> None:
    headers = {**PAGE, "origin": "http://evil.example", "sec-fetch-site": "cross-site"}
    response = await env.client.post("/gradio_api/run/predict", data={"x": "1"}, headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "did not come from a page of this site" in response.text


async def test_a_refusal_is_logged(
    env: AppUnderTest, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="prodio.audit"):
        await env.client.post("/gradio_api/upload", headers=CROSS_SITE, content=b"")
    [record] = [r for r in caplog.records if r.name == "prodio.audit"]
    assert vars(record)["event"] == "origin.rejected"
    assert vars(record)["user"] == user
    assert vars(record)["origin"] == "http://evil.example"
    assert vars(record)["path"] == "/gradio_api/upload"


async def test_anonymous_cross_site_posts_still_get_401(env: AppUnderTest) -> None:
    async with env.new_client() as stranger:
        response = await stranger.post("/gradio_api/queue/join", json={}, headers=CROSS_SITE)
    assert response.status_code == 401


async def test_logout_keeps_its_own_token_check(env: AppUnderTest) -> None:
    headers = {**PAGE, "origin": BASE_URL, "sec-fetch-site": "same-origin"}
    response = await env.client.post("/logout", data={"csrf_token": "forged"}, headers=headers)
    assert response.status_code == 403
    assert (await env.client.get("/api/session", headers=FETCH)).status_code == 200


# --- CORS -------------------------------------------------------------------------------


def cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://prodio.test.evil"])
@pytest.mark.parametrize("path", ["/config", "/gradio_api/info", "/api/session", "/"])
async def test_no_cors_grant_for_a_foreign_origin_with_the_cookie(
    env: AppUnderTest, origin: str, path: str
) -> None:
    response = await env.client.get(path, headers={**FETCH, "origin": origin})
    assert response.status_code == 200
    assert cors_headers(response) == []


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
@pytest.mark.parametrize("path", ["/gradio_api/queue/join", "/gradio_api/upload", "/config"])
async def test_no_cors_grant_in_a_preflight(env: AppUnderTest, origin: str, path: str) -> None:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    # A preflight never carries cookies; try with the cookie too, in case Gradio answers.
    async with env.new_client() as anonymous:
        without_cookie = await anonymous.options(path, headers=headers)
    with_cookie = await env.client.options(path, headers=headers)
    for response in (without_cookie, with_cookie):
        assert cors_headers(response) == []


async def test_gradio_would_grant_it_without_prodio(env: AppUnderTest) -> None:
    """The hole the CORS check closes: Gradio's own middleware echoes any origin."""
    middleware = CustomCORSMiddleware(gradio_app(env))
    request_headers = Headers({"origin": "http://evil.example", "host": "prodio.test"})
    assert middleware.is_valid_origin(request_headers)
