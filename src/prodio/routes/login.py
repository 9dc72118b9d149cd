"""``/login`` and ``/logout``: the only routes that create or end a session."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from prodio.routes.csrf import CsrfTokens, is_same_origin_request
from prodio.routes.deps import OptionalSessionDep, ServicesDep, SessionDep
from prodio.services import Services
from prodio.session.base import SessionStoreUnavailable
from prodio.users.base import UserStoreUnavailable

logger = logging.getLogger("prodio.login")
router = APIRouter(include_in_schema=False)

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
MAX_NEXT_LENGTH = 2048
GENERIC_LOGIN_ERROR = "Wrong user name or password."
STALE_FORM_ERROR = "This form has expired or did not come from this site. Please try again."
UNAVAILABLE_ERROR = "Sign-in is temporarily unavailable. Please try again in a moment."
NO_STORE = {"Cache-Control": "no-store"}


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


async def _read_form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise BadForm("expected a form submission")
    try:
        return await request.form(max_files=0, max_fields=10, max_part_size=16 * 1024)
    except (MultiPartException, StarletteHTTPException, UnicodeDecodeError) as exc:
        raise BadForm(str(exc)) from None


def _text_field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise BadForm(f"{name} must be text")
    return value


def _render(
    services: Services, request: Request, template: str, status: int, **context: Any
) -> Response:
    return services.templates.TemplateResponse(
        request,
        template,
        {"app_name": services.settings.app_name, **context},
        status_code=status,
        headers=NO_STORE,
    )


def _login_page(
    services: Services,
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    next_path: str = "",
    username: str = "",
) -> Response:
    cookie_name = services.cookies.csrf_cookie
    nonce = request.cookies.get(cookie_name)
    fresh = not CsrfTokens.is_cookie_value(nonce)
    if fresh or nonce is None:
        nonce = CsrfTokens.new_cookie_value()
    token = services.csrf.issue(CsrfTokens.anonymous_binding(nonce))
    response = _render(
        services,
        request,
        "login.html",
        status,
        csrf_token=token,
        next=next_path,
        error=error,
        username=username,
    )
    if fresh:
        response.headers.append("set-cookie", services.cookies.header(cookie_name, nonce))
    return response


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


@router.get(LOGIN_PATH)
async def login_form(
    request: Request, services: ServicesDep, session: OptionalSessionDep, next: str = ""
) -> Response:
    home = services.settings.mount_path
    if session is not None:
        return _redirect(safe_next(next, home))
    return _login_page(services, request, next_path=safe_next(next, "") if next else "")


@router.post(LOGIN_PATH)
async def login(request: Request, services: ServicesDep, session: OptionalSessionDep) -> Response:
    home = services.settings.mount_path
    try:
        form = await _read_form(request)
        username = _text_field(form, "username")
        password = _text_field(form, "password")
        next_path = safe_next(_text_field(form, "next"), "")
        token = _text_field(form, "csrf_token")
    except BadForm as exc:
        logger.info("login form rejected", extra={"reason": str(exc)})
        return _login_page(services, request, status=400, error=STALE_FORM_ERROR)

    nonce = request.cookies.get(services.cookies.csrf_cookie)
    csrf_ok = CsrfTokens.is_cookie_value(nonce) and services.csrf.check(
        token, CsrfTokens.anonymous_binding(nonce or "")
    )
    if not (csrf_ok and is_same_origin_request(request)):
        logger.warning("login refused: CSRF token or origin check failed")
        return _login_page(
            services,
            request,
            status=403,
            error=STALE_FORM_ERROR,
            next_path=next_path,
            username=username[:64],
        )

    try:
        user = await services.passwords.authenticate(username, password)
    except UserStoreUnavailable:
        logger.error("login unavailable: user store unreachable")
        return _login_page(
            services,
            request,
            status=503,
            error=UNAVAILABLE_ERROR,
            next_path=next_path,
            username=username[:64],
        )
    if user is None:
        logger.info("login failed", extra={"user": username[:64]})
        return _login_page(
            services,
            request,
            status=401,
            error=GENERIC_LOGIN_ERROR,
            next_path=next_path,
            username=username[:64],
        )

    try:
        if session is not None:
            # A new id on every login: a session id known before login is worthless after.
            await services.sessions.delete(session.id)
        new_session = await services.sessions.create(user.username)
    except SessionStoreUnavailable:
        logger.error("login unavailable: session store unreachable")
        return _login_page(
            services,
            request,
            status=503,
            error=UNAVAILABLE_ERROR,
            next_path=next_path,
            username=username[:64],
        )

    jwt_token = services.tokens.issue(
        user.username, new_session.id, new_session.absolute_expires_at
    )
    logger.info("login succeeded", extra={"user": user.username})
    response = _redirect(next_path or home)
    cookies = services.cookies
    response.headers.append(
        "set-cookie",
        cookies.header(
            cookies.session_cookie,
            jwt_token,
            max_age=int(services.settings.session_absolute_timeout),
        ),
    )
    response.headers.append("set-cookie", cookies.expired_header(cookies.csrf_cookie))
    return response


@router.get(LOGOUT_PATH)
async def logout_form(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    token = services.csrf.issue(CsrfTokens.session_binding(session.id))
    return _render(services, request, "logout.html", 200, csrf_token=token, user=session.username)


@router.post(LOGOUT_PATH)
async def logout(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    try:
        form = await _read_form(request)
        token = _text_field(form, "csrf_token")
    except BadForm:
        token = ""
    binding = CsrfTokens.session_binding(session.id)
    if not (services.csrf.check(token, binding) and is_same_origin_request(request)):
        logger.warning(
            "logout refused: CSRF token or origin check failed", extra={"user": session.username}
        )
        return _render(
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
        return _render(
            services,
            request,
            "error.html",
            503,
            status_code=503,
            title="Service unavailable",
            message=UNAVAILABLE_ERROR,
        )
    logger.info("logout", extra={"user": session.username})
    response = _redirect(LOGIN_PATH)
    response.headers.append(
        "set-cookie", services.cookies.expired_header(services.cookies.session_cookie)
    )
    return response
