"""SecurityHeadersMiddleware on small ASGI apps: which header, when, and never a buffered body."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.middleware.headers import (
    ALLOWED_METHODS,
    BASE_HEADERS,
    GRADIO_PAGE_POLICY,
    HSTS_VALUE,
    NON_DOCUMENT_POLICY,
    PRODIO_PAGE_POLICY,
    SecurityHeadersMiddleware,
)

pytestmark = pytest.mark.anyio


def responder(
    status: int = 200,
    content_type: str = "application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
    user: str | None = None,
) -> ASGIApp:
    """An app that answers with fixed headers, as if an auth middleware set ``user``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if user is not None:
            scope.setdefault("state", {})["user"] = user
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode()), *(headers or [])],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def fetch(
    app: ASGIApp, path: str = "/", method: str = "GET", **options: Any
) -> httpx.Response:
    wrapped = SecurityHeadersMiddleware(app, **{"hsts": False, **options})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wrapped), base_url="http://testserver"
    ) as client:
        return await client.request(method, path)


async def test_every_base_header_is_added() -> None:
    response = await fetch(responder())
    for name, value in BASE_HEADERS:
        assert response.headers[name] == value
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize(("name", "_value"), BASE_HEADERS)
async def test_a_header_the_app_set_is_kept(name: str, _value: str) -> None:
    response = await fetch(responder(headers=[(name.encode(), b"app-choice")]))
    assert response.headers.get_list(name) == ["app-choice"]


async def test_a_policy_the_app_set_is_kept() -> None:
    own = b"default-src 'none'; sandbox"
    response = await fetch(responder(headers=[(b"content-security-policy", own)]))
    assert response.headers.get_list("content-security-policy") == [own.decode()]


@pytest.mark.parametrize(
    ("status", "content_type", "path", "policy"),
    [
        (200, "text/html; charset=utf-8", "/", GRADIO_PAGE_POLICY),
        (200, "TEXT/HTML", "/some/page", GRADIO_PAGE_POLICY),
        (200, "text/html", "/login", PRODIO_PAGE_POLICY),
        (401, "text/html", "/login", PRODIO_PAGE_POLICY),
        (403, "text/html", "/", PRODIO_PAGE_POLICY),
        (500, "text/html", "/", PRODIO_PAGE_POLICY),
        (303, "text/html", "/", PRODIO_PAGE_POLICY),
        (200, "application/json", "/", NON_DOCUMENT_POLICY),
        (200, "image/svg+xml", "/static/favicon.svg", NON_DOCUMENT_POLICY),
        (200, "text/event-stream", "/gradio_api/queue/data", NON_DOCUMENT_POLICY),
        (200, "", "/", NON_DOCUMENT_POLICY),
    ],
)
async def test_policy_depends_on_what_the_response_is(
    status: int, content_type: str, path: str, policy: str
) -> None:
    response = await fetch(responder(status, content_type), path, prodio_pages={"/login"})
    assert response.headers["content-security-policy"] == policy


@pytest.mark.parametrize("policy", [GRADIO_PAGE_POLICY, PRODIO_PAGE_POLICY, NON_DOCUMENT_POLICY])
def test_every_policy_forbids_framing_and_plugins(policy: str) -> None:
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
    assert "*" not in policy
    assert "http:" not in policy
    assert "https:" not in policy
    if policy != NON_DOCUMENT_POLICY:
        assert directives["object-src"] == "'none'"
        assert directives["form-action"] == "'self'"


def test_prodio_pages_run_no_script_at_all() -> None:
    assert "script-src" not in PRODIO_PAGE_POLICY
    assert "'unsafe" not in PRODIO_PAGE_POLICY
    assert "base-uri 'none'" in PRODIO_PAGE_POLICY


async def test_the_page_policy_can_be_replaced() -> None:
    response = await fetch(responder(200, "text/html"), page_policy="default-src 'self'")
    assert response.headers["content-security-policy"] == "default-src 'self'"


async def test_credentials_echoed_into_a_response_are_removed() -> None:
    echoed = [
        (b"cookie", b"prodio_session=secret-jwt"),
        (b"Authorization", b"Bearer secret"),
        (b"proxy-authorization", b"Basic secret"),
        (b"content-range", b"bytes 0-1/2"),
    ]
    response = await fetch(responder(206, "text/plain", headers=echoed))
    assert "cookie" not in response.headers
    assert "authorization" not in response.headers
    assert "proxy-authorization" not in response.headers
    assert "secret" not in str(response.headers)
    assert response.headers["content-range"] == "bytes 0-1/2"


