"""Deny by default: what an anonymous request gets, by kind of request and path."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect

from prodio.middleware.auth import (
    SESSION_MUST_CHANGE_PASSWORD,
    AuthenticatedUser,
    AuthMiddleware,
    PublicPaths,
)
from prodio.middleware.session import STATE_STORE_UNAVAILABLE
from prodio.session.base import Session, SessionStoreUnavailable

PUBLIC = PublicPaths(exact={"/login", "/healthz"}, prefixes={"/static/"})
SESSION = Session("sid", "alice", 0.0, 0.0, 1e12, 1e12)
# A session that may only change its password (a temporary password was used to sign in).
MUST_CHANGE = Session(
    "sid2", "carol", 0.0, 0.0, 1e12, 1e12, data={SESSION_MUST_CHANGE_PASSWORD: True}
)


class HeaderAuthenticator:
    """Who-is-this from a test header, so these tests isolate the middleware's decisions."""

    async def authenticate(self, scope: Scope) -> AuthenticatedUser | None:
        for key, value in scope["headers"]:
            if key == b"x-test-user":
                if value == b"store-down":
                    raise SessionStoreUnavailable
                if value == b"carol":
                    return AuthenticatedUser("carol", MUST_CHANGE)
                return AuthenticatedUser(value.decode(), SESSION)
        if b"x-store-down" in dict(scope["headers"]):
            scope["state"][STATE_STORE_UNAVAILABLE] = True
        return None


async def whoami(request: Request) -> PlainTextResponse:
    return PlainTextResponse(getattr(request.state, "user", "anonymous"))


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def _client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[
            Route("/{path:path}", whoami, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            WebSocketRoute("/ws", ws_endpoint),
        ]
    )
    wrapped = AuthMiddleware(app, authenticator=HeaderAuthenticator(), public_paths=PUBLIC)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


PAGE = {"sec-fetch-mode": "navigate", "accept": "text/html"}
FETCH = {"sec-fetch-mode": "cors", "accept": "application/json"}


@pytest.mark.anyio
async def test_authenticated_request_reaches_app_with_user_on_state() -> None:
    async with _client() as client:
        response = await client.get("/anything", headers={"x-test-user": "alice"})
    assert response.status_code == 200
    assert response.text == "alice"


@pytest.mark.anyio
async def test_page_load_without_session_redirects_to_login_with_next() -> None:
    async with _client() as client:
        response = await client.get("/deep/page?tab=2", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/deep/page%3Ftab%3D2"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.anyio
async def test_root_page_load_redirects_without_next() -> None:
    async with _client() as client:
        response = await client.get("/", headers=PAGE)
    assert response.headers["location"] == "/login"


@pytest.mark.anyio
async def test_plain_browser_without_fetch_metadata_is_a_page_load() -> None:
    async with _client() as client:
        response = await client.get("/x", headers={"accept": "text/html,*/*"})
    assert response.status_code == 303


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_api_call_without_session_gets_401_json(method: str) -> None:
    async with _client() as client:
        response = await client.request(method, "/gradio_api/queue/join", headers=FETCH)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "not authenticated",
        "login_url": "/login" if method != "GET" else "/login?next=/gradio_api/queue/join",
    }


@pytest.mark.anyio
async def test_xhr_with_html_accept_still_gets_401() -> None:
    async with _client() as client:
        response = await client.get("/x", headers={"accept": "text/html", "x-requested-with": "x"})
    assert response.status_code == 401


@pytest.mark.anyio
async def test_post_navigation_goes_to_login_without_next() -> None:
    async with _client() as client:
        response = await client.post("/logout", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/login", "/healthz", "/static/prodio.css", "/static/a/b.js"])
async def test_public_paths_pass_anonymous(path: str) -> None:
    async with _client() as client:
        response = await client.get(path, headers=FETCH)
    assert response.status_code == 200
    assert response.text == "anonymous"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/login/x",
        "/loginx",
        "/healthz/",
        "/static",
        "/static/a\\b",
        "/STATIC/x",
        "/gradio_api/file=/etc/passwd",
    ],
)
async def test_near_misses_of_public_paths_are_denied(path: str) -> None:
    async with _client() as client:
        response = await client.get(path, headers=FETCH)
    assert response.status_code == 401


@pytest.mark.anyio
async def test_store_unavailable_fails_closed_with_503() -> None:
    async with _client() as client:
        raised = await client.get("/x", headers={**FETCH, "x-test-user": "store-down"})
        flagged = await client.get("/x", headers={**FETCH, "x-store-down": "1"})
        page = await client.get("/x", headers={**PAGE, "x-store-down": "1"})
    for response in (raised, flagged):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "Traceback" not in response.text
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")


@pytest.mark.anyio
async def test_store_unavailable_still_serves_public_paths() -> None:
    async with _client() as client:
        response = await client.get("/healthz", headers={"x-store-down": "1"})
    assert response.status_code == 200


def test_websocket_without_session_is_closed_with_policy_violation() -> None:
    app = Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)])
    wrapped = AuthMiddleware(app, authenticator=HeaderAuthenticator(), public_paths=PUBLIC)
    with TestClient(wrapped) as client:
        with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws"):
            pass
        assert closed.value.code == 1008
        with client.websocket_connect("/ws", headers={"x-test-user": "alice"}) as ws:
            assert ws.receive_text() == "hello"


CAROL = {"x-test-user": "carol"}


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/", "/gradio_api/queue/join", "/api/session", "/account"])
async def test_a_session_that_must_change_its_password_reaches_nothing_else(path: str) -> None:
    async with _client() as client:
        page = await client.get(path, headers={**PAGE, **CAROL})
        api = await client.post(path, headers={**FETCH, **CAROL})
    assert page.status_code == 303
    assert page.headers["location"] == "/account/password"
    assert page.headers["cache-control"] == "no-store"
    assert api.status_code == 403
    assert api.json() == {
        "detail": "password change required",
        "password_change_url": "/account/password",
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/account/password", "/logout", "/login", "/healthz", "/static/prodio.css"]
)
async def test_a_session_that_must_change_its_password_reaches_the_change_and_logout(
    path: str,
) -> None:
    async with _client() as client:
        for method in ("GET", "POST"):
            response = await client.request(method, path, headers={**PAGE, **CAROL})
            assert response.status_code == 200, (method, path)
            assert response.text == "carol"


def test_a_session_that_must_change_its_password_gets_no_websocket() -> None:
    app = Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)])
    wrapped = AuthMiddleware(app, authenticator=HeaderAuthenticator(), public_paths=PUBLIC)
    with TestClient(wrapped) as client:
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/ws", headers=CAROL),
        ):
            pass
        assert closed.value.code == 1008


def test_public_prefixes_must_end_with_slash() -> None:
    with pytest.raises(ValueError, match="end with"):
        PublicPaths(exact=(), prefixes=("/static",))


@pytest.mark.parametrize(
    "path", ["/static/../gradio_api/info", "/static/./x", "/static/a/../../config", "/static/\x00"]
)
def test_dot_segments_under_public_prefixes_are_not_public(path: str) -> None:
    # Sent as a raw ASGI path: HTTP clients would normalize these before sending.
    assert path not in PUBLIC
