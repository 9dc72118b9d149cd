"""Test helpers shared by tests/ui and tests/pages: requests as prodio's middleware leaves them."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from http.cookies import SimpleCookie
from typing import Any

import gradio as gr
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from prodio.session.base import Session, SessionStore, SessionTimeouts
from prodio.session.memory import InMemorySessionStore

TEST_COOKIE = "test_session"
PUBLIC_PREFIXES = ("/static/", "/favicon.ico", "/manifest.json")


def new_store(idle: float = 600, absolute: float = 3600) -> InMemorySessionStore:
    return InMemorySessionStore(SessionTimeouts(idle=idle, absolute=absolute))


def request_state_for(session: Session) -> dict[str, Any]:
    """What the lead's middleware puts on ``request.state`` for an authenticated request."""
    return {
        "user": session.username,
        "session": session,
        "session_id": session.id,
        "request_id": secrets.token_hex(8),
    }


def starlette_request(state: dict[str, Any], path: str = "/gradio_api/run/predict") -> Request:
    scope: Scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": state,
    }
    return Request(scope)


async def gradio_request(store: SessionStore, session: Session) -> gr.Request:
    """A real ``gr.Request`` around a starlette request, as a fresh page request sees it.

    Loads the session again (as the middleware does on every request, touching it), so a
    second call is what a reload or the next event would see.
    """
    live = await store.load(session.id)
    if live is None:
        raise AssertionError("the session is not live")
    return gr.Request(request=starlette_request(request_state_for(live)), username=live.username)


def bare_gradio_request(state: dict[str, Any]) -> gr.Request:
    """A ``gr.Request`` whose starlette request carries exactly ``state``."""
    return gr.Request(request=starlette_request(state))


class FakeAuthMiddleware:
    """Stands in for the lead's middleware: a cookie names a session in the store.

    Public paths pass without a session; any other request without a live session gets
    401 JSON like the real one. Pure ASGI (no BaseHTTPMiddleware).
    """

    def __init__(self, app: ASGIApp, store: SessionStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        session_id = None
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                cookie: SimpleCookie = SimpleCookie()
                cookie.load(value.decode("latin-1"))
                if TEST_COOKIE in cookie:
                    session_id = cookie[TEST_COOKIE].value
        session = await self.store.load(session_id) if session_id else None
        if session is None:
            body = json.dumps(
                {"detail": "not authenticated", "login_url": f"/login?next={scope['path']}"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {}).update(request_state_for(session))
        await self.app(scope, receive, send)


class CountingStore:
    """Forwards to a real store and counts the calls per method."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.timeouts = inner.timeouts
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted
