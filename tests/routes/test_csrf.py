"""CSRF tokens and the same-origin check, one test per way to get it wrong."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from prodio.routes.csrf import CsrfTokens, is_same_origin_request

SECRET = b"s" * 32


def _request(
    headers: dict[str, str], host: str = "app.example:8000", scheme: str = "http"
) -> Request:
    raw = [(b"host", host.encode())] + [
        (k.lower().encode(), v.encode()) for k, v in headers.items()
    ]
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/login",
            "query_string": b"",
            "headers": raw,
            "server": ("app.example", 8000),
        }
    )


def test_token_round_trip_and_binding() -> None:
    tokens = CsrfTokens(SECRET)
    token = tokens.issue("session:abc")
    assert tokens.check(token, "session:abc")
    assert not tokens.check(token, "session:abd")
    assert not tokens.check(token, "pre-login:abc")


def test_tokens_are_unique_per_issue() -> None:
    tokens = CsrfTokens(SECRET)
    assert tokens.issue("x") != tokens.issue("x")


def test_a_sessions_token_is_handed_out_again_and_binds_to_that_session_only() -> None:
    tokens = CsrfTokens(SECRET)
    token = tokens.for_session("abc")
    assert tokens.for_session("abc") == token
    assert tokens.check(token, CsrfTokens.session_binding("abc"))
    assert not tokens.check(token, CsrfTokens.session_binding("abd"))
    assert not tokens.check(token, CsrfTokens.anonymous_binding("abc"))
    assert tokens.for_session("abd") != token


def test_remembered_session_tokens_are_bounded_and_stay_valid_when_forgotten() -> None:
    tokens = CsrfTokens(SECRET)
    first = tokens.for_session("s0")
    for number in range(1, CsrfTokens.SESSION_CACHE_SIZE + 1):
        tokens.for_session(f"s{number}")
    assert len(tokens._session_tokens) <= CsrfTokens.SESSION_CACHE_SIZE
    # Forgotten, so a new one is made; the first still checks out.
    again = tokens.for_session("s0")
    assert again != first
    assert tokens.check(first, CsrfTokens.session_binding("s0"))
    assert tokens.check(again, CsrfTokens.session_binding("s0"))


@pytest.mark.parametrize("token", [None, "", ".", "abc", "abc.", ".abc", "a" * 500, "é.é"])
def test_malformed_tokens_fail(token: str | None) -> None:
    assert not CsrfTokens(SECRET).check(token, "session:abc")


def test_token_from_another_secret_fails() -> None:
    token = CsrfTokens(b"t" * 32).issue("session:abc")
    assert not CsrfTokens(SECRET).check(token, "session:abc")


def test_empty_binding_never_passes() -> None:
    tokens = CsrfTokens(SECRET)
    assert not tokens.check(tokens.issue(""), "")


def test_cookie_value_shape() -> None:
    assert CsrfTokens.is_cookie_value(CsrfTokens.new_cookie_value())
    for bad in (None, "", "short", "x" * 44, "!" * 43):
        assert not CsrfTokens.is_cookie_value(bad)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Origin": "http://app.example:8000"}, True),
        ({"Origin": "http://APP.example:8000", "Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "http://evil.example"}, False),
        ({"Origin": "http://app.example:8001"}, False),
        ({"Origin": "https://app.example:8000"}, False),
        ({"Origin": "http://app.example:8000.evil.example"}, False),
        ({"Origin": "http://app.example:99999"}, False),
        ({"Origin": "http://app.example:8000", "Sec-Fetch-Site": "cross-site"}, False),
        ({"Origin": "http://app.example:8000", "Sec-Fetch-Site": "same-site"}, False),
        ({"Sec-Fetch-Site": "none"}, False),
    ],
)
def test_same_origin_check(headers: dict[str, str], expected: bool) -> None:
    assert is_same_origin_request(_request(headers)) is expected


def test_default_port_is_the_same_origin() -> None:
    request = _request({"Origin": "https://app.example"}, host="app.example", scheme="https")
    assert is_same_origin_request(request)
