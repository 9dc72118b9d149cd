"""Which server-side session does this request carry?

Reads the session cookie, verifies its JWT, loads the session from the store (the store
enforces the idle and absolute timeouts and moves ``last_seen``) and puts it on the request
state. A cookie that no longer leads to a live session is expired in the response, and
audited: ``session.rejected`` for a token this server did not issue (or that expired),
``session.expired`` for a genuine token whose session is gone (expired, logged out or
revoked: the store cannot tell which).

This middleware never refuses a request by itself: :mod:`prodio.middleware.auth`, inside it,
decides what an anonymous request may reach. When the store cannot be reached it records
that on the state, so that the auth middleware fails closed (503) instead of treating the
visitor as anonymous.
"""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.audit import (
    EVENT_SESSION_EXPIRED,
    EVENT_SESSION_REJECTED,
    FAILURE,
    STATE_SESSION_TAGGER,
    audit,
)
from prodio.middleware.http import header
from prodio.middleware.logging import SessionTagger
from prodio.session.base import SessionStore, SessionStoreUnavailable
from prodio.session.cookies import CookiePolicy, read_cookie
from prodio.session.tokens import InvalidSessionToken, SessionTokenCodec

logger = logging.getLogger("prodio.session")

STATE_SESSION = "session"
STATE_SESSION_ID = "session_id"
STATE_STORE_UNAVAILABLE = "session_store_unavailable"


class SessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        codec: SessionTokenCodec,
        cookies: CookiePolicy,
        tagger: SessionTagger | None = None,
    ) -> None:
        """``tagger`` (the request log's) lets the audit log name sessions by their tags."""
        self.app = app
        self.store = store
        self.codec = codec
        self.cookies = cookies
        self.tagger = tagger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        state = scope.setdefault("state", {})
        if self.tagger is not None:
            state[STATE_SESSION_TAGGER] = self.tagger
        token = read_cookie(header(scope, b"cookie") or "", self.cookies.session_cookie)
        if not token:
            await self.app(scope, receive, send)
            return

        stale_cookie = False
        try:
            claims = self.codec.verify(token)
        except InvalidSessionToken as exc:
            audit(EVENT_SESSION_REJECTED, FAILURE, scope, reason=str(exc))
            stale_cookie = True
        else:
            try:
                session = await self.store.load(claims.session_id)
            except SessionStoreUnavailable:
                logger.warning("session store unavailable")
                state[STATE_STORE_UNAVAILABLE] = True
                session = None
            else:
                if session is None or session.username != claims.username:
                    # Logged out, revoked, expired or never ours: the same to the visitor.
                    stale_cookie = True
                    audit(
                        EVENT_SESSION_EXPIRED,
                        FAILURE,
                        scope,
                        user=claims.username,
                        session_id=claims.session_id,
                        reason="no live session for this cookie (expired, ended or revoked)",
                    )
                else:
                    state[STATE_SESSION] = session
                    state[STATE_SESSION_ID] = session.id

        if not stale_cookie or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        expire = self.cookies.expired_header(self.cookies.session_cookie)

        async def send_expiring_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                already_set = any(
                    value.startswith(f"{self.cookies.session_cookie}=")
                    for value in headers.getlist("set-cookie")
                )
                if not already_set:
                    headers.append("set-cookie", expire)
            await send(message)

        await self.app(scope, receive, send_expiring_cookie)
