"""Small helpers shared by the ASGI middleware: reading a scope, answering without an app."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from starlette.types import Scope, Send

# Browsers decide what a response to a page load looks like; every other client gets JSON.
_HTML_ERROR = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/prodio.css"></head>
<body class="prodio-page"><main class="prodio-card" role="main"><h1>{title}</h1>
<p>{message}</p></main></body></html>"""


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` in lower case), decoded as Latin-1."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def is_page_load(scope: Scope) -> bool:
    """Whether the request is a browser navigation (a page), not a fetch/XHR/SSE call."""
    mode = header(scope, b"sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    if header(scope, b"x-requested-with") is not None:
        return False
    accept = header(scope, b"accept") or ""
    return "text/html" in accept


def path_with_query(scope: Scope) -> str:
    # ASGI's path is the full path, root_path included; routers rewrite root_path later.
    path = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def login_url(scope: Scope, login_path: str = "/login") -> str:
    """Where to send a visitor without a session; only GET page loads come back after login."""
    if scope.get("method") not in ("GET", "HEAD"):
        return login_path
    target = path_with_query(scope)
    if target in ("", "/"):
        return login_path
    return f"{login_path}?next={quote(target, safe='/')}"


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    payload: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(payload).encode()
    await send_response(send, status, body, "application/json", extra_headers)


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    title: str,
    message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An error without a traceback: a small HTML page for browsers, JSON for the rest."""
    if is_page_load(scope):
        page = _HTML_ERROR.format(title=html.escape(title), message=html.escape(message)).encode()
        await send_response(send, status, page, "text/html; charset=utf-8", extra_headers)
    else:
        await send_json(send, status, {"detail": message}, extra_headers)
