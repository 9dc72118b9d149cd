"""``/account/password`` and ``/account/sessions``: a signed-in user changes their own
password (ASVS 6.2.2, 6.2.3), and sees and ends their own sessions (7.5.2).

A server-rendered form, like the login page: it works without JavaScript and under the
strict policy of prodio's own pages, and it is protected by a CSRF token bound to the
session. A change needs:

- the current password (re-authentication, 7.5.1), checked through the login throttle
  under the session's account, so that a stolen session cannot be used to guess it faster
  than the login page allows;
- the new password twice, meeting the password policy (length 8 to 1024, not common, not
  the user name; never truncated).

On success the password is replaced, this browser gets a new session id (the old one
ends), and, unless the user unticks "Sign out my other sessions" (7.4.3), the account gets
a new session epoch, which ends every other session on every instance. A session that had
to change its password (``auth.must_change_password``) always ends the others: they were
opened with a password someone else knew.

The sessions page lists the account's live sessions (when each began and was last used,
from which address, with which browser) and ends one of them, or all but this one. Each
session is named by a *handle*, an HMAC of its id
(:class:`~prodio.session.handles.SessionHandles`): a session id is a credential and never
appears in a page, a form or a URL. Ending a session asks for the current password,
checked through the login throttle like a password change, and deletes it from the store,
which ends it at once on every instance.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from prodio.audit import (
    EVENT_PASSWORD_CHANGE,
    EVENT_SESSION_END,
    EVENT_SESSION_RENEWED,
    EVENT_SESSION_REVOKED,
    FAILURE,
    SUCCESS,
    UNAVAILABLE,
    audit,
    client_address,
    session_tag,
)
from prodio.middleware.auth import PASSWORD_CHANGE_PATH, must_change_password
from prodio.routes.csrf import CsrfTokens, refuse_forged_form
from prodio.routes.deps import ServicesDep, SessionDep
from prodio.routes.login import (
    CLEAR_SITE_DATA,
    LOGIN_PATH,
    LOGOUT_PATH,
    NO_STORE,
    SESSION_CLIENT_ADDRESS,
    SESSION_USER_AGENT,
    STALE_FORM_ERROR,
    BadForm,
    abandon_attempt,
    audit_failure_counts,
    audit_refused_attempt,
    count_failure,
    new_session_data,
    read_form,
    render_page,
    retry_after_of,
    session_cookie_header,
    text_field,
    throttle_refusal_message,
)
from prodio.services import Services
from prodio.session.base import Session, SessionStoreUnavailable
from prodio.session.handles import SessionHandles
from prodio.session.throttle import ThrottleUnavailable
from prodio.ui.format import format_utc, iso_utc
from prodio.users.base import StalePasswordHash, User, UserStoreUnavailable
from prodio.users.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordPolicyError,
    check_password_policy,
    normalize_password,
)

logger = logging.getLogger("prodio.account")
router = APIRouter(include_in_schema=False)

# Session data: when this session's password change happened (the page says so).
SESSION_PASSWORD_CHANGED_AT = "auth.password_changed_at"
TEMPLATE = "account_password.html"
SIGN_OUT_OTHERS_FIELD = "sign_out_others"

WRONG_CURRENT_PASSWORD = "The current password is not right."
PASSWORDS_DIFFER = "The two new passwords are not the same."
SAME_PASSWORD = "The new password must not be the current one."
STALE_PASSWORD = (
    "Your password was changed somewhere else meanwhile. Sign out and sign in again with "
    "the new password."
)
UNAVAILABLE_ERROR = (
    "Changing the password is temporarily unavailable. Please try again in a moment."
)
CHANGED_BUT_SESSION_LOST = (
    "Your password was changed, but this browser could not be signed in again. "
    "Sign in with the new password."
)

SESSIONS_PATH = "/account/sessions"
SESSIONS_TEMPLATE = "account_sessions.html"
# The sessions form's ``action``: end the session named by ``handle``, or every other one.
END_ONE = "end"
END_OTHERS = "end_others"
# 128 bits: no two sessions of an account ever share a handle.
# The redirect after ending sessions says how many ended (``?ended=2``); a count, not a name.
MAX_ENDED_DIGITS = 6

SESSION_NOT_FOUND = (
    "That session has ended already, or it is not one of yours. The list below is up to date."
)
SESSIONS_UNAVAILABLE = (
    "Your sessions cannot be listed or ended right now. Please try again in a moment."
)
# The audit log's ``target`` of a request to end sessions.
TARGET_THIS = "this session"
TARGET_ANOTHER = "another session"
TARGET_OTHERS = "all other sessions"


# --- re-authentication ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reauthenticated:
    """The current password is right, and the login throttle has counted the success."""

    user: User


@dataclass(frozen=True, slots=True)
class Refused:
    """The current password was not accepted; what the page shown again needs to say why.

    ``status`` is 429 when the login throttle refused the attempt (``error`` says how long
    to wait, ``retry_after`` in seconds), 403 for a wrong password, and 503 when a backend
    did not answer: then ``reason`` is for the caller's log and audit event, ``retry_after``
    the wait the backend asked for if it said, and the page's own message applies.
    """

    status: int
    error: str = ""
    retry_after: int | None = None
    reason: str = ""

    @property
    def unavailable(self) -> bool:
        return self.status == 503

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else None


async def reauthenticate(
    services: Services, request: Request, username: str, password: str, event: str
) -> Reauthenticated | Refused:
    """Check the signed-in user's current password before a change it guards (ASVS 7.5.1).

    Through the login throttle, under the session's account: a stolen session guesses the
    password no faster than the login page allows, and its guesses lock the account there
    too. A throttle refusal and a wrong password are audited as ``event``; an unavailable
    backend is left to the caller to log and audit, with its own event and page.
    """
    try:
        attempt = await services.throttle.begin(username, client_address(request.scope))
    except ThrottleUnavailable:
        return Refused(503, reason="login throttle backend unreachable")
    if not attempt.allowed:
        audit_refused_attempt(request, attempt, username, event)
        return Refused(429, throttle_refusal_message(attempt), attempt.retry_after_seconds)
    try:
        user = await services.passwords.authenticate(username, password)
    except UserStoreUnavailable as error:
        await abandon_attempt(services, attempt)
        return Refused(
            503,
            reason=f"user store unreachable or busy: {type(error).__name__}",
            retry_after=retry_after_of(error),
        )
    if user is None:
        failure = await count_failure(services, attempt)
        audit_failure_counts(
            request, services, attempt, failure, username, event, "wrong current password"
        )
        return Refused(403, WRONG_CURRENT_PASSWORD)
    try:
        await services.throttle.succeeded(attempt)
    except ThrottleUnavailable:
        return Refused(503, reason="login throttle backend unreachable")
    return Reauthenticated(user)


# --- /account/password ----------------------------------------------------------------------


def _page(
    services: Services,
    request: Request,
    session: Session,
    *,
    status: int = 200,
    error: str | None = None,
    sign_out_others: bool = True,
    headers: dict[str, str] | None = None,
) -> Response:
    changed_at = session.data.get(SESSION_PASSWORD_CHANGED_AT)
    changed = (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(changed_at))
        if isinstance(changed_at, int | float) and not isinstance(changed_at, bool)
        else None
    )
    context: dict[str, Any] = {
        "csrf_token": services.csrf.issue(CsrfTokens.session_binding(session.id)),
        "user": session.username,
        "forced": must_change_password(session),
        "error": error,
        "changed_at": changed,
        "sign_out_others": sign_out_others,
        "min_length": MIN_PASSWORD_LENGTH,
        "max_length": MAX_PASSWORD_LENGTH,
        "home_url": services.settings.mount_path,
        "logout_url": LOGOUT_PATH,
        "sessions_url": SESSIONS_PATH,
    }
    return render_page(services, request, TEMPLATE, status, headers=headers, **context)


@router.api_route(PASSWORD_CHANGE_PATH, methods=["GET", "HEAD"])
async def password_form(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    return _page(services, request, session)


@router.post(PASSWORD_CHANGE_PATH)
async def change_password(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    username = session.username
    forced = must_change_password(session)
    try:
        form = await read_form(request)
        token = text_field(form, "csrf_token")
        current = text_field(form, "current_password")
        new = text_field(form, "new_password")
        repeated = text_field(form, "confirm_password")
        # An unticked box sends nothing: "no" is the absence of the field.
        sign_out_others = forced or text_field(form, SIGN_OUT_OTHERS_FIELD) != ""
    except BadForm as exc:
        audit(EVENT_PASSWORD_CHANGE, FAILURE, request, reason=f"malformed form: {exc}")
        return _page(services, request, session, status=400, error=STALE_FORM_ERROR)

    token_ok = services.csrf.check(token, CsrfTokens.session_binding(session.id))
    if refuse_forged_form(request, token_ok):
        return _page(services, request, session, status=403, error=STALE_FORM_ERROR)

    def refuse(status: int, error: str, reason: str) -> Response:
        audit(EVENT_PASSWORD_CHANGE, FAILURE, request, reason=reason)
        return _page(
            services, request, session, status=status, error=error, sign_out_others=sign_out_others
        )

    # What the form alone can tell is told before the current password is looked at: a
    # typo in the new password costs no attempt against the throttle.
    if new != repeated:
        return refuse(400, PASSWORDS_DIFFER, "new passwords differ")
    try:
        check_password_policy(new, username=username)
    except PasswordPolicyError as error:
        return refuse(400, f"The new password cannot be used: {error}.", "password policy")
    if normalize_password(new) == normalize_password(current):
        return refuse(400, SAME_PASSWORD, "new password is the current one")

    verdict = await reauthenticate(services, request, username, current, EVENT_PASSWORD_CHANGE)
    if isinstance(verdict, Refused):
        if verdict.unavailable:
            return _unavailable(services, request, session, verdict.reason, verdict.retry_after)
        return _page(
            services,
            request,
            session,
            status=verdict.status,
            error=verdict.error,
            sign_out_others=sign_out_others,
            headers=verdict.headers,
        )

    try:
        updated = await services.passwords.change_password(
            verdict.user, new, end_sessions=sign_out_others
        )
    except UserStoreUnavailable as error:
        return _unavailable(
            services,
            request,
            session,
            f"user store unreachable or busy: {type(error).__name__}",
            retry_after_of(error),
        )
    except PasswordPolicyError as error:
        # Checked above already; kept so that a policy that grows stays a clean 400.
        return refuse(400, f"The new password cannot be used: {error}.", "password policy")
    except StalePasswordHash:
        return refuse(409, STALE_PASSWORD, "password changed meanwhile")

    # The password is changed: from here on, only this browser's session is at stake.
    data = new_session_data(updated, request)
    data[SESSION_PASSWORD_CHANGED_AT] = time.time()
    try:
        if sign_out_others:
            ended = await services.sessions.delete_user_sessions(username)
        else:
            ended = int(await services.sessions.delete(session.id))
        new_session = await services.sessions.create(username, data)
    except SessionStoreUnavailable:
        logger.error("password changed, but the session store is unreachable")
        audit(
            EVENT_PASSWORD_CHANGE,
            SUCCESS,
            request,
            other_sessions_ended=None,
            kept_other_sessions=not sign_out_others,
            reason="session not renewed: session store unreachable",
        )
        response = render_page(
            services,
            request,
            "error.html",
            503,
            status_code=503,
            title="Password changed",
            message=CHANGED_BUT_SESSION_LOST,
        )
        cookies = services.cookies
        response.headers.append("set-cookie", cookies.expired_header(cookies.session_cookie))
        return response

    # The current session was among those ended (or was the one ended).
    others_ended = max(0, ended - 1) if sign_out_others else 0
    audit(
        EVENT_PASSWORD_CHANGE,
        SUCCESS,
        request,
        session_id=new_session.id,
        forced=forced,
        kept_other_sessions=not sign_out_others,
        other_sessions_ended=others_ended,
    )
    audit(
        EVENT_SESSION_RENEWED,
        SUCCESS,
        request,
        session_id=new_session.id,
        previous_session_id=session.id,
        previous_user=username,
        reason="password changed",
    )
    if others_ended:
        audit(
            EVENT_SESSION_REVOKED,
            SUCCESS,
            request,
            session_id=new_session.id,
            sessions_ended=others_ended,
            reason="password changed by its user",
        )
    jwt_token = services.tokens.issue(username, new_session.id, new_session.absolute_expires_at)
    # A forced change was in the way of the app: go there. Otherwise the page confirms it.
    target = services.settings.mount_path if forced else PASSWORD_CHANGE_PATH
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    response.headers.append("set-cookie", session_cookie_header(services, jwt_token))
    return response


def _unavailable(
    services: Services,
    request: Request,
    session: Session,
    reason: str,
    retry_after: int | None = None,
) -> Response:
    logger.error("password change unavailable: %s", reason)
    audit(EVENT_PASSWORD_CHANGE, UNAVAILABLE, request, reason=reason)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return _page(services, request, session, status=503, error=UNAVAILABLE_ERROR, headers=headers)


# --- /account/sessions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session as the sessions page shows it: nothing in it is a credential."""

    handle: str
    current: bool
    created: str
    created_iso: str
    last_seen: str
    last_seen_iso: str
    address: str
    user_agent: str


