"""CSRF protection for prodio's own forms: signed tokens plus an origin check.

A token is ``<nonce>.<mac>`` where ``mac = HMAC(secret, purpose | binding | nonce)``
(OWASP's signed double-submit pattern). Before login it is bound to a random value in a
pre-login cookie, which puts nothing in the session store; after login it is bound to the
session id. A token from another browser, another session or an older session fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from prodio.audit import EVENT_CSRF_REJECTED, FAILURE, audit

_NONCE_BYTES = 16
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_TOKEN_LENGTH = 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class CsrfTokens:
    # Sessions whose token for_session remembers; all are forgotten at once when full.
    SESSION_CACHE_SIZE = 10_000

    def __init__(self, secret: bytes) -> None:
        # A key of its own, so that no other HMAC made with the secret can pass as a token.
        self._key = hmac.new(secret, b"prodio csrf v1", hashlib.sha256).digest()
        self._session_tokens: dict[str, str] = {}

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def is_cookie_value(value: str | None) -> bool:
        return value is not None and _COOKIE_VALUE.fullmatch(value) is not None

    def _mac(self, binding: str, nonce: str) -> str:
        # "surrogatepass": any str encodes (and distinct ones differently), so no binding
        # can make this raise.
        message = f"{binding}|{nonce}".encode("utf-8", "surrogatepass")
        # hmac.digest: the one-shot C path, a third of hmac.new's cost; /api/session issues
        # a token on every call.
        return _b64(hmac.digest(self._key, message, "sha256"))

    def issue(self, binding: str) -> str:
        nonce = secrets.token_urlsafe(_NONCE_BYTES)
        return f"{nonce}.{self._mac(binding, nonce)}"

    def for_session(self, session_id: str) -> str:
        """A token bound to the session, the same one each time: for ``GET /api/session``,
        which the UI polls and scripts call often.

        Handing a token out again grants nothing: every token issued for a session passes
        :meth:`check` for as long as that session lives, and a new session has a new id.
        Making one is an HMAC, a random nonce and base64, a tenth of the route's CPU under
        load (``bench/``). HTML pages keep a fresh token per page (:meth:`issue`): they
        echo form input, and a secret that stays the same in a compressed page that
        reflects input is what BREACH recovers; the JSON answer reflects nothing.
        """
        token = self._session_tokens.get(session_id)
        if token is None:
            token = self.issue(self.session_binding(session_id))
            if len(self._session_tokens) >= self.SESSION_CACHE_SIZE:
                self._session_tokens.clear()
            self._session_tokens[session_id] = token
        return token

    def check(self, token: str | None, binding: str) -> bool:
        """Whether ``token`` was issued for ``binding``. Never raises, whatever the input."""
        # A token is base64url text: anything else (a lone surrogate from a form decoded in
        # an exotic charset, say) is no token, and must not reach ``.encode()`` below.
        if not token or len(token) > _MAX_TOKEN_LENGTH or not token.isascii() or not binding:
            return False
        nonce, sep, mac = token.partition(".")
        if not sep or not nonce:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(binding, nonce).encode())

    @staticmethod
    def anonymous_binding(cookie_value: str) -> str:
        return f"pre-login:{cookie_value}"

    @staticmethod
    def session_binding(session_id: str) -> str:
        return f"session:{session_id}"


def own_origin(connection: HTTPConnection) -> str | None:
    """This request's own origin, or None when its ``Host`` header cannot be parsed."""
    url = connection.url
    try:
        # The URL is parsed from the client's Host header: "[" or "x:99999" raise here.
        scheme, host, port_number = url.scheme, url.hostname or "", url.port
    except ValueError:
        return None
    default_port = {"http": 80, "https": 443}.get(scheme)
    port = f":{port_number}" if port_number and port_number != default_port else ""
    return f"{scheme}://{host}{port}".lower()


def is_same_origin_request(connection: HTTPConnection) -> bool:
    """Whether a state-changing request comes from one of our own pages.

    Browsers send ``Sec-Fetch-Site`` (all current ones) and ``Origin`` on every POST; one of
    them must say "this site". A request with neither is refused: it did not come from a
    browser page of ours, and the token alone should not be the only line of defence.
    Never raises: a malformed ``Origin`` or ``Host`` header is simply not same-origin.
    """
    fetch_site = connection.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    origin = connection.headers.get("origin")
    if origin is not None:
        if origin == "null":
            return False
        try:
            # Both raise ValueError on a malformed authority ("http://[", a port out of range).
            parsed = urlsplit(origin)
            port_number = parsed.port
        except ValueError:
            return False
        if not parsed.scheme or not parsed.netloc:
            return False
        default_port = {"http": 80, "https": 443}.get(parsed.scheme)
        port = f":{port_number}" if port_number and port_number != default_port else ""
        normalized = f"{parsed.scheme}://{parsed.hostname or ''}{port}".lower()
        return normalized == own_origin(connection)
    return fetch_site == "same-origin"


def refuse_forged_form(connection: HTTPConnection, token_ok: bool, user: str | None = None) -> bool:
    """Whether a POST of one of prodio's forms is to be refused (403): its CSRF token did not
    check out (``token_ok`` is the caller's check, against the binding the form was issued
    for) or it did not come from one of our pages. A refusal is audited, under ``user`` when
    given (a login form names the account it was for), else the request's own user.
    """
    origin_ok = is_same_origin_request(connection)
    if token_ok and origin_ok:
        return False
    audit(
        EVENT_CSRF_REJECTED,
        FAILURE,
        connection,
        user=user,
        status=403,
        reason="bad CSRF token" if origin_ok else "cross-origin request",
    )
    return True
