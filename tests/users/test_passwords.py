"""PasswordHasher and the password policy."""

from __future__ import annotations

import os
import threading
import unicodedata

import anyio
import pytest

from prodio.users import PasswordHasher, PasswordPolicyError, UserError, check_password_policy
from prodio.users.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from tests.users.support import cheap_hasher

GOOD = "correct horse battery staple"


def test_default_parameters_are_owasps_argon2id() -> None:
    hasher = PasswordHasher()
    assert hasher.parameters == (2, 19_456, 1)
    password_hash = hasher.hash(GOOD)
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(password_hash, GOOD) is True
    assert hasher.verify(password_hash, GOOD + " ") is False
    assert hasher.needs_rehash(password_hash) is False


def test_parameters_can_be_changed() -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=2)
    assert hasher.parameters == (1, 64, 2)
    assert hasher.hash(GOOD).startswith("$argon2id$v=19$m=64,t=1,p=2$")


def test_hashes_are_salted() -> None:
    hasher = cheap_hasher()
    first, second = hasher.hash(GOOD), hasher.hash(GOOD)
    assert first != second
    assert hasher.verify(first, GOOD)
    assert hasher.verify(second, GOOD)


@pytest.mark.parametrize(
    "password",
    [
        "xq" * (MIN_PASSWORD_LENGTH // 2),  # "xxxxxxxx" is on the common-passwords list
        "x" * MAX_PASSWORD_LENGTH,
        "        ",  # spaces only: no composition rules
        "kzkzkzkz",  # lower-case letters only
        "pässwörd-ünïcödé",
        "🔑🔑🔑🔑🔑🔑🔑🔑",
    ],
)
def test_policy_accepts_any_characters_within_the_length_limits(password: str) -> None:
    check_password_policy(password)
    hasher = cheap_hasher()
    assert hasher.verify(hasher.hash(password), password)


@pytest.mark.parametrize(
    "password", ["", "x", "x" * (MIN_PASSWORD_LENGTH - 1), "x" * (MAX_PASSWORD_LENGTH + 1)]
)
def test_policy_refuses_passwords_outside_the_length_limits(password: str) -> None:
    with pytest.raises(PasswordPolicyError) as caught:
        check_password_policy(password)
    assert "8 to 1024 characters" in str(caught.value)
    assert f"this one has {len(password)}" in str(caught.value)
    assert isinstance(caught.value, UserError)
    with pytest.raises(PasswordPolicyError):
        cheap_hasher().hash(password)


def test_long_passwords_are_not_truncated() -> None:
    hasher = cheap_hasher()
    # bcrypt, for one, would ignore everything after byte 72 and take these as equal.
    password = "a" * 1000 + "1"
    password_hash = hasher.hash(password)
    assert hasher.verify(password_hash, password)
    assert not hasher.verify(password_hash, "a" * 1000 + "2")
    assert not hasher.verify(password_hash, "a" * 1000)


def test_composed_and_decomposed_characters_are_one_password() -> None:
    hasher = cheap_hasher()
    composed = unicodedata.normalize("NFC", "café au lait")
    decomposed = unicodedata.normalize("NFD", "café au lait")
    assert composed != decomposed
    assert hasher.verify(hasher.hash(composed), decomposed)
    assert hasher.verify(hasher.hash(decomposed), composed)


def test_rehash_skips_the_policy() -> None:
    hasher = cheap_hasher()
    short = "short"  # set before the policy existed, say
    assert hasher.verify(hasher.rehash(short), short)


def test_unknown_user_verifies_against_one_dummy_hash() -> None:
    hasher = cheap_hasher()
    assert hasher.verify(None, GOOD) is False
    dummy = hasher._dummy()
    assert hasher._dummy() is dummy
    # Made with the hasher's own parameters, so it costs what a real hash costs.
    assert dummy.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert hasher.needs_rehash(dummy) is False
    assert hasher.verify(None, "") is False


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",
        "$argon2id$v=19$m=abc,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=19456,t=2,p=1$é$é",
        "$argon2id$v=19$m=8,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=8,t=1,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "\x00",
    ],
)
def test_malformed_hashes_never_verify_and_never_raise(malformed: str) -> None:
    hasher = cheap_hasher()
    assert hasher.verify(malformed, GOOD) is False
    assert hasher.needs_rehash(malformed) is True


def test_a_truncated_real_hash_does_not_verify() -> None:
    hasher = cheap_hasher()
    password_hash = hasher.hash(GOOD)
    assert hasher.verify(password_hash[:-4], GOOD) is False
    assert hasher.verify(password_hash[:-1] + "!", GOOD) is False


def test_needs_rehash_when_parameters_change() -> None:
    old = cheap_hasher().hash(GOOD)
    assert cheap_hasher().needs_rehash(old) is False
    stronger = cheap_hasher(time_cost=2)
    assert stronger.needs_rehash(old) is True
    assert stronger.verify(old, GOOD) is True  # old hashes keep working


def test_limiter_defaults_to_the_cpu_count() -> None:
    assert PasswordHasher().limiter.total_tokens == (os.cpu_count() or 1)
    assert PasswordHasher(max_concurrency=3).limiter.total_tokens == 3


class _RecordingHasher(PasswordHasher):
    """Records which threads verify, and how many verify at once."""

    def __init__(self, max_concurrency: int) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1, max_concurrency=max_concurrency)
        self.threads: set[int] = set()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def verify(self, password_hash: str | None, password: str) -> bool:
        with self._lock:
            self.threads.add(threading.get_ident())
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return super().verify(password_hash, password)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.anyio
async def test_async_hash_and_verify_run_in_worker_threads() -> None:
    hasher = _RecordingHasher(max_concurrency=2)
    password_hash = await hasher.ahash(GOOD)
    assert await hasher.averify(password_hash, GOOD) is True
    assert await hasher.averify(password_hash, "wrong password") is False
    assert await hasher.averify(None, GOOD) is False
    assert threading.get_ident() not in hasher.threads
    with pytest.raises(PasswordPolicyError):
        await hasher.ahash("short")


@pytest.mark.anyio
async def test_the_limiter_caps_concurrent_verifications() -> None:
    hasher = _RecordingHasher(max_concurrency=1)
    password_hash = hasher.hash(GOOD)
    results: list[bool] = []

    async def verify_one() -> None:
        results.append(await hasher.averify(password_hash, GOOD))

    async with anyio.create_task_group() as tasks:
        for _ in range(6):
            tasks.start_soon(verify_one)
    assert results == [True] * 6
    assert hasher.most_running == 1
