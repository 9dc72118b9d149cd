"""The session JWT: only tokens this server issued, with its algorithm and all claims, pass."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from prodio.session.tokens import (
    DEFAULT_AUDIENCE,
    TOKEN_TYPE,
    InvalidSessionToken,
    SessionTokenCodec,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "alice",
        "sid": "s" * 43,
        "iat": now,
        "exp": now + 600,
        "typ": TOKEN_TYPE,
        "aud": DEFAULT_AUDIENCE,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, object], headers: dict[str, object] | None = None) -> str:
    """Sign as the codec does, with its derived key, to test claim checks in isolation."""
    codec = SessionTokenCodec(KEY)
    return jwt.encode(
        claims,
        codec._current.key,
        algorithm="HS256",
        headers={"kid": codec.current_kid, **(headers or {})},
    )


def test_round_trip() -> None:
    codec = SessionTokenCodec(KEY)
    token = codec.issue("alice", "sid-1", time.time() + 60)
    claims = codec.verify(token)
    assert (claims.username, claims.session_id) == ("alice", "sid-1")
    assert claims.expires_at > claims.issued_at


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionTokenCodec(b"short")


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "a" * 5000, "\x00\x01", "eyJ.eyJ.", "é.é.é"],
)
def test_malformed_tokens_rejected(token: str) -> None:
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


def test_alg_none_rejected() -> None:
    header = _b64({"alg": "none", "typ": "JWT"})
    token = f"{header}.{_b64(_claims())}."
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


def test_other_algorithm_rejected_even_with_right_key() -> None:
    token = SessionTokenCodec(KEY, "HS512").issue("alice", "sid-1", time.time() + 60)
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY, "HS256").verify(token)


def test_raw_secret_is_not_the_signing_key() -> None:
    token = jwt.encode(_claims(), KEY, algorithm="HS256")
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


def test_wrong_key_rejected() -> None:
    token = SessionTokenCodec(OTHER_KEY).issue("alice", "sid-1", time.time() + 60)
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


@pytest.mark.parametrize("missing", ["exp", "sid", "sub", "iat", "typ", "aud"])
def test_missing_claim_rejected(missing: str) -> None:
    claims = _claims()
    del claims[missing]
    token = _sign(claims)
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


@pytest.mark.parametrize(
    "overrides",
    [
        {"typ": "access"},
        {"sub": ""},
        {"sid": 5},
        {"sub": ["alice"]},
        {"exp": int(time.time()) - 60},
        {"iat": "yesterday"},
        {"aud": "other-service"},
        {"aud": ""},
        # PyJWT accepts a list that contains the audience; a token of ours never has one.
        {"aud": [DEFAULT_AUDIENCE, "other-service"]},
        {"aud": [DEFAULT_AUDIENCE]},
        {"aud": 1},
    ],
)
def test_bad_claims_rejected(overrides: dict[str, object]) -> None:
    token = _sign(_claims(**overrides))
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


def test_token_for_another_deployment_with_the_same_key_is_refused() -> None:
    """Staging and production sharing a secret still refuse each other's cookies."""
    staging = SessionTokenCodec(KEY, audience="shop-staging")
    production = SessionTokenCodec(KEY, audience="shop")
    token = staging.issue("alice", "sid-1", time.time() + 60)
    assert staging.verify(token).username == "alice"
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "shop-staging"
    with pytest.raises(InvalidSessionToken, match="InvalidAudience"):
        production.verify(token)


def test_empty_audience_refused() -> None:
    with pytest.raises(ValueError, match="audience"):
        SessionTokenCodec(KEY, audience="")


def test_tampered_payload_rejected() -> None:
    codec = SessionTokenCodec(KEY)
    header, _, signature = codec.issue("alice", "sid-1", time.time() + 60).split(".")
    forged = f"{header}.{_b64(_claims(sub='admin'))}.{signature}"
    with pytest.raises(InvalidSessionToken):
        codec.verify(forged)


def test_cached_token_still_expires() -> None:
    codec = SessionTokenCodec(KEY)
    token = _sign(_claims(exp=int(time.time()) - 3))
    # Within the 5 s leeway: accepted, and cached.
    assert codec.verify(token).username == "alice"
    expired = _sign(_claims(exp=int(time.time()) - 30))
    with pytest.raises(InvalidSessionToken):
        codec.verify(expired)


def test_cache_is_bounded() -> None:
    codec = SessionTokenCodec(KEY, cache_size=3)
    tokens = [codec.issue("alice", f"sid-{n}", time.time() + 60) for n in range(10)]
    for token in tokens:
        codec.verify(token)
    assert len(codec._cache) == 3


def test_sign_helper_matches_the_codec() -> None:
    assert SessionTokenCodec(KEY).verify(_sign(_claims())).username == "alice"


@pytest.mark.parametrize(
    "extra_header",
    [
        {"crit": ["exp"]},
        {"jku": "https://evil.example/keys"},
        {"x5u": "https://evil.example/cert"},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"x5c": ["MIIB"]},
        {"kid": "unknown-kid"},
    ],
)
def test_header_tricks_are_refused(extra_header: dict[str, object]) -> None:
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(_sign(_claims(), extra_header))


def test_non_string_kid_is_refused() -> None:
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": 5})
    _, payload, signature = _sign(_claims()).split(".")
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(f"{header}.{payload}.{signature}")


def test_token_without_kid_is_refused() -> None:
    codec = SessionTokenCodec(KEY)
    token = jwt.encode(_claims(), codec._current.key, algorithm="HS256")
    with pytest.raises(InvalidSessionToken):
        codec.verify(token)


def test_attacker_supplied_jwk_is_never_used() -> None:
    attacker_key = b"a" * 64
    token = jwt.encode(
        _claims(sub="admin"),
        attacker_key,
        algorithm="HS256",
        headers={"jwk": {"kty": "oct", "k": base64.urlsafe_b64encode(attacker_key).decode()}},
    )
    with pytest.raises(InvalidSessionToken):
        SessionTokenCodec(KEY).verify(token)


def test_rotation_accepts_previous_key_during_overlap_only() -> None:
    now = [time.time()]
    old = SessionTokenCodec(OTHER_KEY, clock=lambda: now[0])
    old_token = old.issue("alice", "sid-1", now[0] + 3600)
    rotated = SessionTokenCodec(
        KEY,
        previous_keys=[OTHER_KEY],
        previous_keys_valid_until=now[0] + 600,
        clock=lambda: now[0],
    )
    assert rotated.verify(old_token).username == "alice"
    new_token = rotated.issue("alice", "sid-2", now[0] + 3600)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.current_kid
    assert rotated.current_kid != old.current_kid
    now[0] += 601
    with pytest.raises(InvalidSessionToken, match="retired"):
        rotated.verify(old_token)
    assert rotated.verify(new_token).session_id == "sid-2"


def test_previous_keys_need_an_end() -> None:
    with pytest.raises(ValueError, match="until"):
        SessionTokenCodec(KEY, previous_keys=[OTHER_KEY])


def test_short_previous_key_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionTokenCodec(KEY, previous_keys=[b"short"], previous_keys_valid_until=0)