def _text_of(session: Session, key: str) -> str:
    value = session.data.get(key)
    return value if isinstance(value, str) else ""


def session_rows(
    sessions: list[Session], current_id: str, handles: SessionHandles
) -> list[SessionRow]:
    """The rows of the sessions page: this session first, then the most recently used."""
    ordered = sorted(sessions, key=lambda item: (item.id != current_id, -item.last_seen))
    return [
        SessionRow(
            handle=handles.of(item.id),
            current=item.id == current_id,
            created=format_utc(item.created_at),
            created_iso=iso_utc(item.created_at),
            last_seen=format_utc(item.last_seen),
            last_seen_iso=iso_utc(item.last_seen),
            address=_text_of(item, SESSION_CLIENT_ADDRESS),
            user_agent=_text_of(item, SESSION_USER_AGENT),
        )
        for item in ordered
    ]


def _ended_count(raw: str) -> int | None:
    """The count of ``?ended=``, or None when there is none worth showing."""
    if not raw or len(raw) > MAX_ENDED_DIGITS or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


async def _sessions_page(
    services: Services,
    request: Request,
    session: Session,
    *,
    status: int = 200,
    error: str | None = None,
    open_handle: str = "",
    ended: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The sessions page, listed afresh from the store; 503 if the store does not answer."""
    handles = services.session_handles
    rows: list[SessionRow] = []
    try:
        rows = session_rows(
            await services.sessions.list_user_sessions(session.username), session.id, handles
        )
    except SessionStoreUnavailable:
        logger.error("sessions page unavailable: session store unreachable")
        status, error = 503, SESSIONS_UNAVAILABLE
    context: dict[str, Any] = {
        "csrf_token": services.csrf.issue(CsrfTokens.session_binding(session.id)),
        "user": session.username,
        "sessions": rows,
        "others": sum(not row.current for row in rows),
        "error": error,
        "open_handle": open_handle,
        "ended": ended,
        "sessions_url": SESSIONS_PATH,
        "password_url": PASSWORD_CHANGE_PATH,
        "home_url": services.settings.mount_path,
        "end_one": END_ONE,
        "end_others": END_OTHERS,
    }
    return render_page(services, request, SESSIONS_TEMPLATE, status, headers=headers, **context)


@router.api_route(SESSIONS_PATH, methods=["GET", "HEAD"])
async def sessions_page(
    request: Request, services: ServicesDep, session: SessionDep, ended: str = ""
) -> Response:
    return await _sessions_page(services, request, session, ended=_ended_count(ended))


@router.post(SESSIONS_PATH)
async def end_sessions(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    """End one of the user's sessions (``action=end``, ``handle``) or all but this one
    (``action=end_others``), once the current password is confirmed."""
    username = session.username
    try:
        form = await read_form(request)
        token = text_field(form, "csrf_token")
        action = text_field(form, "action")
        handle = text_field(form, "handle")
        password = text_field(form, "current_password")
    except BadForm as exc:
        audit(EVENT_SESSION_END, FAILURE, request, reason=f"malformed form: {exc}")
        return await _sessions_page(services, request, session, status=400, error=STALE_FORM_ERROR)

    token_ok = services.csrf.check(token, CsrfTokens.session_binding(session.id))
    if refuse_forged_form(request, token_ok):
        return await _sessions_page(services, request, session, status=403, error=STALE_FORM_ERROR)

    if action not in (END_ONE, END_OTHERS):
        audit(EVENT_SESSION_END, FAILURE, request, reason="malformed form: unknown action")
        return await _sessions_page(services, request, session, status=400, error=STALE_FORM_ERROR)
    handles = services.session_handles
    target = TARGET_OTHERS
    # The form to show open again if the password is refused.
    open_handle = ""
    if action == END_ONE:
        # What the form alone can tell is told before the password is looked at: a session
        # that ended meanwhile costs no attempt against the throttle.
        try:
            chosen = handles.find(handle, await services.sessions.list_user_sessions(username))
        except SessionStoreUnavailable:
            return await _end_unavailable(services, request, session, "session store unreachable")
        if chosen is None:
            audit(EVENT_SESSION_END, FAILURE, request, reason="unknown session")
            return await _sessions_page(
                services, request, session, status=404, error=SESSION_NOT_FOUND
            )
        target = TARGET_THIS if chosen.id == session.id else TARGET_ANOTHER
        open_handle = handle

    verdict = await reauthenticate(services, request, username, password, EVENT_SESSION_END)
    if isinstance(verdict, Refused):
        if verdict.unavailable:
            return await _end_unavailable(
                services, request, session, verdict.reason, verdict.retry_after
            )
        return await _sessions_page(
            services,
            request,
            session,
            status=verdict.status,
            error=verdict.error,
            open_handle=open_handle,
            headers=verdict.headers,
        )

    ended: list[Session] = []
    try:
        # Listed again now that the password is confirmed: "all others" means the others
        # of this moment, a session opened while the password was checked included.
        live = await services.sessions.list_user_sessions(username)
        if action == END_ONE:
            chosen = handles.find(handle, live)
            to_end = [chosen] if chosen is not None else []
        else:
            to_end = [item for item in live if item.id != session.id]
        for item in to_end:
            # The store's delete ends it everywhere at once: with Redis, the store tells
            # every instance's near cache.
            if await services.sessions.delete(item.id):
                ended.append(item)
    except SessionStoreUnavailable:
        _audit_ended(request, ended)
        return await _end_unavailable(
            services, request, session, "session store unreachable", sessions_ended=len(ended)
        )

    audit(EVENT_SESSION_END, SUCCESS, request, target=target, sessions_ended=len(ended))
    _audit_ended(request, ended)
    if any(item.id == session.id for item in ended):
        # This browser's own session: it is signed out, as by the Logout button.
        response = RedirectResponse(LOGIN_PATH, status_code=303, headers=NO_STORE)
        response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
        cookies = services.cookies
        response.headers.append("set-cookie", cookies.expired_header(cookies.session_cookie))
        response.headers.append("set-cookie", cookies.expired_header(cookies.csrf_cookie))
        return response
    # After the POST, a GET (a reload does not send the form again).
    return RedirectResponse(
        f"{SESSIONS_PATH}?ended={len(ended)}", status_code=303, headers=NO_STORE
    )


def _audit_ended(request: Request, ended: list[Session]) -> None:
    """One ``session.revoked`` per session the user ended, naming it by its log tag."""
    for item in ended:
        audit(
            EVENT_SESSION_REVOKED,
            SUCCESS,
            request,
            sessions_ended=1,
            ended_session=session_tag(request.scope, item.id),
            reason="ended by its user",
        )


async def _end_unavailable(
    services: Services,
    request: Request,
    session: Session,
    reason: str,
    retry_after: int | None = None,
    *,
    sessions_ended: int | None = None,
) -> Response:
    logger.error("ending sessions unavailable: %s", reason)
    audit(EVENT_SESSION_END, UNAVAILABLE, request, reason=reason, sessions_ended=sessions_ended)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return await _sessions_page(
        services, request, session, status=503, error=SESSIONS_UNAVAILABLE, headers=headers
    )
