"""Cross-site request forgery protection for every route, Gradio's included.

Gradio's routes (``queue/join``, ``run/*``, ``call/*``, ``upload``, ``component_server``,
``reset``, ``cancel``, ...) change state on POST and cannot carry prodio's CSRF token. So every
state-changing request (POST, PUT, PATCH, DELETE), to any path, must show that a page of this
site sent it: ``Sec-Fetch-Site: same-origin`` when the browser sends fetch metadata, else an
``Origin`` equal to ours (the rules of :func:`prodio.routes.csrf.is_same_origin_request`).
``/login`` and ``/logout`` check their signed tokens on top of this.

A request with neither header is refused too. Every browser of the last years sends ``Origin``
on a POST, so such a request comes from a very old browser (exactly what a forged request
looks like there) or from a script. This middleware sits behind authentication, so the
requests it sees on non-public paths carry a session cookie: a script with a cookie can add
``Origin`` itself, and one without a cookie never gets this far. Safe methods (GET, HEAD,
OPTIONS) pass: no route of prodio changes state on them.

CORS: no ``Access-Control-Allow-*`` header leaves the app on a response to a request that is
not same-origin. Mounted Gradio adds its own CORS handling when the parent app has no
``CORSMiddleware``, and it echoes any ``Origin`` with ``Access-Control-Allow-Credentials:
true`` unless the server's host name is ``localhost``; stripping the headers here makes a
foreign or ``null`` origin unable to read any response, whatever Gradio does.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.audit import audit_origin_refused
from prodio.middleware.http import is_page_load, send_error, send_json
from prodio.routes.csrf import is_same_origin_request

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ORIGIN_HEADERS = (b"origin", b"sec-fetch-site")
REFUSED_DETAIL = "cross-origin request refused"
# Enough to recognise an origin in a log line; an attacker's header is not stored whole.
_CORS_RESPONSE_PREFIX = b"access-control-"
# A page at http(s)://host opens ws(s)://host: the same origin for this check.
_PAGE_SCHEME_OF_SOCKET = {"ws": "http", "wss": "https"}


class OriginCheckMiddleware:
    """Refuse (403) state-changing requests and WebSocket handshakes from other origins."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        if (
            scope["type"] == "http"
            and scope["method"] not in STATE_CHANGING_METHODS
            and not any(name in _ORIGIN_HEADERS for name, _ in scope["headers"])
        ):
            # A read without Origin: nothing to refuse, and no CORS header can matter, since
            # browsers send Origin with every cross-origin read. Most requests (page loads,
            # polling, scripts) take this path, which skips parsing the request's origin.
            await self.app(scope, receive, send)
            return

        same_origin = is_same_origin_request(HTTPConnection(_as_page_scope(scope)))
        if scope["type"] == "websocket":
            # Browsers send cookies and Origin on a WebSocket handshake but never a preflight:
            # without this, any site could open a socket as the signed-in user.
            if not same_origin:
                audit_origin_refused(scope)
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return

        if scope["method"] in STATE_CHANGING_METHODS and not same_origin:
            audit_origin_refused(scope)
            await self._refuse(scope, send)
            return
        if same_origin:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _without_cors_headers(send))

    @staticmethod
    async def _refuse(scope: Scope, send: Send) -> None:
        if is_page_load(scope):
            await send_error(
                scope,
                send,
                403,
                "Request refused",
                "This request did not come from a page of this site, so it was not carried "
                "out. Go back to the application and try again from there.",
            )
            return
        await send_json(send, 403, {"detail": REFUSED_DETAIL})


def _as_page_scope(scope: Scope) -> Scope:
    scheme = scope.get("scheme")
    if scope["type"] == "websocket" and scheme in _PAGE_SCHEME_OF_SOCKET:
        return {**scope, "scheme": _PAGE_SCHEME_OF_SOCKET[scheme]}
    return scope


def _without_cors_headers(send: Send) -> Send:
    """``send`` with every ``Access-Control-*`` response header removed."""

    async def send_without_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                (name, value)
                for name, value in message.get("headers", ())
                if not bytes(name).lower().startswith(_CORS_RESPONSE_PREFIX)
            ]
        await send(message)

    return send_without_cors
