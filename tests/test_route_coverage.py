"""Every route the app has, FastAPI's and the mounted Gradio app's, refuses anonymous callers.

The routes are found by walking the live app, not from a list: a route that a future Gradio
version adds is walked, and fails here if it is reachable without a session.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from starlette.routing import BaseRoute, Host, Mount, Route, WebSocketRoute

from prodio.ui.mount import GradioApiShortcut
from tests.apptest import FETCH, PAGE, running_app

PUBLIC = {"/login", "/healthz", "/readyz", "/favicon.ico", "/manifest.json", "/static/x"}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PARAM = re.compile(r"{[^}]+}")


def walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(concrete path, kind) for every route, through mounts and included routers."""
    for route in routes:
        if hasattr(route, "original_router") and hasattr(route, "include_context"):
            # FastAPI >= 0.16x keeps included routers as objects of their own in app.routes.
            yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, GradioApiShortcut):
            # The same Gradio mount again, reached first for <mount>/gradio_api/ paths.
            yield from walk([route.mount], prefix)
        elif isinstance(route, Mount):
            children = route.routes
            if children:
                yield from walk(children, prefix + route.path)
            else:
                yield prefix + route.path + "/x", "http"
        elif isinstance(route, WebSocketRoute):
            yield prefix + _PARAM.sub("x", route.path), "websocket"
        elif isinstance(route, Route) or hasattr(route, "path"):
            yield prefix + _PARAM.sub("x", route.path), "http"  # type: ignore[attr-defined]
        elif isinstance(route, Host):
            pytest.fail(f"host routes are not expected: {route!r}")
        else:
            pytest.fail(f"unknown route type {type(route).__name__}: extend walk()")


@pytest.mark.anyio
async def test_every_route_outside_the_allowlist_refuses_anonymous_callers(tmp_path: Path) -> None:
    async with running_app(tmp_path) as env:
        found = sorted(set(walk(env.app.routes)))
        paths = {path for path, _ in found}
        # The walk must really reach Gradio's routes, or this test proves nothing.
        for expected in (
            "/gradio_api/queue/join",
            "/gradio_api/upload",
            "/config",
            "/gradio_api/heartbeat/x",
            "/gradio_api/file=x",
            "/theme.css",
        ):
            assert expected in paths, f"walk missed {expected}"
        assert len(paths) > 40
        # And prodio's own pages behind a session, the account pages among them.
        for own in ("/logout", "/api/session", "/account/password", "/account/sessions"):
            assert own in paths, f"walk missed {own}"

        checked = 0
        # WebSocket routes are probed over HTTP too: the middleware decides before routing.
        for path, _kind in found:
            if path in PUBLIC or path.startswith("/static/"):
                continue
            for method in METHODS:
                api = await env.client.request(method, path, headers=FETCH)
                assert api.status_code == 401, (method, path, api.status_code)
                checked += 1
            page = await env.client.get(path, headers=PAGE)
            assert page.status_code == 303, (path, page.status_code)
            assert page.headers["location"].startswith("/login")
        assert checked > 200


@pytest.mark.anyio
async def test_allowlisted_routes_answer_without_a_session(tmp_path: Path) -> None:
    async with running_app(tmp_path) as env:
        for path in (
            "/login",
            "/healthz",
            "/readyz",
            "/favicon.ico",
            "/manifest.json",
            "/static/prodio.css",
        ):
            response = await env.client.get(path)
            assert response.status_code == 200, path
