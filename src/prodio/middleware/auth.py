"""Deny by default: every path needs a live session, except a short, explicit allowlist.

"Who is this?" is the :class:`Authenticator`'s question; this middleware only decides what
happens to a request that has no answer. Gradio's own routes (queue, heartbeat, upload,
file, theme, config, ...) are covered because nothing is allowed unless listed here.

A session that must change its password first (the account's password was chosen by
someone else: the dev-mode admin's, ``prodio users add --temporary``) reaches only the
password change page, logout and the public paths: a page load anywhere else is sent to
the change page (303), any other call gets 403 JSON, a WebSocket is closed. The check reads
the session the session middleware loaded, so it costs no store round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

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

# What the login keeps in a session for this layer (the UI's keys all start with "ui.").
# The account's session epoch when the session was made: see :class:`SessionAuthenticator`.
SESSION_EPOCH = "auth.epoch"
# True while the session may do nothing but change the account's password.
SESSION_MUST_CHANGE_PASSWORD = "auth.must_change_password"
PASSWORD_CHANGE_PATH = "/account/password"
LOGOUT_PATH = "/logout"
# How many accounts an instance remembers its last look at (each entry is tiny).
_MAX_CACHED_ACCOUNTS = 100_000


def session_epoch(session: Session) -> str:
    """The epoch a session was made in; "" for sessions made before epochs existed."""
    value = session.data.get(SESSION_EPOCH, "")
    return value if isinstance(value, str) else ""


def must_change_password(session: Session) -> bool:
    return session.data.get(SESSION_MUST_CHANGE_PASSWORD) is True


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    username: str
    session: Session


class Authenticator(Protocol):
    async def authenticate(self, scope: Scope) -> AuthenticatedUser | None:
        """The user behind this request, or None. May raise the stores' *Unavailable errors."""
        ...


class SessionAuthenticator:
    """A request is authenticated when it carries a live session of an enabled account,
    made in the account's current session epoch.

    The account is re-read from the user store at most every ``recheck_interval`` seconds
    per user, so an account disabled, removed or given a new epoch (a password change that
    ends the other sessions) from the CLI or another instance loses its sessions on every
    instance within that time, even with sessions held in another process's memory.

    The epoch, not the password's change time, decides: a user who changes their password
    may keep their other sessions (ASVS 7.4.3), and no clock comparison is involved. A
    session from another epoch is ended alone; the account's current sessions stay.
    """

    def __init__(
        self, users: UserStore, sessions: SessionStore, *, recheck_interval: float = 30.0
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.recheck_interval = recheck_interval
        # username -> (monotonic time of the last look, the epoch seen then)
        self._accounts: dict[str, tuple[float, str]] = {}

    async def authenticate(self, scope: Scope) -> AuthenticatedUser | None:
        session: Session | None = scope.get("state", {}).get(STATE_SESSION)
        if session is None:
            return None
        if not await self._session_is_current(session, scope):
            return None
        return AuthenticatedUser(session.username, session)

    async def _session_is_current(self, session: Session, scope: Scope) -> bool:
        now = time.monotonic()
        epoch = session_epoch(session)
        cached = self._accounts.get(session.username)
        # A session of another epoch than the one remembered may mean the remembered one is
        # stale (the password changed here a moment ago): look again before ending it.
        if cached is None or now - cached[0] >= self.recheck_interval or cached[1] != epoch:
            user = await anyio.to_thread.run_sync(self.users.get, session.username)
            if user is None or user.disabled:
                self._accounts.pop(session.username, None)
                ended = await self.sessions.delete_user_sessions(session.username)
                _audit_revoked(scope, session, ended, "account disabled or removed")
                return False
            if len(self._accounts) >= _MAX_CACHED_ACCOUNTS:
                self._accounts.clear()
            cached = (now, user.session_epoch)
            self._accounts[session.username] = cached
        if cached[1] != epoch:
            ended = int(await self.sessions.delete(session.id))
            _audit_revoked(scope, session, ended, "sessions ended by a password change")
            return False
        return True


def _audit_revoked(scope: Scope, session: Session, ended: int, reason: str) -> None:
    audit(
        EVENT_SESSION_REVOKED,
        SUCCESS,
        scope,
        user=session.username,
        session_id=session.id,
        sessions_ended=ended,
        reason=reason,
    )


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
        password_change_path: str = PASSWORD_CHANGE_PATH,
        open_during_password_change: Iterable[str] = (LOGOUT_PATH,),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = public_paths
        self.login_path = login_path
        self.password_change_path = password_change_path
        self.open_during_password_change = frozenset(
            {password_change_path, *open_during_password_change}
        )

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
            if (
                must_change_password(user.session)
                and not is_public
                and scope["path"] not in self.open_during_password_change
            ):
                await self._require_password_change(scope, send)
                return
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

    async def _require_password_change(self, scope: Scope, send: Send) -> None:
        """Send a session that must change its password to the page where it can."""
        target = self.password_change_path
        reason = "password change required"
        if scope["type"] == "websocket":
            audit(EVENT_ACCESS_DENIED, FAILURE, scope, status=1008, reason=reason)
            await send({"type": "websocket.close", "code": 1008})
            return
        page_load = is_page_load(scope)
        audit(
            EVENT_ACCESS_DENIED,
            FAILURE,
            scope,
            method=scope.get("method", "-"),
            status=303 if page_load else 403,
            reason=reason,
            # Being sent to the change page is the expected way there; a refused call less so.
            level=logging.INFO if page_load else logging.WARNING,
        )
        if not page_load:
            await send_json(send, 403, {"detail": reason, "password_change_url": target})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", quote(target, safe="/").encode("latin-1")),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
