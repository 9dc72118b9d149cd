"""Property tests of the parsers that read attacker-controlled input before anything else.

The property is the same for each: an input is either accepted as exactly what prodio issued,
or rejected in the module's documented way (``InvalidSessionToken``, ``None``, ``False``),
never with another exception, which the app would turn into a 500. Inputs are arbitrary text
and bytes, and mutations of genuine values: bit flips, truncation, padding, whitespace,
look-alike characters, and JWT headers re-encoded with other algorithms and key ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.requests import HTTPConnection

from prodio.routes.csrf import CsrfTokens, is_same_origin_request
from prodio.session.cookies import CookiePolicy, read_cookie
from prodio.session.tokens import (
    CLOCK_LEEWAY_SECONDS,
    InvalidSessionToken,
    SessionClaims,
    SessionTokenCodec,
)
from tests.fuzz.harness import FUZZ, TRICKY_CHARACTERS, examples, mutated

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
# A fixed clock makes ``iat`` predictable; PyJWT checks ``exp`` and ``iat`` against the real
# clock, so it is "now" (when this module was imported), not an arbitrary moment.
NOW = int(time.time())
EXPIRES = NOW + 3600
CODEC = SessionTokenCodec(KEY, clock=lambda: NOW)
ISSUED = CODEC.issue("alice", "s" * 43, EXPIRES)
ISSUED_CLAIMS = SessionClaims("alice", "s" * 43, NOW, EXPIRES)
# The derived signing key, to forge tokens that differ from a genuine one in one respect only.
SIGNING_KEY: bytes = CODEC._current.key
HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}

# Text as it can reach a parser: any Unicode, Latin-1 (how ASGI headers decode), lone
# surrogates (what ``surrogateescape`` or a ``unicode_escape`` form charset can produce).
any_text = st.one_of(
    st.text(),
    st.text(st.characters(codec="latin-1")),
    st.text(st.characters(categories=["Cs", "Zs", "Cc"]), max_size=20),
    st.binary().map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _sign(signing_input: str, key: bytes, algorithm: str) -> str:
    return _b64(hmac.new(key, signing_input.encode(), HASHES[algorithm]).digest())


# --- session JWT: SessionTokenCodec.verify ---------------------------------------------


def _verify_or_reject(token: str) -> SessionClaims | None:
    try:
        return CODEC.verify(token)
    except InvalidSessionToken:
        return None


@settings(FUZZ, max_examples=examples(100))
@given(
    username=st.text(min_size=1),
    session_id=st.text(min_size=1),
    lifetime=st.integers(CLOCK_LEEWAY_SECONDS + 1, 10**9),
)
def test_issued_token_verifies_to_exactly_its_claims(
    username: str, session_id: str, lifetime: int
) -> None:
    # Now, not NOW: PyJWT checks ``exp`` against the real clock, and a whole-suite run can
    # reach this test minutes after the module was imported (a 6 s lifetime would be over).
    now = int(time.time())
    codec = SessionTokenCodec(KEY, clock=lambda: now)
    token = codec.issue(username, session_id, now + lifetime)
    assert codec.verify(token) == SessionClaims(username, session_id, now, now + lifetime)
    # The cached answer is the same answer.
    assert codec.verify(token) == SessionClaims(username, session_id, now, now + lifetime)


@settings(FUZZ, max_examples=examples(150))
@given(token=st.one_of(any_text, st.text(max_size=5000)))
@example(token="")
@example(token="..")
@example(token="e30.e30.")
@example(token=ISSUED.split(".")[0] + ".." + ISSUED.split(".")[2])
def test_arbitrary_text_is_rejected(token: str) -> None:
    with pytest.raises(InvalidSessionToken):
        CODEC.verify(token)


@settings(FUZZ, max_examples=examples(250))
@given(data=st.data())
def test_mutated_token_is_rejected_or_verifies_to_the_issued_claims(data: st.DataObject) -> None:
    token = data.draw(mutated(ISSUED), label="token")
    claims = _verify_or_reject(token)
    # Base64 leaves a few bits of the last character unused and PyJWT accepts padding, so a
    # handful of other spellings of the same token verify; they carry the same claims.
    assert claims is None or claims == ISSUED_CLAIMS


@settings(FUZZ, max_examples=examples(250))
@given(data=st.data())
def test_truncated_or_extended_token_is_rejected(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(ISSUED) - 1), label="cut")
    with pytest.raises(InvalidSessionToken):
        CODEC.verify(ISSUED[:cut])
    suffix = data.draw(st.text(min_size=1, max_size=10).filter(lambda s: s not in ("=", "==")))
    claims = _verify_or_reject(ISSUED + suffix)
    assert claims is None or claims == ISSUED_CLAIMS


# Header fields an attacker would try: other algorithms, other or odd key ids, and the
# fields that make a verifier fetch or trust a key named by the token itself.
header_values: dict[str, st.SearchStrategy[Any]] = {
    "kid": st.one_of(
        st.just(CODEC.current_kid),
        st.sampled_from(["", CODEC.current_kid.upper(), CODEC.current_kid + " ", "0" * 16]),
        st.integers(),
        st.none(),
        st.lists(st.just(CODEC.current_kid), max_size=2),
        st.text(max_size=20),
    ),
    "typ": st.sampled_from(["JWT", "jwt", "", "at+jwt", None, 1]),
    "crit": st.just(["exp"]),
    "jku": st.just("https://evil.example/jwks.json"),
    "x5u": st.just("https://evil.example/cert.pem"),
    "jwk": st.just({"kty": "oct", "k": _b64(b"attacker key 0123456789abcdef012")}),
    "x5c": st.just(["MIIB"]),
    "b64": st.just(False),
    "cty": st.just("JWT"),
    "zip": st.just("DEF"),
}
headers = st.fixed_dictionaries(
    {
        "alg": st.one_of(
            st.sampled_from(["HS256", "HS384", "HS512", "none", "None", "hs256", "RS256", ""]),
            st.none(),
            st.integers(),
            st.lists(st.just("HS256"), max_size=2),
        )
    },
    optional=header_values,
)
SIGNERS = ("keep", "empty", "HS256", "HS384", "HS512", "other key", "raw secret")


@settings(FUZZ, max_examples=examples(250))
@given(
    header=headers,
    signer=st.sampled_from(SIGNERS),
    spacing=st.sampled_from([(",", ":"), (", ", ": ")]),
)
@example(header={"alg": "none", "kid": CODEC.current_kid}, signer="empty", spacing=(",", ":"))
@example(header={"alg": "HS512", "kid": CODEC.current_kid}, signer="HS512", spacing=(",", ":"))
@example(
    header={"alg": "HS256", "kid": CODEC.current_kid, "jku": "https://evil.example/jwks.json"},
    signer="HS256",
    spacing=(",", ":"),
)
@example(
    header={"alg": "HS256", "kid": CODEC.current_kid, "typ": "JWT"},
    signer="HS256",
    spacing=(", ", ": "),
)
def test_reencoded_header_is_rejected_unless_it_is_a_genuine_signature(
    header: dict[str, Any], signer: str, spacing: tuple[str, str]
) -> None:
    _, payload, signature = ISSUED.split(".")
    signing_input = f"{_b64(json.dumps(header, separators=spacing).encode())}.{payload}"
    if signer == "keep":
        new_signature = signature
    elif signer == "empty":
        new_signature = ""
    elif signer == "other key":
        new_signature = _sign(signing_input, OTHER_KEY, "HS256")
    elif signer == "raw secret":
        new_signature = _sign(signing_input, KEY, "HS256")
    else:
        new_signature = _sign(signing_input, SIGNING_KEY, signer)
    claims = _verify_or_reject(f"{signing_input}.{new_signature}")

    genuine = (
        signer == "HS256"
        and header["alg"] == "HS256"
        and header.get("kid") == CODEC.current_kid
        and set(header) <= {"alg", "kid", "typ"}
    )
    if not genuine:
        assert claims is None, header
    elif header.get("typ", "JWT") == "JWT":
        # Re-encoded (other spacing, no typ) but signed with the real key the real way: it
        # is a token of ours, and carries exactly the claims issued.
        assert claims == ISSUED_CLAIMS
    else:
        assert claims is None or claims == ISSUED_CLAIMS


@settings(FUZZ, max_examples=examples(150))
@given(
    claims=st.dictionaries(
        st.sampled_from(["sub", "sid", "iat", "exp", "typ", "nbf", "aud"]),
        st.one_of(
            st.text(max_size=10),
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=True),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=2),
            st.sampled_from([NOW, EXPIRES, "prodio-session", "prodio"]),
        ),
    )
)
def test_signed_claims_of_any_shape_are_rejected_or_read_exactly(claims: dict[str, Any]) -> None:
    """Even a payload signed with the real key never makes ``verify`` raise something else."""
    header = _b64(json.dumps({"alg": "HS256", "kid": CODEC.current_kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}"
    result = _verify_or_reject(f"{signing_input}.{_sign(signing_input, SIGNING_KEY, 'HS256')}")
    if result is not None:
        assert result == SessionClaims(claims["sub"], claims["sid"], claims["iat"], claims["exp"])


# --- cookies: read_cookie ---------------------------------------------------------------

# RFC 6265 4.1.1: a cookie name is an RFC 7230 token, a value is cookie-octets.
cookie_names = st.text(
    st.sampled_from(
        "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ),
    min_size=1,
    max_size=20,
)
cookie_values = st.text(
    st.sampled_from(
        [chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\'],
    ),
    max_size=60,
)
# How clients separate cookies: "; " is the RFC (and every browser), the rest is tolerated.
separators = st.sampled_from(["; ", ";", ";  ", " ; ", "\t;\t"])
SESSION_COOKIES = ("prodio_session", "__Host-prodio_session")


@settings(FUZZ, max_examples=examples(150))
@given(header=any_text, name=st.one_of(any_text, st.sampled_from(SESSION_COOKIES)))
def test_read_cookie_never_raises(header: str, name: str) -> None:
    value = read_cookie(header, name)
    assert value is None or isinstance(value, str)


@settings(FUZZ, max_examples=examples(150))
@given(
    pairs=st.lists(st.tuples(cookie_names, cookie_values), max_size=8),
    name=st.one_of(cookie_names, st.sampled_from(SESSION_COOKIES)),
    separator=separators,
)
def test_read_cookie_finds_exactly_the_first_cookie_of_that_name(
    pairs: list[tuple[str, str]], name: str, separator: str
) -> None:
    header = separator.join(f"{key}={value}" for key, value in pairs)
    expected = next((value for key, value in pairs if key == name), None)
    assert read_cookie(header, name) == expected


@settings(FUZZ, max_examples=examples(150))
@given(
    name=st.sampled_from(SESSION_COOKIES),
    value=cookie_values,
    secure=st.booleans(),
    others=st.lists(st.tuples(cookie_names, cookie_values), max_size=4),
)
def test_cookie_set_by_prodio_reads_back_exactly(
    name: str, value: str, secure: bool, others: list[tuple[str, str]]
) -> None:
    policy = CookiePolicy(secure=secure, samesite="lax")
    # The browser sends back the "name=value" that starts the Set-Cookie header.
    sent = policy.header(name, value, max_age=60).split(";", 1)[0]
    header = "; ".join([*(f"{k}={v}" for k, v in others if k != name), sent])
    assert read_cookie(header, name) == value


@settings(FUZZ, max_examples=examples(150))
@given(
    name=st.sampled_from(SESSION_COOKIES),
    genuine=cookie_values,
    planted=cookie_values,
    disguise=st.text(st.sampled_from(TRICKY_CHARACTERS), min_size=1, max_size=3),
    where=st.sampled_from(["before", "after", "inside"]),
)
@example(
    name="__Host-prodio_session", genuine="ours", planted="theirs", disguise="\xa0", where="before"
)
@example(
    name="__Host-prodio_session", genuine="ours", planted="theirs", disguise="\x85", where="before"
)
def test_cookie_whose_name_only_looks_like_ours_is_not_ours(
    name: str, genuine: str, planted: str, disguise: str, where: str
) -> None:
    """A name that matches only once other whitespace is trimmed is another cookie.

    Browsers keep such a name as it is, so ``\\xa0__Host-prodio_session`` set by a sibling
    subdomain is not a ``__Host-`` cookie to them and escapes the prefix's rules; a server
    that trims it would read it as the session cookie (cookie tossing past ``__Host-``).
    """
    look_alike = {
        "before": disguise + name,
        "after": name + disguise,
        "inside": name[:2] + disguise + name[2:],
    }[where]
    header = f"{look_alike}={planted}; {name}={genuine}"
    assert read_cookie(header, name) == genuine
    assert read_cookie(f"{look_alike}={planted}", name) is None


# --- CSRF tokens and the same-origin check: prodio.routes.csrf -------------------------

CSRF = CsrfTokens(KEY)
BINDING = CsrfTokens.anonymous_binding(CsrfTokens.new_cookie_value())
CSRF_TOKEN = CSRF.issue(BINDING)


@settings(FUZZ, max_examples=examples(100))
@given(binding=st.text(min_size=1))
def test_csrf_token_checks_for_its_own_binding_only(binding: str) -> None:
    token = CSRF.issue(binding)
    assert CSRF.check(token, binding)
    assert not CSRF.check(token, binding + "x")
    assert not CsrfTokens(OTHER_KEY).check(token, binding)


@settings(FUZZ, max_examples=examples(150))
@given(token=st.one_of(st.none(), any_text), binding=st.one_of(any_text, st.just(BINDING)))
def test_csrf_check_never_raises(token: str | None, binding: str) -> None:
    assert CSRF.check(token, binding) in (True, False)


@settings(FUZZ, max_examples=examples(250))
@given(data=st.data())
def test_mutated_csrf_token_never_passes(data: st.DataObject) -> None:
    token = data.draw(mutated(CSRF_TOKEN), label="token")
    # The MAC is compared as text, so unlike the JWT no other spelling passes.
    assert CSRF.check(token, BINDING) is (token == CSRF_TOKEN)


@settings(FUZZ, max_examples=examples(100))
@given(value=st.one_of(st.none(), any_text))
def test_csrf_cookie_shape_check_never_raises(value: str | None) -> None:
    assert CsrfTokens.is_cookie_value(value) in (True, False)


def _connection(host: bytes, headers: list[tuple[bytes, bytes]], scheme: str) -> HTTPConnection:
    return HTTPConnection(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/login",
            "query_string": b"",
            "headers": [(b"host", host), *headers],
            "server": ("app.example", 8000),
        }
    )


# Header values as a server hands them to the app: any byte but CR and LF.
header_bytes = st.binary(max_size=60).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
origins = st.one_of(
    header_bytes,
    st.sampled_from(
        [
            b"http://app.example:8000",
            b"null",
            b"http://[",
            b"http://[::1",
            b"http://[zz]",
            b"http://app.example:99999",
            b"http://app.example:-1",
            b"http://app.example:8000@evil.example",
            b"http://\xa0app.example:8000",
            b"http://app.example:8000\x00",
        ]
    ),
)
hosts = st.one_of(
    header_bytes,
    st.sampled_from([b"app.example:8000", b"[", b"[::1", b"x:99999", b"x:-1", b"", b":"]),
)


@settings(FUZZ, max_examples=examples(250))
@given(
    host=hosts,
    origin=st.one_of(st.none(), origins),
    fetch_site=st.one_of(
        st.none(), st.sampled_from([b"same-origin", b"same-site", b"cross-site", b"none"])
    ),
    scheme=st.sampled_from(["http", "https"]),
)
@example(host=b"app.example:8000", origin=b"http://[", fetch_site=None, scheme="http")
@example(host=b"[", origin=b"http://app.example:8000", fetch_site=None, scheme="http")
@example(host=b"x:99999", origin=b"http://x:99999", fetch_site=None, scheme="http")
def test_same_origin_check_never_raises_and_trusts_only_a_matching_origin(
    host: bytes, origin: bytes | None, fetch_site: bytes | None, scheme: str
) -> None:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if fetch_site is not None:
        headers.append((b"sec-fetch-site", fetch_site))
    same = is_same_origin_request(_connection(host, headers, scheme))
    assert same in (True, False)
    if same:
        assert fetch_site in (None, b"same-origin")
        assert origin is not None or fetch_site == b"same-origin"
    if origin is None and fetch_site == b"same-origin":
        assert same


@settings(FUZZ, max_examples=examples(60))
@given(
    host=st.sampled_from(["app.example", "APP.example", "127.0.0.1", "[::1]"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    scheme=st.sampled_from(["http", "https"]),
)
def test_a_page_of_our_own_origin_is_same_origin(host: str, port: int | None, scheme: str) -> None:
    authority = host if port is None else f"{host}:{port}"
    origin = f"{scheme}://{authority.lower()}".encode()
    assert is_same_origin_request(_connection(authority.encode(), [(b"origin", origin)], scheme))
