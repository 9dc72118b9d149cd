"""The optional breach check of new passwords, against a real local range API server.

Every test talks HTTP to ``tests/users/range_api.py`` on a loopback port: nothing reaches
any other host.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from prodio.config import Settings
from prodio.users.base import UserStoreUnavailable
from prodio.users.breach import (
    BreachCheckUnavailable,
    PasswordBreached,
    PwnedPasswordsCheck,
    breach_count,
    build_breach_check,
    sha1_hex,
)
from prodio.users.passwords import PasswordHasher, PasswordPolicyError, check_new_password
from tests.conftest import require_binary
from tests.users.range_api import RangeApi, serving, sha1_upper
from tests.users.support import CHEAP_ARGON2, free_port

BREACHED = "monkey see monkey do 2019"
CLEAN = "violet tractor sings at noon"
PADDED = "orange piano under the bridge"
SHORT_TIMEOUT = 0.3


@pytest.fixture
def api() -> Iterator[RangeApi]:
    with serving(RangeApi(breached={BREACHED: 3_861}, padded=[PADDED])) as running:
        yield running


def checker(url: str, **options: object) -> PwnedPasswordsCheck:
    return PwnedPasswordsCheck(url, **options)  # type: ignore[arg-type]


# -- what it finds ----------------------------------------------------------------------


def test_a_breached_password_is_refused_with_a_clear_message(api: RangeApi) -> None:
    with pytest.raises(PasswordBreached) as caught:
        checker(api.url).check(BREACHED)
    message = str(caught.value)
    assert "appears in data breaches (3,861 times)" in message
    assert "choose another one" in message
    assert BREACHED not in message
    # A policy refusal like the others: the CLI and the password page show it as such.
    assert isinstance(caught.value, PasswordPolicyError)


def test_a_password_not_in_any_breach_is_accepted(api: RangeApi) -> None:
    result = checker(api.url).check(CLEAN)
    assert result.checked
    assert result.problem is None


def test_a_padding_line_is_no_breach(api: RangeApi) -> None:
    # Its suffix is in the answer, with the count 0 of a padding line.
    assert sha1_upper(PADDED)[5:] in api.answer_for(sha1_upper(PADDED)[:5])
    assert checker(api.url).check(PADDED).checked


def test_the_hash_is_of_the_password_as_prodio_stores_it() -> None:
    # NFKC: full-width letters are the same password as their ASCII forms.
    assert sha1_hex("\uff50\uff41\uff53\uff53") == sha1_upper("pass")


def test_only_the_prefix_leaves_the_process_with_padding_asked_for(api: RangeApi) -> None:
    with pytest.raises(PasswordBreached):
        checker(api.url).check(BREACHED)
    checker(api.url).check(CLEAN)
    assert len(api.requests) == 2
    for seen, password in zip(api.requests, (BREACHED, CLEAN), strict=True):
        digest = sha1_upper(password)
        assert seen.method == "GET"
        assert seen.path == f"/range/{digest[:5]}"
        assert seen.body == b""
        assert seen.headers["add-padding"] == "true"
        everything = (seen.raw + seen.body.decode()).lower()
        for secret in (password, digest, digest[5:], digest[5:15]):
            assert secret.lower() not in everything
        assert "cookie" not in seen.headers
        assert "authorization" not in seen.headers


@pytest.mark.anyio
async def test_the_async_lookup_finds_the_same(api: RangeApi) -> None:
    check = checker(api.url)
    with pytest.raises(PasswordBreached, match="3,861 times"):
        await check.acheck(BREACHED)
    assert (await check.acheck(CLEAN)).checked
    assert [seen.path for seen in api.requests] == [
        f"/range/{sha1_upper(BREACHED)[:5]}",
        f"/range/{sha1_upper(CLEAN)[:5]}",
    ]
    assert all(seen.headers["add-padding"] == "true" for seen in api.requests)


@pytest.mark.parametrize(
    ("lines", "count"),
    [
        ([], 0),
        (["", "  "], 0),
        ([f"{'A' * 35}:0", f"{'B' * 35}:12"], 12),
        ([f"{'b' * 35}:7\r"], 7),  # lower case and a CR: still that suffix
        ([f"{'A' * 35}:5"], 0),
    ],
)
def test_the_range_format_is_read(lines: list[str], count: int) -> None:
    assert breach_count(lines, "B" * 35) == count


# -- when the API cannot be asked -------------------------------------------------------


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_api_down_allow_accepts_and_says_why_without_secrets() -> None:
    result = checker(unreachable()).check(BREACHED)
    assert not result.checked
    assert result.problem is not None
    assert "password breach check at 127.0.0.1 could not be done" in result.problem
    assert BREACHED not in result.problem
    assert sha1_upper(BREACHED)[:5] not in result.problem


def test_api_down_refuse_refuses_every_password() -> None:
    with pytest.raises(BreachCheckUnavailable) as caught:
        checker(unreachable(), on_error="refuse").check(CLEAN)
    assert isinstance(caught.value, UserStoreUnavailable)  # the password page: 503
    assert "PRODIO_PASSWORD_BREACH_API_ON_ERROR=refuse" in str(caught.value)
    assert caught.value.retry_after_seconds > 0


def test_a_slow_api_times_out(api: RangeApi) -> None:
    api.mode = "slow"
    result = checker(api.url, timeout=SHORT_TIMEOUT).check(BREACHED)
    # The server was still holding its answer back when the lookup gave up.
    assert not api.release.is_set()
    assert not result.checked
    assert result.problem is not None
    assert f"no answer within {SHORT_TIMEOUT:g} s" in result.problem
    with pytest.raises(BreachCheckUnavailable, match="no answer within"):
        checker(api.url, timeout=SHORT_TIMEOUT, on_error="refuse").check(BREACHED)


@pytest.mark.anyio
async def test_a_slow_api_times_out_async(api: RangeApi) -> None:
    api.mode = "slow"
    result = await checker(api.url, timeout=SHORT_TIMEOUT).acheck(BREACHED)
    assert not api.release.is_set()
    assert not result.checked
    with pytest.raises(BreachCheckUnavailable):
        await checker(api.url, timeout=SHORT_TIMEOUT, on_error="refuse").acheck(CLEAN)


def test_an_untrusted_certificate_is_no_answer(tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with serving(RangeApi(breached={BREACHED: 1}), tls=(cert, key)) as api:
        result = checker(api.url).check(BREACHED)
        assert not result.checked
        assert result.problem is not None
        assert "CERTIFICATE_VERIFY_FAILED" in result.problem
        with pytest.raises(BreachCheckUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            checker(api.url, on_error="refuse").check(BREACHED)
    # The handshake failed before anything was sent.
    assert api.requests == []


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("error", "HTTP 503"),
        ("garbage", "not <35 hex characters>:<count>"),
        ("redirect", "HTTP 302"),
        ("huge", "far longer than a range answer"),
    ],
)
@pytest.mark.anyio
async def test_an_answer_not_in_the_range_format_is_no_answer(
    api: RangeApi, mode: str, problem: str
) -> None:
    api.mode = mode
    for result in (checker(api.url).check(BREACHED), await checker(api.url).acheck(BREACHED)):
        assert not result.checked
        assert result.problem is not None
        assert problem in result.problem
    with pytest.raises(BreachCheckUnavailable, match=problem):
        checker(api.url, on_error="refuse").check(CLEAN)
    # A redirect is not followed: only the API's own address was asked.
    assert len(api.requests) == 3


# -- in the password hasher -------------------------------------------------------------


def test_the_hasher_applies_it_after_the_local_policy(api: RangeApi) -> None:
    hasher = PasswordHasher(**CHEAP_ARGON2, breach_check=checker(api.url))
    with pytest.raises(PasswordBreached):
        hasher.hash(BREACHED, username="alice")
    assert hasher.verify(hasher.hash(CLEAN, username="alice"), CLEAN)
    # The local rules come first: a short or common password never reaches the API.
    asked = len(api.requests)
    for local_refusal in ("short", "password123", "alice-smith"):
        with pytest.raises(PasswordPolicyError):
            hasher.hash(local_refusal, username="alice-smith")
    assert len(api.requests) == asked
    # Upgrading the hash of an accepted password at login asks nothing.
    hasher.rehash(BREACHED)
    assert len(api.requests) == asked


def test_api_down_allow_is_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    hasher = PasswordHasher(**CHEAP_ARGON2, breach_check=checker(unreachable()))
    with caplog.at_level(logging.WARNING, logger="prodio.users.breach"):
        password_hash = hasher.hash(BREACHED)
    assert hasher.verify(password_hash, BREACHED)
    [record] = [r for r in caplog.records if r.name == "prodio.users.breach"]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "accepted without it" in text
    digest = sha1_upper(BREACHED)
    for secret in (BREACHED, digest[:5], digest[5:15]):
        assert secret not in caplog.text


def test_api_down_refuse_stops_the_hasher() -> None:
    hasher = PasswordHasher(**CHEAP_ARGON2, breach_check=checker(unreachable(), on_error="refuse"))
    with pytest.raises(UserStoreUnavailable):
        hasher.hash(CLEAN)


def test_without_a_check_nothing_is_asked(api: RangeApi) -> None:
    check_new_password(BREACHED)
    check_new_password(BREACHED, breach_check=None)
    assert api.requests == []


@pytest.mark.anyio
async def test_the_async_hash_holds_no_hashing_slot_while_it_asks(api: RangeApi) -> None:
    api.mode = "slow"
    hasher = PasswordHasher(
        **CHEAP_ARGON2, max_concurrency=1, breach_check=checker(api.url, timeout=10)
    )
    hashes: list[str] = []

    async def change() -> None:
        hashes.append(await hasher.ahash(CLEAN))

    async with anyio.create_task_group() as group:
        group.start_soon(change)
        assert await anyio.to_thread.run_sync(api.entered.wait, 10)
        # The lookup is under way; a login's verification could take the one slot now.
        assert hasher.limiter.borrowed_tokens == 0
        assert await hasher.averify(None, "anything") is False
        api.release.set()
    [made] = hashes
    assert hasher.verify(made, CLEAN)
    with pytest.raises(PasswordBreached):
        await hasher.ahash(BREACHED)


# -- configuration ----------------------------------------------------------------------


def test_off_by_default(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.password_breach_api is None
    assert build_breach_check(settings) is None


def test_built_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        password_breach_api="https://api.pwnedpasswords.com/",
        password_breach_api_timeout=1.5,
        password_breach_api_on_error="refuse",
    )
    check = build_breach_check(settings)
    assert check is not None
    assert check.base_url == "https://api.pwnedpasswords.com"
    assert (check.timeout, check.on_error, check.host) == (1.5, "refuse", "api.pwnedpasswords.com")


@pytest.mark.parametrize(
    ("base_url", "options", "message"),
    [
        ("", {}, "pass None instead"),
        ("ftp://example.com", {}, "needs https:// and a host name"),
        ("https://example.com", {"timeout": 0}, "timeout must be positive"),
        ("https://example.com", {"on_error": "maybe"}, "'allow' or 'refuse'"),
    ],
)
def test_a_bad_check_is_refused_when_made(
    base_url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        checker(base_url, **options)
