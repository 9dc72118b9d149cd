"""The audit log: one structured event per security-relevant thing, on logger ``prodio.audit``.

Every event carries the same fields, so that an operator (or a SIEM) can filter on them:

``event``
    what happened, one of the ``EVENT_*`` names below (``login``, ``session.revoked``, ...);
``outcome``
    ``success``, ``failure``, ``locked`` or ``unavailable``;
``user``
    the (normalized) user the event is about, ``-`` when nobody;
``request_id``
    the request's id (the ``X-Request-Id`` of the response), to join the request log;
``session``
    the session's *tag*: the keyed hash the request log uses too, never the id itself;
``client``
    the client address as the ASGI server reported it (proxies are trusted only when
    configured in uvicorn);
``path``
    the request path;

plus fields of the event's own. The time (UTC) is the log record's: the JSON formatter
writes it as ``time``. Text from the request (user names, reasons, headers) has its control
characters escaped and is cut to a bounded length, so a visitor cannot forge log lines.

Outcomes other than ``success`` are logged at WARNING, successes at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import HTTPConnection
from starlette.types import Scope

from prodio.logs import escape_control
from prodio.middleware.logging import SessionTagger

AUDIT_LOGGER: Final = "prodio.audit"
logger = logging.getLogger(AUDIT_LOGGER)

# The request state key under which the session middleware leaves the tagger, so that
# anything handling the request can tag a session id without knowing the secret.
STATE_SESSION_TAGGER: Final = "session_tagger"

EVENT_LOGIN: Final = "login"
EVENT_LOGIN_LOCKOUT: Final = "login.lockout"
EVENT_LOGOUT: Final = "logout"
EVENT_SESSION_CREATED: Final = "session.created"
EVENT_SESSION_RENEWED: Final = "session.renewed"
EVENT_SESSION_EXPIRED: Final = "session.expired"
EVENT_SESSION_REJECTED: Final = "session.rejected"
EVENT_SESSION_REVOKED: Final = "session.revoked"
EVENT_CSRF_REJECTED: Final = "csrf.rejected"
EVENT_ORIGIN_REJECTED: Final = "origin.rejected"
EVENT_ACCESS_DENIED: Final = "access.denied"
EVENT_PASSWORD_CHANGE: Final = "password.change"
# A user's request to end their own sessions (``/account/sessions``); the sessions it ends
# are each a ``session.revoked``.
EVENT_SESSION_END: Final = "session.end"

SUCCESS: Final = "success"
FAILURE: Final = "failure"
LOCKED: Final = "locked"
UNAVAILABLE: Final = "unavailable"

NO_VALUE: Final = "-"
# A session id was at hand but nothing to tag it with (an app assembled without the
# session middleware's tagger): say so rather than log the id.
UNTAGGED: Final = "untagged"
MAX_USER_LENGTH: Final = 100
MAX_FIELD_LENGTH: Final = 200

_COMMON_FIELDS = frozenset({"event", "outcome", "user", "request_id", "session", "client", "path"})
# Names a LogRecord has already: logging refuses ``extra`` keys that would overwrite them.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def clean_text(value: str, limit: int = MAX_FIELD_LENGTH) -> str:
    """``value`` fit for a log field: control characters escaped, at most ``limit`` long."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return escape_control(value)


def _clean(value: object) -> object:
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean_text(str(value))


def _scope_of(scope_or_request: Scope | HTTPConnection) -> Scope:
    if isinstance(scope_or_request, HTTPConnection):
        return scope_or_request.scope
    return scope_or_request


def session_tag(scope: Scope, session_id: str | None) -> str:
    """The tag of ``session_id`` (``-`` for none) with the tagger the request carries."""
    if not session_id:
        return NO_VALUE
    tagger = scope.get("state", {}).get(STATE_SESSION_TAGGER)
    if not isinstance(tagger, SessionTagger):
        return UNTAGGED
    return tagger.tag(session_id)


def client_address(scope: Scope) -> str | None:
    """The client IP the ASGI server put in the scope (``None`` when it gave none)."""
    client = scope.get("client")
    if not client:
        return None
    host = client[0]
    return host if isinstance(host, str) and host else None


def audit(
    event: str,
    outcome: str,
    scope_or_request: Scope | HTTPConnection,
    user: str | None = None,
    *,
    session_id: str | None = None,
    previous_session_id: str | None = None,
    level: int | None = None,
    **fields: object,
) -> None:
    """Log one audit event about the request ``scope_or_request``.

    ``user`` defaults to the request's authenticated user; ``session_id`` to its session.
    Session ids given here (``session_id``, ``previous_session_id``) are logged as tags
    only. ``fields`` are the event's own details (status, reason, counts, ...).
    """
    scope = _scope_of(scope_or_request)
    state: Mapping[str, Any] = scope.get("state", {})
    clashes = (set(fields) & (_COMMON_FIELDS | _RECORD_ATTRIBUTES)) | (
        {"previous_session"} & set(fields)
    )
    if clashes:
        raise ValueError(f"audit fields {sorted(clashes)} are reserved")
    who = user if user is not None else state.get("user")
    record: dict[str, object] = {
        "event": event,
        "outcome": outcome,
        "user": clean_text(who, MAX_USER_LENGTH) if who else NO_VALUE,
        "request_id": state.get("request_id") or NO_VALUE,
        "session": session_tag(scope, session_id or state.get("session_id")),
        "client": clean_text(client_address(scope) or NO_VALUE),
        "path": clean_text(scope.get("root_path", "") + scope.get("path", "")),
    }
    if previous_session_id is not None:
        record["previous_session"] = session_tag(scope, previous_session_id)
    record.update({name: _clean(value) for name, value in fields.items()})
    if level is None:
        level = logging.INFO if outcome == SUCCESS else logging.WARNING
    logger.log(level, "%s %s", event, outcome, extra=record)


def audit_origin_refused(scope_or_request: Scope | HTTPConnection) -> None:
    """The audit event for a request refused (403, or a closed WebSocket) because it did not
    come from a page of this site: for the origin check to call when it refuses."""
    scope = _scope_of(scope_or_request)
    origin = fetch_site = None
    for key, value in scope.get("headers", ()):
        if key == b"origin" and origin is None:
            origin = bytes(value).decode("latin-1")
        elif key == b"sec-fetch-site" and fetch_site is None:
            fetch_site = bytes(value).decode("latin-1")
    is_socket = scope.get("type") == "websocket"
    audit(
        EVENT_ORIGIN_REJECTED,
        FAILURE,
        scope,
        method="WEBSOCKET" if is_socket else scope.get("method", NO_VALUE),
        status=1008 if is_socket else 403,
        origin=origin if origin is not None else NO_VALUE,
        fetch_site=fetch_site if fetch_site is not None else NO_VALUE,
    )
