"""Deny by default: every path needs a live session, except a short, explicit allowlist.

"Who is this?" is the :class:`Authenticator`'s question; this middleware only decides what
happens to a request that has no answer. Gradio's own routes (queue, heartbeat, upload,
file, theme, config, ...) are covered because nothing is allowed unless listed here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from prodio.audit import (
    EVENT_ACCESS_DENIED,
    EVENT_SESSION_REVOKED,
    FAILURE,
    SUCCESS,
    audit,
)
from prodio.middleware.http import is_page_load, login_url, send_error, send_json
from prodio.middleware.session import STATE_SESSION, STATE_STORE_UNAVAILABLE
from prodio.session.base import Session, SessionStore, SessionStoreUnavailable
from prodio.users.base import UserStore, UserStoreUnavailable

logger = logging.getLogger("prodio.auth")

STATE_USER = "user"
STATE_AUTH_UNAVAILABLE = "auth_unavailable"


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    username: str
    session: Session


class Authenticator(Protocol):
    async def authenticate(self, scope: Scope) -> AuthenticatedUser | None:
        """The user behind this request, or None. May raise the stores' *Unavailable errors."""
        ...


class SessionAuthenticator:
    """A request is authenticated when it carries a live session of an enabled account.

    The account is re-read from the user store at most every ``recheck_interval`` seconds
    per user, so an account disabled or removed from the CLI loses its sessions on every
    instance within that time, even with sessions held in another process's memory.
    """

    def __init__(
        self, users: UserStore, sessions: SessionStore, *, recheck_interval: float = 30.0
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.recheck_interval = recheck_interval
        self._checked_at: dict[str, float] = {}

    async def authenticate(self, scope: Scope) -> AuthenticatedUser | None:
        session: Session | None = scope.get("state", {}).get(STATE_SESSION)
        if session is None:
            return None
        if not await self._account_is_active(session, scope):
            return None
        return AuthenticatedUser(session.username, session)

    async def _account_is_active(self, session: Session, scope: Scope) -> bool:
        now = time.monotonic()
        checked_at = self._checked_at.get(session.username)
        if checked_at is not None and now - checked_at < self.recheck_interval:
            return True
        user = await anyio.to_thread.run_sync(self.users.get, session.username)
        if (
            user is None
            or user.disabled
            or user.password_changed_at.timestamp() > session.created_at
        ):
            self._checked_at.pop(session.username, None)
            ended = await self.sessions.delete_user_sessions(session.username)
            audit(
                EVENT_SESSION_REVOKED,
                SUCCESS,
                scope,
                user=session.username,
                session_id=session.id,
                sessions_ended=ended,
                reason="account disabled, removed or password changed",
            )
            return False
        if len(self._checked_at) > 100_000:
            self._checked_at.clear()
        self._checked_at[session.username] = now
        return True


class PublicPaths:
    """Paths anyone may reach. Exact paths, plus prefixes that end in ``/``."""

    def __init__(self, exact: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        if any(not prefix.endswith("/") for prefix in self.prefixes):
            raise ValueError("public prefixes must end with '/'")

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        if path in self.exact:
            return True
        if "\\" in path or "/." in path or "\x00" in path:
            return False
        return path.startswith(self.prefixes)


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        public_paths: PublicPaths,
        login_path: str = "/login",
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = public_paths
        self.login_path = login_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        state = scope.setdefault("state", {})
        is_public = scope["path"] in self.public_paths
        try:
            user = await self.authenticator.authenticate(scope)
        except (SessionStoreUnavailable, UserStoreUnavailable):
            logger.warning("authentication backend unavailable")
            state[STATE_AUTH_UNAVAILABLE] = True
            user = None

        if user is not None:
            state[STATE_USER] = user.username
            await self.app(scope, receive, send)
            return
        if is_public:
            await self.app(scope, receive, send)
            return

        if scope["type"] == "websocket":
            audit(EVENT_ACCESS_DENIED, FAILURE, scope, status=1008, reason="not authenticated")
            await send({"type": "websocket.close", "code": 1008})
            return
        if state.get(STATE_STORE_UNAVAILABLE) or state.get(STATE_AUTH_UNAVAILABLE):
            await send_error(
                scope,
                send,
                503,
                "Service unavailable",
                "Sign-in is temporarily unavailable. Please try again in a moment.",
                [(b"retry-after", b"5")],
            )
            return
        target = login_url(scope, self.login_path)
        page_load = is_page_load(scope)
        audit(
            EVENT_ACCESS_DENIED,
            FAILURE,
            scope,
            method=scope.get("method", "-"),
            status=303 if page_load else 401,
            reason="not authenticated",
            # A browser sent to the login page is everyday traffic; a refused API call less so.
            level=logging.INFO if page_load else logging.WARNING,
        )
        if page_load:
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", target.encode("latin-1")),
                        (b"content-length", b"0"),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send_json(send, 401, {"detail": "not authenticated", "login_url": target})
