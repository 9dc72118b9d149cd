"""Schemathesis over prodio's own routes, anonymous and signed in: never a 5xx, never a leak.

Production serves no OpenAPI document (``openapi_url=None``) and most of prodio's routes are
hidden from it anyway, so the test builds the schema itself from the live app: FastAPI's own
generator over every FastAPI route (hidden ones included, so query parameters such as
``/login?next=`` come from the code), an operation for each plain Starlette route and static
mount, and by hand what the code reads without declaring it: the forms (login, logout,
password change, sessions page) and the request headers the middleware looks at. Gradio's
mounted app is left out: its routes are covered by tests/test_route_coverage.py, and are not
prodio's to fuzz.

The cases come from schemathesis (its positive and negative generation), and are sent over
httpx's ASGI transport to an app built by tests/apptest.py, the same way the other HTTP tests
reach it. Per example, Hypothesis also decides whether the request is same-origin, carries
a genuine CSRF token, or the right password, so the fuzzing reaches past the first check.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.apptest import (
    BASE_URL,
    PAGE,
    SECRET,
    AppUnderTest,
    form_fields,
    session_cookie_of,
)
from tests.fuzz.harness import APP_FUZZ, AppInPortal, app_in_portal, assert_no_leak, examples

USER = "alice"
PASSWORD = "fuzzing password 123"
FUZZ_TEXT = "prodio-fuzz-text"
FUZZ_URL_TEXT = "prodio-fuzz-url-text"

# Every operation of prodio's own routes. test_schema_lists_exactly_prodio_routes fails when a
# route is added or removed, so that a new route cannot stay out of the fuzzing unnoticed.
OPERATIONS = (
    "GET /login",
    "HEAD /login",
    "POST /login",
    "GET /logout",
    "HEAD /logout",
    "POST /logout",
    "GET /api/session",
    "HEAD /api/session",
    "GET /healthz",
    "HEAD /healthz",
    "GET /readyz",
    "HEAD /readyz",
    "GET /favicon.ico",
    "GET /manifest.json",
    "GET /static/{path}",
    "HEAD /static/{path}",
    "GET /account/password",
    "HEAD /account/password",
    "POST /account/password",
    "GET /account/sessions",
    "HEAD /account/sessions",
    "POST /account/sessions",
)
# The forms get more examples: they are where user input is parsed.
FORMS = ("POST /login", "POST /logout", "POST /account/password", "POST /account/sessions")

# Strings a form field or query parameter gets, besides what schemathesis makes of the
# schema: the classic troublemakers, control characters, and over-long values.
INTERESTING = (
    "",
    " ",
    "\x00",
    "\r\n",
    "\t",
    "\x7f",
    "\x1b[31m",
    "\u202e",
    "\ufeff",
    "\uffff",
    "é",
    "😀",
    "%",
    "%00",
    "%ff%fe",
    "+",
    "&=;",
    "\\",
    "../../etc/passwd",
    "//evil.example",
    "/\\evil.example",
    "/%2F%2Fevil.example",
    "javascript:alert(1)",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "' OR 1=1 --",
    USER,
    USER.upper(),
    f" {USER} ",
    "/login",
    "/logout",
    "/?x=1#y",
)


def fuzz_text(longest: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=80),
        st.text(st.characters(codec="latin-1"), max_size=80),
        st.sampled_from(INTERESTING),
        st.builds(
            lambda char, count: char * count,
            st.sampled_from(["a", "é", "\x00", "/", "%", "😀"]),
            st.integers(1_000, longest),
        ),
    )


# Form fields may be far longer than a URL: a server refuses a request line beyond a few
# kilobytes (uvicorn at 16 KiB) before the app sees it, but not a body.
schemathesis.openapi.format(FUZZ_TEXT, fuzz_text(40_000))
schemathesis.openapi.format(FUZZ_URL_TEXT, fuzz_text(2_000))

_TEXT = {"type": "string", "format": FUZZ_TEXT}
_URL_TEXT = {"type": "string", "format": FUZZ_URL_TEXT}
# The headers prodio's middleware and routes read (the session cookie is fuzzed in
# test_routes_raw.py, with raw bytes).
_HEADERS = ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "X-Request-ID", "X-Requested-With")
# Field names as the routes read them; none is required, so schemathesis leaves some out.
_FORMS = {
    ("/login", "post"): ("username", "password", "csrf_token", "next"),
    ("/logout", "post"): ("csrf_token",),
    ("/account/password", "post"): (
        "csrf_token",
        "current_password",
        "new_password",
        "confirm_password",
        "sign_out_others",
    ),
    ("/account/sessions", "post"): ("csrf_token", "action", "handle", "current_password"),
}


class _Listed(RouteContext):
    """A route as FastAPI's schema generator sees it, listed even if the route is hidden."""

    @property
    def include_in_schema(self) -> bool:
        return True


