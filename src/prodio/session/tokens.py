"""The session cookie's value: a JWT that names the user and the server-side session.

The token only *points* at a session; the session store decides whether it is alive, so
logout and revocation take effect at once even though the token itself is still unexpired.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

TOKEN_TYPE = "prodio-session"
REQUIRED_CLAIMS = ("sub", "sid", "iat", "exp", "typ")
# The cookie limit is 4096 bytes for name and value together; anything larger was not ours.
MAX_TOKEN_LENGTH = 4000
CLOCK_LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class SessionClaims:
    username: str
    session_id: str
    issued_at: int
    expires_at: int


class InvalidSessionToken(Exception):
    """The token is not one this server issued, or it has expired."""


class SessionTokenCodec:
    """Issues and verifies session JWTs with one fixed algorithm and key.

    The algorithm comes from configuration and is the only one accepted: the token's own
    header never chooses it (no ``alg: none``, no algorithm confusion).
    Verified tokens are cached until they expire, since the same cookie arrives with every
    request; the cache is bounded and keyed by the whole token string.
    """

    def __init__(self, key: bytes, algorithm: str = "HS256", *, cache_size: int = 10_000) -> None:
        if len(key) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        # A key of its own (64 bytes, enough for HS512 too), so no other HMAC made with the
        # secret can ever pass as a session token.
        self._key = hmac.new(key, b"prodio session jwt v1", hashlib.sha512).digest()
        self._algorithm = algorithm
        self._cache: OrderedDict[str, SessionClaims] = OrderedDict()
        self._cache_size = cache_size

    def issue(self, username: str, session_id: str, expires_at: float) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": username,
            "sid": session_id,
            "iat": now,
            "exp": int(expires_at),
            "typ": TOKEN_TYPE,
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm)

    def verify(self, token: str) -> SessionClaims:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + CLOCK_LEEWAY_SECONDS > time.time():
                return cached
            del self._cache[token]
        claims = self._decode(token)
        self._cache[token] = claims
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return claims

    def _decode(self, token: str) -> SessionClaims:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidSessionToken("malformed token")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
                leeway=CLOCK_LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise InvalidSessionToken(type(exc).__name__) from None
        except (ValueError, TypeError):
            # PyJWT lets a few malformed inputs through as plain errors; they are still
            # just bad tokens.
            raise InvalidSessionToken("malformed token") from None
        username, session_id = payload.get("sub"), payload.get("sid")
        issued_at, expires_at = payload.get("iat"), payload.get("exp")
        if payload.get("typ") != TOKEN_TYPE:
            raise InvalidSessionToken("wrong token type")
        if not (
            isinstance(username, str) and username and isinstance(session_id, str) and session_id
        ):
            raise InvalidSessionToken("bad subject or session id")
        if not (isinstance(issued_at, int) and isinstance(expires_at, int)):
            raise InvalidSessionToken("bad timestamps")
        return SessionClaims(username, session_id, issued_at, expires_at)
