"""Raw bytes at prodio's routes: what a schema cannot describe, Hypothesis sends directly.

Schemathesis (test_routes_schemathesis.py) sends well-formed HTTP built from a schema. These
tests send what a hostile client can: header values of any byte but CR and LF (as a server
hands them to the app, decoded as Latin-1), a ``Cookie`` header mixing the genuine session
cookie with mutated copies, look-alike names and garbage, malformed ``Origin`` and ``Host``
headers, and login form bodies in any encoding, charset or shape. The properties are the
same as there (never a 5xx, never a traceback or secret) plus two oracles: whether a request
counts as signed in follows the first cookie of the session cookie's exact name, and an
``X-Request-ID`` is echoed only when it is a safe token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prodio.session.tokens import InvalidSessionToken
from tests.apptest import BASE_URL, PAGE, SECRET, AppUnderTest, form_fields, session_cookie_of
from tests.fuzz.harness import (
    APP_FUZZ,
    REQUEST_ID,
    TRICKY_CHARACTERS,
    AppInPortal,
    app_in_portal,
    assert_no_leak,
    examples,
    mutated,
)

USER = "alice"
PASSWORD = "fuzzing password 123"
# prodio's own routes (Gradio's are behind the same middleware, and not prodio's to fuzz).
ROUTES = (
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("POST", "/login"),
    ("GET", "/logout"),
    ("POST", "/logout"),
    ("GET", "/api/session"),
    ("HEAD", "/api/session"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/favicon.ico"),
    ("GET", "/manifest.json"),
    ("GET", "/static/prodio.css"),
    ("GET", "/account/password"),
    ("POST", "/account/password"),
    ("GET", "/account/sessions"),
    ("POST", "/account/sessions"),
)
# Charsets a multipart form may name. Python decodes "unicode_escape", "raw_unicode_escape"
# and "utf-7" to lone surrogates (test_form_in_a_charset_that_makes_lone_surrogates).
SURROGATE_CHARSETS = ("unicode_escape", "raw_unicode_escape", "utf-7")
CHARSETS = (
    "utf-8",
    "UTF-8",
    "latin-1",
    "utf-16",
    "utf-32",
    "ascii",
    "base64",
    "nonsense",
    "",
    *SURROGATE_CHARSETS,
)


@dataclass(frozen=True)
class SignedIn:
    """One browser signed in for the whole module; no example ends its session."""

    app: AppInPortal
    session_cookie: str
    csrf_cookie: str
    login_token: str

    @property
    def env(self) -> AppUnderTest:
        return self.app.env


async def _sign_in(env: AppUnderTest) -> tuple[str, str, str]:
    client = env.client
    response = await env.login(USER, PASSWORD)
    assert response.status_code == 303
    session_cookie = session_cookie_of(response) or ""
    client.cookies.clear()
    page = await client.get("/login", headers=PAGE)
    csrf_cookie = client.cookies.get(env.services.cookies.csrf_cookie) or ""
    client.cookies.clear()
    return session_cookie, csrf_cookie, form_fields(page.text)["csrf_token"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedIn]:
    # No lockout, so that no example's outcome depends on the examples before it.
    with app_in_portal(
        tmp_path_factory.mktemp("fuzz-raw"),
        login_max_failures=1_000_000,
        login_max_failures_per_ip=1_000_000,
    ) as app:
        app.env.add_user(USER, PASSWORD)
        yield SignedIn(app, *app.portal.call(_sign_in, app.env))


async def _send(
    env: AppUnderTest, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> httpx.Response:
    env.client.cookies.clear()
    return await env.client.request(method, path, headers=headers, content=body)


def _strip(value: bytes) -> bytes:
    # What every HTTP server does to a header value: no CR or LF, no surrounding whitespace.
    return value.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")


header_bytes = st.binary(max_size=80).map(_strip)


def _encoded(text: str) -> bytes:
    # Browsers send cookies as UTF-8; a Latin-1 byte is sent as such when it fits in one.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


@st.composite
def cookie_headers(draw: st.DrawFn, browser: SignedIn, signed_in: bool) -> bytes:
    """A Cookie header of chunks: genuine, mutated, disguised, foreign or garbage."""
    names = browser.env.services.cookies
    session, csrf = names.session_cookie, names.csrf_cookie
    chunk = st.one_of(
        st.just(f"{session}={browser.session_cookie}".encode()),
        mutated(browser.session_cookie).map(lambda token: _encoded(f"{session}={token}")),
        st.builds(
            lambda disguise, token: _encoded(f"{disguise}{session}={token}"),
            st.text(st.sampled_from(TRICKY_CHARACTERS), min_size=1, max_size=2),
            st.sampled_from([browser.session_cookie, "x"]),
        ),
        st.sampled_from(
            [
                f"{session}=",
                f'{session}=""',
                f'{session}="{browser.session_cookie}"',
                f"{session.upper()}={browser.session_cookie}",
                f"{session} ={browser.session_cookie}",
                f"{csrf}={browser.csrf_cookie}",
                f"{csrf}={'A' * 43}",
                f"{csrf}=",
                "=",
                "==",
                "a=b=c",
                "__Host-x=1",
            ]
        ).map(str.encode),
        header_bytes,
    )
    chunks = draw(st.lists(chunk, max_size=6))
    if signed_in:
        chunks.insert(
            draw(st.integers(0, len(chunks))), f"{session}={browser.session_cookie}".encode()
        )
    separator = draw(st.sampled_from([b"; ", b";", b" ; ", b"\t;", b";;"]))
    return _strip(separator.join(chunks))


def _first_cookie(header: bytes, name: str) -> str | None:
    """RFC 6265 reading, done on bytes independently of prodio's parser: the first pair named
    exactly ``name``, with only spaces and tabs trimmed around it."""
    for chunk in header.split(b";"):
        key, sep, value = chunk.strip(b" \t").partition(b"=")
        if sep and key == name.encode():
            return value.strip(b" \t").decode("latin-1")
    return None


optional = st.one_of(st.none(), header_bytes)
origins = st.one_of(
    st.none(),
    st.just(BASE_URL.encode()),
    header_bytes,
    st.sampled_from([b"null", b"http://[", b"http://[::1", b"http://prodio.test:99999"]),
)


@settings(APP_FUZZ, max_examples=examples(100))
@given(
    route=st.sampled_from(ROUTES),
    signed_in=st.booleans(),
    data=st.data(),
    origin=origins,
    fetch_site=st.one_of(optional, st.sampled_from([b"same-origin", b"same-site", b"none"])),
    fetch_mode=st.one_of(optional, st.sampled_from([b"navigate", b"cors"])),
    request_id=st.one_of(optional, st.sampled_from([b"abc-123", b"a" * 64, b"a" * 65])),
    host=st.one_of(
        st.none(),
        header_bytes,
        st.sampled_from([b"[", b"[::1", b"x:99999", b"prodio.test:-1", b"\xa0prodio.test"]),
    ),
    accept=st.one_of(optional, st.just(b"text/html")),
    content_type=st.one_of(
        optional,
        st.sampled_from(
            [
                b"application/x-www-form-urlencoded",
                b"multipart/form-data",
                b"multipart/form-data; boundary=",
                b"multipart/form-data; boundary=x; charset=nonsense",
            ]
        ),
    ),
    body=st.one_of(st.just(b""), st.binary(max_size=200), st.just(b"csrf_token=x&username=y")),
)
@example(
    route=("GET", "/healthz"),
    signed_in=False,
    data=None,
    origin=b"http://[",
    fetch_site=None,
    fetch_mode=None,
    request_id=None,
    host=None,
    accept=None,
    content_type=None,
    body=b"",
)
@example(
    route=("GET", "/login"),
    signed_in=False,
    data=None,
    origin=BASE_URL.encode(),
    fetch_site=None,
    fetch_mode=None,
    request_id=b"\x00\xff",
    host=b"[",
    accept=None,
    content_type=None,
    body=b"",
)
def test_any_headers_never_fail_nor_leak(
    browser: SignedIn,
    route: tuple[str, str],
    signed_in: bool,
    data: st.DataObject | None,
    origin: bytes | None,
    fetch_site: bytes | None,
    fetch_mode: bytes | None,
    request_id: bytes | None,
    host: bytes | None,
    accept: bytes | None,
    content_type: bytes | None,
    body: bytes,
) -> None:
    method, path = route
    cookie = b"" if data is None else data.draw(cookie_headers(browser, signed_in), label="cookie")
    headers = [
        (name, value)
        for name, value in (
            (b"cookie", cookie),
            (b"origin", origin),
            (b"sec-fetch-site", fetch_site),
            (b"sec-fetch-mode", fetch_mode),
            (b"x-request-id", request_id),
            (b"host", host),
            (b"accept", accept),
            (b"content-type", content_type),
        )
        if value is not None
    ]
    response = browser.app.portal.call(
        _send, browser.env, method, path, headers, b"" if method in ("GET", "HEAD") else body
    )

    assert_no_leak(response, [SECRET, PASSWORD, browser.session_cookie, browser.csrf_cookie])
    # The request id: the client's own when it is a safe token, else a fresh one.
    incoming = (request_id or b"").decode("latin-1")
    if REQUEST_ID.fullmatch(incoming):
        assert response.headers["x-request-id"] == incoming
    else:
        assert len(response.headers["x-request-id"]) == 32

    # Signed in exactly when the first cookie of the session cookie's exact name is a token
    # of a live session; a cookie that is not gets expired.
    session_name = browser.env.services.cookies.session_cookie
    first = _first_cookie(cookie, session_name)
    try:
        valid = first is not None and bool(browser.env.services.tokens.verify(first))
    except InvalidSessionToken:
        valid = False
    if path == "/api/session" and method == "GET":
        # Anything but 200 when not signed in: 401, or 303 to the login page for a page load.
        assert (response.status_code == 200) is valid, (first, response.status_code)
    expiring = [
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith(f"{session_name}=") and "Max-Age=0" in value
    ]
    # No example can end the session (no genuine CSRF token is ever sent here), so a valid
    # cookie is never expired, and any other is.
    assert bool(expiring) is bool(first and not valid), (first, valid, expiring)


@pytest.mark.parametrize("disguise", ["\xa0", "\x85", "\x0b", "\x1c", "\x1f"])
def test_session_cookie_under_a_look_alike_name_is_not_read(
    browser: SignedIn, disguise: str
) -> None:
    """Cookie tossing past ``__Host-``: a sibling subdomain may set a cookie whose name is
    ours with a leading "\xa0"; the browser sees another name, outside the prefix's rules,
    and must not have it read as the session cookie (here it carries a genuine token, as an
    attacker's own session would)."""
    name = browser.env.services.cookies.session_cookie
    cookie = (disguise + f"{name}={browser.session_cookie}").encode("latin-1")
    headers = [(b"cookie", cookie), (b"accept", b"application/json")]
    response = browser.app.portal.call(_send, browser.env, "GET", "/api/session", headers, b"")
    assert response.status_code == 401


# --- raw login forms --------------------------------------------------------------------

FIELDS = (b"username", b"password", b"csrf_token", b"next")
INTERESTING_VALUES = (
    b"",
    b"\x00",
    b"\xff\xfe",
    b"\xed\xa0\x80",  # a UTF-16 surrogate, encoded as if it were UTF-8 (invalid)
    b"\xc0\xaf",  # an over-long UTF-8 "/"
    b"%ff%fe",
    b"%00",
    b"%",
    b"%%",
    b"+",
    b"\\ud800",
    b"+2AA-",
    b"//evil.example",
    b"\x1b[2J",
    b"a" * 20_000,
)
field_names = st.one_of(st.sampled_from(FIELDS), st.binary(max_size=12))
field_values = st.one_of(
    st.binary(max_size=100), st.sampled_from(INTERESTING_VALUES), st.text().map(str.encode)
)


def _urlencoded(fields: list[tuple[bytes, bytes]], raw: bool) -> bytes:
    if raw:
        return b"&".join(name + b"=" + value for name, value in fields)
    return b"&".join(
        quote_from_bytes(n).encode() + b"=" + quote_from_bytes(v).encode() for n, v in fields
    )


def _multipart(fields: list[tuple[bytes, bytes]], boundary: bytes, filename: bool) -> bytes:
    parts = []
    for name, value in fields:
        disposition = b'form-data; name="' + name + b'"'
        if filename:
            disposition += b'; filename="x.txt"'
        parts.append(
            b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + value
        )
    return b"\r\n".join(parts) + b"\r\n--" + boundary + b"--\r\n"


@settings(APP_FUZZ, max_examples=examples(80))
@given(
    fields=st.lists(st.tuples(field_names, field_values), max_size=12),
    genuine=st.booleans(),
    right_password=st.booleans(),
    encoding=st.sampled_from(["urlencoded", "raw urlencoded", "multipart", "multipart file"]),
    charset=st.sampled_from(CHARSETS),
    content_type=st.one_of(
        st.none(), st.sampled_from([b"text/plain", b"application/json", b"multipart/mixed"])
    ),
)
@example(
    fields=[(b"username", b"\xff\xfe"), (b"password", b"\xed\xa0\x80")],
    genuine=True,
    right_password=False,
    encoding="multipart",
    charset="utf-8",
    content_type=None,
)
def test_any_login_form_never_fails_nor_leaks(
    browser: SignedIn,
    fields: list[tuple[bytes, bytes]],
    genuine: bool,
    right_password: bool,
    encoding: str,
    charset: str,
    content_type: bytes | None,
) -> None:
    _post_login(browser, fields, genuine, right_password, encoding, charset, content_type)


def _post_login(
    browser: SignedIn,
    fields: list[tuple[bytes, bytes]],
    genuine: bool,
    right_password: bool,
    encoding: str,
    charset: str,
    content_type: bytes | None,
) -> httpx.Response:
    names = browser.env.services.cookies
    # Same-origin always, or the origin check refuses the request before the form is read
    # (test_any_headers_never_fail_nor_leak fuzzes that check).
    headers = [(b"accept", b"text/html"), (b"origin", BASE_URL.encode())]
    if genuine:
        # As the browser would send it, so the fields get past the CSRF check too.
        fields = [*fields, (b"csrf_token", browser.login_token.encode())]
        headers.append((b"cookie", f"{names.csrf_cookie}={browser.csrf_cookie}".encode()))
    if right_password:
        fields = [(b"username", USER.encode()), (b"password", PASSWORD.encode()), *fields]
    boundary = b"fuzz-boundary-7MA4YWxkTrZu0gW"
    if encoding.startswith("multipart"):
        body = _multipart(fields, boundary, filename=encoding == "multipart file")
        kind = b"multipart/form-data; boundary=" + boundary
        if charset:
            kind += b"; charset=" + charset.encode()
    else:
        body = _urlencoded(fields, raw=encoding == "raw urlencoded")
        kind = b"application/x-www-form-urlencoded"
    headers.append((b"content-type", content_type or kind))
    response = browser.app.portal.call(_send, browser.env, "POST", "/login", headers, body)
    assert_no_leak(response, [SECRET, PASSWORD, browser.session_cookie, browser.csrf_cookie])
    return response


@pytest.mark.parametrize("charset", SURROGATE_CHARSETS)
def test_form_in_a_charset_that_makes_lone_surrogates(browser: SignedIn, charset: str) -> None:
    """A multipart form may name its charset, and Starlette decodes with whatever it names;
    three of Python's codecs turn bytes into a lone surrogate, which no page can be encoded
    in. No token is needed: the 403 page of the failed CSRF check shows the user name."""
    boundary = b"b"
    name = {"utf-7": b"+2AA-"}.get(charset, b"\\ud800")
    headers = [
        (b"origin", BASE_URL.encode()),
        (b"content-type", b"multipart/form-data; boundary=b; charset=" + charset.encode()),
    ]
    body = _multipart([(b"username", name)], boundary, filename=False)
    response = browser.app.portal.call(_send, browser.env, "POST", "/login", headers, body)
    assert response.status_code == 400
    assert_no_leak(response, [SECRET, PASSWORD])