def prodio_schema(app: FastAPI) -> dict[str, Any]:
    """An OpenAPI document of prodio's own routes in ``app``; Gradio's mount is left out."""
    contexts = [
        _Listed(
            **{field.name: getattr(context, field.name) for field in dataclasses.fields(context)}
        )
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]
    with warnings.catch_warnings():
        # GET and HEAD of one api_route share an operation id; each gets its own below.
        warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
        schema = get_openapi(title="prodio", version="fuzz", routes=contexts)
    paths: dict[str, dict[str, Any]] = schema["paths"]
    for route in app.routes:
        if isinstance(route, Route) and not isinstance(route, APIRoute):
            for method in route.methods or ():
                paths.setdefault(route.path, {})[method.lower()] = {"responses": {}}
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            parameter = {"name": "path", "in": "path", "required": True, "schema": _URL_TEXT}
            for method in ("get", "head"):
                operation = {"parameters": [parameter], "responses": {}}
                paths.setdefault(f"{route.path}/{{path}}", {})[method] = operation
    headers = [{"name": name, "in": "header", "schema": {"type": "string"}} for name in _HEADERS]
    for path, item in paths.items():
        for method, operation in item.items():
            operation["operationId"] = f"{method}_{path}"
            operation.setdefault("responses", {}).setdefault("default", {"description": "any"})
            parameters = operation.setdefault("parameters", [])
            for parameter in parameters:
                if parameter["in"] == "query":
                    parameter["schema"] = _URL_TEXT
            parameters.extend(headers)
    for (path, method), fields in _FORMS.items():
        form = {"type": "object", "properties": dict.fromkeys(fields, _TEXT)}
        paths[path][method]["requestBody"] = {
            "content": {
                "application/x-www-form-urlencoded": {"schema": form},
                "multipart/form-data": {"schema": form},
            }
        }
    return schema


_CASES: dict[str, st.SearchStrategy[Case]] = {}


def case_strategy(app: FastAPI, label: str) -> st.SearchStrategy[Case]:
    """Schemathesis' cases (positive and negative) for one operation; built once, since every
    app of these tests has the same routes."""
    if not _CASES:
        for result in schemathesis.openapi.from_dict(prodio_schema(app)).get_all_operations():
            operation = result.ok()
            _CASES[operation.label] = st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )
    return _CASES[label]


@pytest.fixture(scope="module")
def fuzzing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppInPortal]:
    # One app for the module: every example makes its own browser state (see _browser), so
    # the examples need no fresh app, and building one per test would cost more than them.
    # No lockout: a locked client or account would turn every later example into a 429 (the
    # fuzzed current passwords of the password form count against the account). The
    # fuzzer never sends the right current password there, so the password never changes.
    with app_in_portal(
        tmp_path_factory.mktemp("fuzz-app"),
        login_max_failures=1_000_000,
        login_max_failures_per_ip=1_000_000,
    ) as app:
        app.env.add_user(USER, PASSWORD)
        yield app


def test_schema_lists_exactly_prodio_routes(fuzzing: AppInPortal) -> None:
    schema = prodio_schema(fuzzing.env.app)
    labels = {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    }
    assert labels == set(OPERATIONS)
    loaded = schemathesis.openapi.from_dict(schema)
    assert {result.ok().label for result in loaded.get_all_operations()} == set(OPERATIONS)
    # Parameters come from the code: the login page's ``next`` is in the schema unprompted.
    login_page = schema["paths"]["/login"]["get"]["parameters"]
    assert [p["name"] for p in login_page if p["in"] == "query"] == ["next"]


