"""One log line per request, and a generic 500 (logged with its traceback) on a crash.

The line carries method, path, user, a short session tag, status, duration and a request
id. The tag is a keyed hash of the session id: it lets an operator follow one session
through the logs without the logs ever holding a value that could be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.logs import escape_control
from prodio.middleware.http import send_error

logger = logging.getLogger("prodio.request")

STATE_REQUEST_ID = "request_id"
_INCOMING_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class SessionTagger:
    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"prodio session tag v1", hashlib.sha256).digest()

    def tag(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:12]


class RequestLoggingMiddleware:
    def __init__(self, app: ASGIApp, *, tagger: SessionTagger) -> None:
        self.app = app
        self.tagger = tagger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        # Read now: Starlette's routers update the shared scope (root_path) on the way in.
        path = escape_control(scope.get("path", ""))
        state = scope.setdefault("state", {})
        request_id = self._request_id(scope)
        state[STATE_REQUEST_ID] = request_id
        status = 0

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            logger.exception(
                "unhandled error",
                extra=self._fields(scope, path, request_id, status or 500, started),
            )
            if status != 0:
                # Headers are out: the only honest signal left is to abort the connection.
                raise
            await send_error(
                scope,
                send,
                500,
                "Something went wrong",
                f"The error was logged; quote request id {request_id} when reporting it.",
                [(b"x-request-id", request_id.encode())],
            )
            return
        logger.info("request", extra=self._fields(scope, path, request_id, status, started))

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                candidate = bytes(value).decode("latin-1")
                if _INCOMING_REQUEST_ID.fullmatch(candidate):
                    return candidate
                break
        return uuid.uuid4().hex

    def _fields(
        self, scope: Scope, path: str, request_id: str, status: int, started: float
    ) -> dict[str, object]:
        state = scope.get("state", {})
        session_id = state.get("session_id")
        client = scope.get("client")
        return {
            "request_id": request_id,
            "method": scope.get("method", ""),
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "user": state.get("user") or "-",
            "session": self.tagger.tag(session_id) if session_id else "-",
            "client": client[0] if client else "-",
        }
