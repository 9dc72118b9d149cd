"""Password hashing with argon2id, and the password policy.

Hashing costs tens of milliseconds of CPU and ``memory_cost`` KiB of memory on purpose,
so async code calls :meth:`PasswordHasher.ahash` and :meth:`PasswordHasher.averify`: they
run in worker threads, at most as many at once as there are CPUs, so that a burst of
logins queues up instead of exhausting memory, threads or the event loop.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import unicodedata
from importlib import resources

import anyio
import anyio.to_thread
from argon2 import PasswordHasher as _Argon2Hasher
from argon2 import Type
from argon2.exceptions import Argon2Error

from prodio.users.base import UserError

# OWASP's recommended argon2id parameters (Password Storage Cheat Sheet): 19 MiB, 2
# passes, 1 lane. Raise them when the hardware allows; old hashes upgrade at next login.
DEFAULT_TIME_COST = 2
DEFAULT_MEMORY_COST_KIB = 19_456
DEFAULT_PARALLELISM = 1

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
COMMON_PASSWORDS_FILE = "common_passwords.txt"


class PasswordPolicyError(UserError):
    """The password does not meet the policy; the message says what is expected."""


def normalize_password(password: str) -> str:
    """The form of a password that is checked and hashed.

    NFKC folding (as NIST SP 800-63B advises) makes a password typed on two keyboards
    that encode the same characters differently (say, a composed and a decomposed "é")
    the same password.
    """
    return unicodedata.normalize("NFKC", password)


@functools.cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords, lower case; read from the package on first use.

    ``common_passwords.txt`` starts with a header (source and licence) that ends at the
    first empty line; every line after it is one password.
    """
    text = resources.files("prodio.users").joinpath(COMMON_PASSWORDS_FILE).read_text("utf-8")
    _header, separator, body = text.partition("\n\n")
    if not separator:
        raise RuntimeError(f"{COMMON_PASSWORDS_FILE} has no header separator")
    return frozenset(line for line in body.splitlines() if line)


def _comparable(text: str) -> str:
    # The list is lower case; surrounding spaces do not make a common password safe.
    return normalize_password(text).strip().lower()


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Raise :class:`PasswordPolicyError` unless the password may be set.

    Only the length counts (NIST SP 800-63B): no composition rules, and no truncation,
    since argon2 hashes the whole input. On top of that, a password on the bundled list of
    common passwords is refused, and so is the user's own name when ``username`` is given
    (both compared without regard to case or surrounding spaces).
    """
    length = len(normalize_password(password))
    if not MIN_PASSWORD_LENGTH <= length <= MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"a password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters "
            f"long (this one has {length}); any characters are allowed, and a passphrase "
            "of several words is a good choice"
        )
    candidate = _comparable(password)
    if username is not None and candidate == _comparable(username):
        raise PasswordPolicyError(
            "a password must not be the user name; a passphrase of several words is a good choice"
        )
    if candidate in common_passwords():
        raise PasswordPolicyError(
            "this password is on a list of the most common passwords, which attackers try "
            "first; choose another one (a passphrase of several unrelated words is a good "
            "choice)"
        )


class PasswordHasher:
    """argon2id hashing with the policy applied and constant-cost failures.

    ``max_concurrency`` caps the hashes computed at once by :meth:`ahash`, :meth:`averify`
    and anything else run under :attr:`limiter` (default: the number of CPUs).
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
        max_concurrency: int | None = None,
    ) -> None:
        self._argon2 = _Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        # The cores this process may run on, not the machine's: a worker pinned to one core
        # would otherwise hash on two threads and starve its own event loop.
        usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self.limiter = anyio.CapacityLimiter(max_concurrency or usable_cores or os.cpu_count() or 1)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    @property
    def parameters(self) -> tuple[int, int, int]:
        """``(time_cost, memory_cost_kib, parallelism)`` of new hashes."""
        return (self._argon2.time_cost, self._argon2.memory_cost, self._argon2.parallelism)

    def hash(self, password: str, *, username: str | None = None) -> str:
        """Check the policy (raising :class:`PasswordPolicyError`), then hash.

        Pass ``username`` to refuse the user's own name as the password.
        """
        check_password_policy(password, username=username)
        return self.rehash(password)

    def rehash(self, password: str) -> str:
        """Hash a password that was already accepted, without applying the policy.

        For upgrading a stored hash after a successful login: a password set under an
        older policy must keep working.
        """
        return self._argon2.hash(normalize_password(password))

    def _dummy(self) -> str:
        # Made once, with this hasher's parameters, so that checking a password of a user
        # who does not exist costs what checking a real one does.
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(32))
            return self._dummy_hash

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; never raises.

        ``None`` (no such user) does a full verification against a dummy hash and returns
        ``False``. A malformed hash returns ``False``.
        """
        target = self._dummy() if password_hash is None else password_hash
        try:
            matches = self._argon2.verify(target, normalize_password(password))
        except (Argon2Error, ValueError):
            # Argon2Error covers mismatches and hashes the library cannot decode;
            # ValueError covers InvalidHashError and non-ASCII text in the hash.
            return False
        return matches and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters (or cannot be read)."""
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except ValueError:
            return True

    async def ahash(self, password: str, *, username: str | None = None) -> str:
        """:meth:`hash` in a worker thread."""
        return await anyio.to_thread.run_sync(
            functools.partial(self.hash, password, username=username), limiter=self.limiter
        )

    async def averify(self, password_hash: str | None, password: str) -> bool:
        """:meth:`verify` in a worker thread."""
        return await anyio.to_thread.run_sync(
            self.verify, password_hash, password, limiter=self.limiter
        )