async def _send(
    env: AppUnderTest, kwargs: dict[str, Any], headers: dict[str, str], cookies: list[str]
) -> httpx.Response:
    """Send a serialized schemathesis case through httpx's ASGI transport.

    ``requests`` prepares the URL and body exactly as schemathesis' own transports do; the
    headers go as raw Latin-1 bytes, as a real server would receive them.
    """
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        params=kwargs.get("params"),
        data=kwargs.get("data"),
        files=kwargs.get("files"),
        json=kwargs.get("json"),
    ).prepare()
    merged = {**prepared.headers, **kwargs["headers"], **headers}
    raw = [(name.encode("latin-1"), str(value).encode("latin-1")) for name, value in merged.items()]
    if cookies:
        raw.append((b"cookie", "; ".join(cookies).encode("latin-1")))
    # No cookie jar between examples: each example says which cookies it sends.
    env.client.cookies.clear()
    return await env.client.request(
        prepared.method or "GET", prepared.url or "/", headers=raw, content=prepared.body
    )


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
@pytest.mark.parametrize("label", FORMS)
@settings(APP_FUZZ, max_examples=examples(40))
@given(data=st.data())
def test_form_never_fails_nor_leaks(
    fuzzing: AppInPortal, label: str, signed_in: bool, data: st.DataObject
) -> None:
    _fuzz_one(fuzzing, label, signed_in, data)


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
@pytest.mark.parametrize("label", [label for label in OPERATIONS if label not in FORMS])
@settings(APP_FUZZ, max_examples=examples(8))
@given(data=st.data())
def test_operation_never_fails_nor_leaks(
    fuzzing: AppInPortal, label: str, signed_in: bool, data: st.DataObject
) -> None:
    _fuzz_one(fuzzing, label, signed_in, data)


@dataclass(frozen=True)
class Browser:
    """What a real browser holds before it submits one of prodio's forms."""

    session_cookie: str
    csrf_cookie: str
    login_token: str
    # Bound to the session: the logout and password forms take it.
    session_token: str


async def _browser(env: AppUnderTest, signed_in: bool, login_form: bool) -> Browser:
    """Sign in and fetch a form as a browser does, so the state is whatever prodio makes.

    A new session per example: an example may end it (a logout, a login or a password
    change renew it).
    """
    client = env.client
    client.cookies.clear()
    session_cookie = session_token = ""
    if signed_in:
        response = await env.login(USER, PASSWORD)
        assert response.status_code == 303, response.status_code
        session_cookie = session_cookie_of(response) or ""
        page = await client.get("/logout", headers=PAGE)
        assert page.status_code == 200, page.status_code
        session_token = form_fields(page.text)["csrf_token"]
        client.cookies.clear()
    csrf_cookie = login_token = ""
    if login_form:
        page = await client.get("/login", headers=PAGE)
        csrf_cookie = client.cookies.get(env.services.cookies.csrf_cookie) or ""
        login_token = form_fields(page.text)["csrf_token"]
        client.cookies.clear()
    return Browser(session_cookie, csrf_cookie, login_token, session_token)


def _fuzz_one(fuzzing: AppInPortal, label: str, signed_in: bool, data: st.DataObject) -> None:
    env = fuzzing.env
    cookie_names = env.services.cookies
    case = data.draw(case_strategy(env.app, label), label="case")
    # Often the fuzzed request as a browser on prodio's own page would send it, so that the
    # fuzzing gets past the CSRF and origin checks; else whichever parts the example picks.
    genuine = data.draw(st.booleans(), label="from prodio's own page")
    with_csrf_cookie = genuine or data.draw(st.booleans(), label="pre-login cookie")
    same_origin = genuine or data.draw(st.booleans(), label="same origin")
    right_password = data.draw(st.booleans(), label="right password")
    login_form = with_csrf_cookie or case.path == "/login"
    browser = fuzzing.portal.call(_browser, env, signed_in, login_form)

    headers: dict[str, str] = {}
    cookies: list[str] = []
    if signed_in:
        cookies.append(f"{cookie_names.session_cookie}={browser.session_cookie}")
    if with_csrf_cookie:
        cookies.append(f"{cookie_names.csrf_cookie}={browser.csrf_cookie}")
    if same_origin:
        headers.update({"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"})
    if isinstance(case.body, dict):
        if genuine:
            case.body["csrf_token"] = (
                browser.login_token if case.path == "/login" else browser.session_token
            )
        if case.path == "/login" and right_password:
            case.body.update(username=USER, password=PASSWORD)
        if case.path == "/account/password" and right_password:
            # Past the form checks to the throttle and the current password, which stays
            # fuzzed (wrong): a changed password would end the fuzzing's sign-ins.
            case.body["confirm_password"] = case.body.get("new_password")
        if case.path == "/account/sessions" and right_password:
            # Past the password to the ending itself; each example signs in afresh, so
            # the sessions it may end are of examples that are over.
            case.body["current_password"] = PASSWORD

    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    response = fuzzing.portal.call(_send, env, kwargs, headers, cookies)

    case.validate_response(response, checks=[not_a_server_error])
    assert_no_leak(response, [SECRET, PASSWORD, browser.session_cookie, browser.csrf_cookie])
