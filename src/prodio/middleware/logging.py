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
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.logs import REQUEST_LOGGER, escape_control, write_request_line
from prodio.middleware.http import send_error

logger = logging.getLogger(REQUEST_LOGGER)

STATE_REQUEST_ID = "request_id"
_INCOMING_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class SessionTagger:
    # Tags of recent sessions, so a busy session's every request does not pay for an HMAC.
    CACHE_SIZE = 10_000

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"prodio session tag v1", hashlib.sha256).digest()
        self._recent: dict[str, str] = {}

    def tag(self, session_id: str) -> str:
        tag = self._recent.get(session_id)
        if tag is None:
            tag = hmac.digest(self._key, session_id.encode(), "sha256").hex()[:12]
            if len(self._recent) >= self.CACHE_SIZE:
                self._recent.clear()
            self._recent[session_id] = tag
        return tag


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
        request_id_header = (b"x-request-id", request_id.encode())

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Appended, not set: no route of ours names a request id of its own.
                message["headers"] = [*message.get("headers", ()), request_id_header]
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
        if logger.isEnabledFor(logging.INFO):
            fields = self._fields(scope, path, request_id, status, started)
            if not write_request_line(logger, "request", fields):
                # makeRecord + handle is what logger.info does, minus looking up the
                # caller's file and line (a walk up the stack, on every request, for fields
                # no formatter of ours prints).
                logger.handle(
                    logger.makeRecord(
                        logger.name, logging.INFO, __file__, 0, "request", (), None, extra=fields
                    )
                )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                candidate = bytes(value).decode("latin-1")
                if _INCOMING_REQUEST_ID.fullmatch(candidate):
                    return candidate
                break
        return secrets.token_hex(16)

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