async def test_set_cookie_is_kept() -> None:
    response = await fetch(responder(headers=[(b"set-cookie", b"a=b; HttpOnly")]))
    assert response.headers["set-cookie"] == "a=b; HttpOnly"


async def test_not_modified_gets_no_policy() -> None:
    response = await fetch(responder(304, "text/html"))
    assert "content-security-policy" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_hsts_only_when_turned_on() -> None:
    assert "strict-transport-security" not in (await fetch(responder())).headers
    response = await fetch(responder(), hsts=True)
    assert response.headers["strict-transport-security"] == HSTS_VALUE
    assert "includeSubDomains" in HSTS_VALUE
    max_age = int(HSTS_VALUE.split(";")[0].removeprefix("max-age="))
    assert max_age >= 365 * 24 * 3600


async def test_authenticated_responses_are_not_stored() -> None:
    response = await fetch(responder(user="alice"))
    assert response.headers["cache-control"] == "no-store"


async def test_anonymous_responses_keep_their_caching() -> None:
    response = await fetch(responder())
    assert "cache-control" not in response.headers


async def test_an_app_chosen_cache_control_is_kept_for_a_user() -> None:
    app = responder(user="alice", headers=[(b"cache-control", b"public, max-age=3600")])
    response = await fetch(app, "/static/prodio.css")
    assert response.headers.get_list("cache-control") == ["public, max-age=3600"]


async def test_cacheable_prefixes_get_no_no_store() -> None:
    app = responder(user="alice", content_type="text/javascript")
    kept = await fetch(app, "/assets/index-abc.js", cacheable_prefixes=("/assets/",))
    assert "cache-control" not in kept.headers
    other = await fetch(app, "/gradio_api/file=x", cacheable_prefixes=("/assets/",))
    assert other.headers["cache-control"] == "no-store"


async def call_raw(app: ASGIApp, scope: Scope, **options: Any) -> list[Message]:
    """Call the middleware with ``scope`` as given (an HTTP client would normalise it)."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    await SecurityHeadersMiddleware(app, **{"hsts": False, **options})(scope, receive, send)
    return messages


@pytest.mark.parametrize("path", ["/assets/../gradio_api/info", "/assets/./x", "/assets\\..\\x"])
async def test_dot_segments_are_never_cacheable(path: str) -> None:
    scope: Scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    [start, _body] = await call_raw(
        responder(user="alice"), scope, cacheable_prefixes=("/assets/",)
    )
    assert (b"cache-control", b"no-store") in start["headers"]


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "CONNECT", "PROPFIND", "DEBUG"])
async def test_unusual_methods_are_refused_before_the_app(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["method"])
        await responder()(scope, receive, send)

    with caplog.at_level(logging.WARNING, logger="prodio.security"):
        response = await fetch(app, "/anything", method=method)
    assert response.status_code == 405
    assert response.json() == {"detail": "method not allowed"}
    assert response.headers["allow"] == ", ".join(ALLOWED_METHODS)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == NON_DOCUMENT_POLICY
    assert reached == []
    [record] = [r for r in caplog.records if r.name == "prodio.security"]
    assert record.method == method  # type: ignore[attr-defined]


async def test_a_logged_method_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    scope: Scope = {"type": "http", "method": "X\nINJECTED", "path": "/a\rb", "headers": []}
    with caplog.at_level(logging.WARNING, logger="prodio.security"):
        messages = await call_raw(responder(), scope)
    assert messages[0]["status"] == 405
    [record] = caplog.records
    assert "\n" not in record.method  # type: ignore[attr-defined]
    assert "\r" not in record.path  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ALLOWED_METHODS)
async def test_usual_methods_reach_the_app(method: str) -> None:
    response = await fetch(responder(), method=method)
    assert response.status_code == 200


async def test_bodies_are_passed_on_as_they_come() -> None:
    """A streamed response (Gradio's SSE) must reach the client chunk by chunk."""
    seen_by_client: list[bytes] = []
    seen_when_inner_sent: list[list[bytes]] = []

    async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for chunk in (b"data: one\n\n", b"data: two\n\n"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            seen_when_inner_sent.append(list(seen_by_client))
        await send({"type": "http.response.body", "body": b""})

    async def client_send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            seen_by_client.append(message["body"])

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope: Scope = {"type": "http", "method": "GET", "path": "/sse", "headers": []}
    await SecurityHeadersMiddleware(streaming_app, hsts=False)(scope, receive, client_send)
    assert seen_when_inner_sent == [[b"data: one\n\n"], [b"data: one\n\n", b"data: two\n\n"]]


async def test_websockets_pass_untouched() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing should be sent")

    middleware: Callable[..., Any] = SecurityHeadersMiddleware(app, hsts=True)
    await middleware({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    assert calls == ["websocket"]
