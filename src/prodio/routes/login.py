"""``/login`` and ``/logout``: the routes that create or end a session (the password change
page, ``routes/account.py``, renews one).

A login attempt passes, in order: the form checks, the CSRF token and origin, the login
throttle (a locked account or client, or too many attempts in flight, gets 429 with
``Retry-After`` before any password is hashed), and only then the password check. Each
outcome is an audit event. An account whose password must be changed gets a session that
can reach only the password change page (``middleware/auth.py`` enforces it), unless that
temporary password has expired: then it gets the answer of a wrong password.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from prodio.audit import (
    EVENT_LOGIN,
    EVENT_LOGIN_LOCKOUT,
    EVENT_LOGOUT,
    EVENT_SESSION_CREATED,
    EVENT_SESSION_RENEWED,
    FAILURE,
    LOCKED,
    SUCCESS,
    UNAVAILABLE,
    audit,
    client_address,
)
from prodio.middleware.auth import (
    PASSWORD_CHANGE_PATH,
    SESSION_EPOCH,
    SESSION_MUST_CHANGE_PASSWORD,
)
from prodio.routes.csrf import CsrfTokens, refuse_forged_form
from prodio.routes.deps import OptionalSessionDep, ServicesDep, SessionDep
from prodio.services import Services
from prodio.session.base import JSONValue, SessionStoreUnavailable
from prodio.session.throttle import (
    LoginAttempt,
    LoginFailure,
    ThrottleUnavailable,
    account_key,
)
from prodio.users.authenticate import WRONG_CREDENTIALS
from prodio.users.base import User, UserStoreUnavailable
from prodio.users.passwords import HashingBusy

logger = logging.getLogger("prodio.login")
router = APIRouter(include_in_schema=False)

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
MAX_NEXT_LENGTH = 2048
GENERIC_LOGIN_ERROR = "Wrong user name or password."
STALE_FORM_ERROR = "This form has expired or did not come from this site. Please try again."
UNAVAILABLE_ERROR = "Sign-in is temporarily unavailable. Please try again in a moment."
LOCKED_ERROR = (
    "Too many failed sign-in attempts. For your security, sign-in is paused: "
    "please try again in {wait}."
)
BUSY_ERROR = "Too many sign-in attempts at the same time. Please try again in a moment."
# Removes every cookie of the site (the session's and the CSRF cookie, and any other) from
# the browser at logout. Browsers apply it to the whole registrable domain: see
# docs/security.md.
CLEAR_SITE_DATA = '"cookies"'
# What the audit log names a submitted name that cannot be an account.
INVALID_NAME = "(invalid name)"
NO_STORE = {"Cache-Control": "no-store"}
# Session data that lets a user tell their sessions apart (routes/account.py lists them).
SESSION_USER_AGENT = "auth.user_agent"
SESSION_CLIENT_ADDRESS = "auth.client_address"
MAX_USER_AGENT_LENGTH = 200


class BadForm(Exception):
    pass


def safe_next(raw: str | None, home: str) -> str:
    """``raw`` if it is a path on this site (not the login or logout page), else ``home``."""
    if not raw or len(raw) > MAX_NEXT_LENGTH:
        return home
    if not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return home
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        return home
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return home
    if parts.path in (LOGIN_PATH, LOGOUT_PATH):
        return home
    return raw


async def read_form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise BadForm("expected a form submission")
    try:
        return await request.form(max_files=0, max_fields=10, max_part_size=16 * 1024)
    except (MultiPartException, StarletteHTTPException, UnicodeDecodeError) as exc:
        raise BadForm(str(exc)) from None


def text_field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise BadForm(f"{name} must be text")
    try:
        # A multipart form may name a charset (unicode_escape, utf-7) that decodes to lone
        # surrogates: no page could show such a value back.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadForm(f"{name} is not valid text") from None
    return value


def render_page(
    services: Services,
    request: Request,
    template: str,
    status: int,
    *,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    return services.templates.TemplateResponse(
        request,
        template,
        {"app_name": services.settings.app_name, **context},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


def attempted_user(username: str) -> str:
    """How the audit log names a submitted user name: normalized, or a placeholder."""
    key = account_key(username)
    return INVALID_NAME if key.startswith("#") else key


def wait_text(seconds: int) -> str:
    """``seconds`` as a person would say it: "40 seconds", "1 minute", "15 minutes"."""
    if seconds < 60:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _login_page(
    services: Services,
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    next_path: str = "",
    username: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    cookie_name = services.cookies.csrf_cookie
    nonce = request.cookies.get(cookie_name)
    fresh = not CsrfTokens.is_cookie_value(nonce)
    if fresh or nonce is None:
        nonce = CsrfTokens.new_cookie_value()
    token = services.csrf.issue(CsrfTokens.anonymous_binding(nonce))
    response = render_page(
        services,
        request,
        "login.html",
        status,
        csrf_token=token,
        next=next_path,
        error=error,
        username=username,
        headers=headers,
    )
    if fresh:
        response.headers.append("set-cookie", services.cookies.header(cookie_name, nonce))
    return response


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


@router.api_route(LOGIN_PATH, methods=["GET", "HEAD"])
async def login_form(
    request: Request, services: ServicesDep, session: OptionalSessionDep, next: str = ""
) -> Response:
    home = services.settings.mount_path
    if session is not None:
        return _redirect(safe_next(next, home))
    return _login_page(services, request, next_path=safe_next(next, "") if next else "")


def _unavailable_login_page(
    services: Services,
    request: Request,
    *,
    next_path: str,
    username: str,
    reason: str,
    retry_after: int | None = None,
    busy: bool = False,
) -> Response:
    # A full hashing queue is load shedding, working as meant (many a second in a login
    # storm); a store that cannot be reached is an error.
    logger.log(logging.WARNING if busy else logging.ERROR, "login unavailable: %s", reason)
    audit(EVENT_LOGIN, UNAVAILABLE, request, user=attempted_user(username), reason=reason)
    return _login_page(
        services,
        request,
        status=503,
        error=UNAVAILABLE_ERROR,
        next_path=next_path,
        username=username[:64],
        headers={"Retry-After": str(retry_after)} if retry_after else None,
    )


def retry_after_of(error: Exception) -> int | None:
    """The wait an overloaded backend asked for, if it said (the hasher's queue does)."""
    seconds = getattr(error, "retry_after_seconds", None)
    return seconds if isinstance(seconds, int) and seconds > 0 else None


async def abandon_attempt(services: Services, attempt: LoginAttempt) -> None:
    """Take an undecided attempt out of flight; if even that fails, it counts as a failure
    once its deadline passes: the safe side to err on."""
    try:
        await services.throttle.abandon(attempt)
    except ThrottleUnavailable:
        logger.warning("could not take an undecided login attempt out of flight")


async def count_failure(services: Services, attempt: LoginAttempt) -> LoginFailure | None:
    """Count a wrong password; ``None`` when the backend did not answer (the attempt then
    counts as a failure once its deadline passes)."""
    try:
        return await services.throttle.failed(attempt)
    except ThrottleUnavailable:
        logger.warning("could not count a failed login attempt now; it counts at its deadline")
        return None


def throttle_refusal_message(attempt: LoginAttempt) -> str:
    if attempt.busy:
        return BUSY_ERROR
    return LOCKED_ERROR.format(wait=wait_text(attempt.retry_after_seconds))


def audit_refused_attempt(request: Request, attempt: LoginAttempt, user: str, event: str) -> None:
    audit(
        event,
        LOCKED,
        request,
        user=user,
        locked_by=",".join(attempt.refused_by),
        reason="too many attempts in flight" if attempt.busy else "locked after failures",
        retry_after=attempt.retry_after_seconds,
    )


def audit_failure_counts(
    request: Request,
    services: Services,
    attempt: LoginAttempt,
    failure: LoginFailure | None,
    user: str,
    event: str,
    reason: str,
) -> None:
    """The failure event of ``event`` (``login``, ``password.change``) and the lockouts it
    started."""
    audit(
        event,
        FAILURE,
        request,
        user=user,
        reason=reason,
        account_failures=failure.account_failures if failure is not None else None,
        client_failures=failure.client_failures if failure is not None else None,
        # The address signed in to this account lately: its own counter applies.
        known_client=attempt.known_client,
    )
    for scope in failure.locks if failure is not None else ():
        audit(
            EVENT_LOGIN_LOCKOUT,
            LOCKED,
            request,
            user=user,
            locked=scope,
            failures=failure.failures_of(scope) if failure is not None else 0,
            lock_seconds=services.throttle.limits.window,
        )


def user_agent_label(raw: str | None) -> str:
    """The ``User-Agent`` header fit to show its user on the sessions page: without control
    or format characters (no bidi overrides, no line breaks), spaces collapsed, at most
    :data:`MAX_USER_AGENT_LENGTH` characters. It is what the browser claims, not a proof."""
    if not raw:
        return ""
    # The server hands over the header's bytes decoded as Latin-1: C1 controls (\x80-\x9f)
    # are control characters here too, and go with the rest.
    visible = "".join(
        " " if character.isspace() else character
        for character in raw
        if character.isspace() or not unicodedata.category(character).startswith("C")
    )
    return " ".join(visible.split())[:MAX_USER_AGENT_LENGTH].rstrip()


def new_session_data(user: User, request: Request) -> dict[str, JSONValue]:
    """What a session of ``user`` starts with: the account's epoch, whether it may do
    nothing but change the password, and what lets its user recognise it among their
    sessions (the browser's user agent and the client address, as the logs resolve it)."""
    data: dict[str, JSONValue] = {
        SESSION_EPOCH: user.session_epoch,
        SESSION_USER_AGENT: user_agent_label(request.headers.get("user-agent")),
        SESSION_CLIENT_ADDRESS: client_address(request.scope) or "",
    }
    if user.must_change_password:
        data[SESSION_MUST_CHANGE_PASSWORD] = True
    return data


def session_cookie_header(services: Services, jwt_token: str) -> str:
    cookies = services.cookies
    return cookies.header(
        cookies.session_cookie,
        jwt_token,
        max_age=int(services.settings.session_absolute_timeout),
    )


@router.post(LOGIN_PATH)
async def login(request: Request, services: ServicesDep, session: OptionalSessionDep) -> Response:
    home = services.settings.mount_path
    try:
        form = await read_form(request)
        username = text_field(form, "username")
        password = text_field(form, "password")
        next_path = safe_next(text_field(form, "next"), "")
        token = text_field(form, "csrf_token")
    except BadForm as exc:
        audit(EVENT_LOGIN, FAILURE, request, reason=f"malformed form: {exc}")
        return _login_page(services, request, status=400, error=STALE_FORM_ERROR)

    nonce = request.cookies.get(services.cookies.csrf_cookie)
    token_ok = CsrfTokens.is_cookie_value(nonce) and services.csrf.check(
        token, CsrfTokens.anonymous_binding(nonce or "")
    )
    if refuse_forged_form(request, token_ok, attempted_user(username)):
        return _login_page(
            services,
            request,
            status=403,
            error=STALE_FORM_ERROR,
            next_path=next_path,
            username=username[:64],
        )

    attempted = attempted_user(username)
    try:
        attempt = await services.throttle.begin(username, client_address(request.scope))
    except ThrottleUnavailable:
        return _unavailable_login_page(
            services,
            request,
            next_path=next_path,
            username=username,
            reason="login throttle backend unreachable",
        )
    if not attempt.allowed:
        # Refused before the password is looked at: no hash is computed for a locked
        # account, so a lock also stops the attacker from spending our CPU.
        audit_refused_attempt(request, attempt, attempted, EVENT_LOGIN)
        return _login_page(
            services,
            request,
            status=429,
            error=throttle_refusal_message(attempt),
            next_path=next_path,
            username=username[:64],
            headers={"Retry-After": str(attempt.retry_after_seconds)},
        )

    try:
        checked = await services.passwords.check(username, password)
    except UserStoreUnavailable as error:
        # Also when the password hashing queue is full: the password was not looked at.
        await abandon_attempt(services, attempt)
        return _unavailable_login_page(
            services,
            request,
            next_path=next_path,
            username=username,
            reason=f"user store unreachable or busy: {type(error).__name__}",
            busy=isinstance(error, HashingBusy),
            retry_after=retry_after_of(error),
        )
    user = checked.user
    if user is None:
        # An expired temporary password is a failure like a wrong one, in the throttle as
        # in the answer: were it not counted, an account that never locks would tell an
        # attacker the password was right, and a success would mark the address as known.
        failure = await count_failure(services, attempt)
        audit_failure_counts(
            request,
            services,
            attempt,
            failure,
            attempted,
            EVENT_LOGIN,
            checked.refusal or WRONG_CREDENTIALS,
        )
        return _login_page(
            services,
            request,
            status=401,
            error=GENERIC_LOGIN_ERROR,
            next_path=next_path,
            username=username[:64],
        )

    try:
        await services.throttle.succeeded(attempt)
        if session is not None:
            # A new id on every login: a session id known before login is worthless after.
            await services.sessions.delete(session.id)
        new_session = await services.sessions.create(user.username, new_session_data(user, request))
    except SessionStoreUnavailable as exc:
        # ThrottleUnavailable is a SessionStoreUnavailable: the two share one backend.
        what = "login throttle" if isinstance(exc, ThrottleUnavailable) else "session store"
        return _unavailable_login_page(
            services,
            request,
            next_path=next_path,
            username=username,
            reason=f"{what} unreachable",
        )

    jwt_token = services.tokens.issue(
        user.username, new_session.id, new_session.absolute_expires_at
    )
    audit(
        EVENT_LOGIN,
        SUCCESS,
        request,
        user=user.username,
        session_id=new_session.id,
        must_change_password=user.must_change_password,
    )
    if session is None:
        audit(
            EVENT_SESSION_CREATED, SUCCESS, request, user=user.username, session_id=new_session.id
        )
    else:
        audit(
            EVENT_SESSION_RENEWED,
            SUCCESS,
            request,
            user=user.username,
            session_id=new_session.id,
            previous_session_id=session.id,
            previous_user=session.username,
        )
    # A password someone else chose is changed before anything else can be reached.
    response = _redirect(PASSWORD_CHANGE_PATH if user.must_change_password else next_path or home)
    response.headers.append("set-cookie", session_cookie_header(services, jwt_token))
    response.headers.append(
        "set-cookie", services.cookies.expired_header(services.cookies.csrf_cookie)
    )
    return response


@router.api_route(LOGOUT_PATH, methods=["GET", "HEAD"])
async def logout_form(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    token = services.csrf.issue(CsrfTokens.session_binding(session.id))
    return render_page(
        services, request, "logout.html", 200, csrf_token=token, user=session.username
    )


@router.post(LOGOUT_PATH)
async def logout(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    try:
        form = await read_form(request)
        token = text_field(form, "csrf_token")
    except BadForm:
        token = ""
    token_ok = services.csrf.check(token, CsrfTokens.session_binding(session.id))
    if refuse_forged_form(request, token_ok):
        return render_page(
            services,
            request,
            "error.html",
            403,
            status_code=403,
            title="Sign-out not confirmed",
            message="This sign-out request did not come from this site. "
            "Use the Logout button to sign out.",
        )
    try:
        await services.sessions.delete(session.id)
    except SessionStoreUnavailable:
        logger.error("logout unavailable: session store unreachable")
        audit(EVENT_LOGOUT, UNAVAILABLE, request, reason="session store unreachable")
        return render_page(
            services,
            request,
            "error.html",
            503,
            status_code=503,
            title="Service unavailable",
            message=UNAVAILABLE_ERROR,
        )
    audit(EVENT_LOGOUT, SUCCESS, request)
    response = _redirect(LOGIN_PATH)
    # Clear-Site-Data takes every cookie of the site away; the expired cookies do the same
    # for browsers that ignore it (it needs a secure context: HTTPS or localhost).
    response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    cookies = services.cookies
    response.headers.append("set-cookie", cookies.expired_header(cookies.session_cookie))
    response.headers.append("set-cookie", cookies.expired_header(cookies.csrf_cookie))
    return response
