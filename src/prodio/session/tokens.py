"""The session cookie's value: a JWT that names the user and the server-side session.

The token only *points* at a session; the session store decides whether it is alive, so
logout and revocation take effect at once even though the token itself is still unexpired.

Keys rotate without logging everyone out: the current key signs, previous keys still
verify until a configured moment, and each token names its key with a ``kid`` derived
from the key itself (so there is no key id to configure or to get wrong).

Each token also names the deployment it is for (``aud``): two deployments that share a
secret (a staging copy of production's, say) still refuse each other's cookies when their
audiences differ.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

TOKEN_TYPE = "prodio-session"
REQUIRED_CLAIMS = ("sub", "sid", "iat", "exp", "typ", "aud")
DEFAULT_AUDIENCE = "prodio"
# The cookie limit is 4096 bytes for name and value together; anything larger was not ours.
MAX_TOKEN_LENGTH = 4000
CLOCK_LEEWAY_SECONDS = 5
MIN_KEY_BYTES = 32
# Header fields a verifier must understand to accept a token (RFC 7515 4.1.11: "crit");
# prodio understands none beyond these, so any other critical extension is refused.
_KNOWN_HEADER_FIELDS = frozenset({"alg", "typ", "kid"})


@dataclass(frozen=True, slots=True)
class SessionClaims:
    username: str
    session_id: str
    issued_at: int
    expires_at: int


class InvalidSessionToken(Exception):
    """The token is not one this server issued, or it has expired."""


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    kid: str
    key: bytes
    # None for the current key; for a previous key, when it stops being accepted.
    valid_until: float | None


def _derive(secret: bytes) -> tuple[str, bytes]:
    if len(secret) < MIN_KEY_BYTES:
        raise ValueError(f"a signing key must be at least {MIN_KEY_BYTES} bytes")
    # A key of its own (64 bytes, enough for HS512 too), so no other HMAC made with the
    # secret can ever pass as a session token.
    key = hmac.new(secret, b"prodio session jwt v1", hashlib.sha512).digest()
    kid = hashlib.sha256(b"prodio kid v1" + key).hexdigest()[:16]
    return kid, key


@dataclass(slots=True)
class _CachedClaims:
    claims: SessionClaims
    good_until: float


class SessionTokenCodec:
    """Issues and verifies session JWTs with one fixed algorithm.

    The algorithm comes from configuration and is the only one accepted: the token's own
    header never chooses it (no ``alg: none``, no algorithm confusion), nor the key: a header
    carrying ``jku``, ``x5u``, ``jwk``, ``x5c``, ``crit`` or any field beyond ``alg``, ``typ``
    and ``kid`` is refused outright. Verified tokens are cached until they, or
    their key, expire, since the same cookie arrives with every request; the cache is
    bounded and keyed by the whole token string.
    """

    def __init__(
        self,
        key: bytes,
        algorithm: str = "HS256",
        *,
        audience: str = DEFAULT_AUDIENCE,
        previous_keys: Sequence[bytes] = (),
        previous_keys_valid_until: float | None = None,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if previous_keys and previous_keys_valid_until is None:
            raise ValueError("previous keys need the moment until which they are accepted")
        kid, derived = _derive(key)
        self._current = _VerificationKey(kid, derived, None)
        self._keys = {kid: self._current}
        for previous in previous_keys:
            previous_kid, previous_derived = _derive(previous)
            self._keys.setdefault(
                previous_kid,
                _VerificationKey(previous_kid, previous_derived, previous_keys_valid_until),
            )
        if not audience:
            raise ValueError("the token audience must not be empty")
        self._algorithm = algorithm
        self._audience = audience
        self._cache: OrderedDict[str, _CachedClaims] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock

    @property
    def current_kid(self) -> str:
        return self._current.kid

    def issue(self, username: str, session_id: str, expires_at: float) -> str:
        claims: dict[str, Any] = {
            "sub": username,
            "sid": session_id,
            "iat": int(self._clock()),
            "exp": int(expires_at),
            "typ": TOKEN_TYPE,
            "aud": self._audience,
        }
        return jwt.encode(
            claims, self._current.key, algorithm=self._algorithm, headers={"kid": self._current.kid}
        )

    def verify(self, token: str) -> SessionClaims:
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached.good_until:
                return cached.claims
            del self._cache[token]
        claims, key = self._decode(token, now)
        good_until: float = claims.expires_at + CLOCK_LEEWAY_SECONDS
        if key.valid_until is not None:
            good_until = min(good_until, key.valid_until)
        self._cache[token] = _CachedClaims(claims, good_until)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return claims

    def _key_for(self, token: str, now: float) -> _VerificationKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidSessionToken("malformed header") from None
        if "crit" in header or not set(header) <= _KNOWN_HEADER_FIELDS:
            raise InvalidSessionToken("unsupported header fields")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidSessionToken("unknown key id")
        if key.valid_until is not None and now >= key.valid_until:
            raise InvalidSessionToken("retired key")
        return key

    def _decode(self, token: str, now: float) -> tuple[SessionClaims, _VerificationKey]:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidSessionToken("malformed token")
        try:
            key = self._key_for(token, now)
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[self._algorithm],
                # PyJWT compares a string ``aud`` exactly and a list by membership; only
                # the exact string this deployment issues is accepted (below).
                audience=self._audience,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
                leeway=CLOCK_LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise InvalidSessionToken(type(exc).__name__) from None
        except (ValueError, TypeError, AttributeError):
            # PyJWT lets a few malformed inputs through as plain errors; they are still
            # just bad tokens.
            raise InvalidSessionToken("malformed token") from None
        username, session_id = payload.get("sub"), payload.get("sid")
        issued_at, expires_at = payload.get("iat"), payload.get("exp")
        if payload.get("typ") != TOKEN_TYPE:
            raise InvalidSessionToken("wrong token type")
        if payload.get("aud") != self._audience:
            raise InvalidSessionToken("wrong audience")
        if not (
            isinstance(username, str) and username and isinstance(session_id, str) and session_id
        ):
            raise InvalidSessionToken("bad subject or session id")
        # bool is an int to isinstance; a token saying "iat": true was not made by us.
        if (
            not isinstance(issued_at, int)
            or not isinstance(expires_at, int)
            or isinstance(issued_at, bool)
            or isinstance(expires_at, bool)
        ):
            raise InvalidSessionToken("bad timestamps")
        return SessionClaims(username, session_id, issued_at, expires_at), key
