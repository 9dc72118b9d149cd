"""Password hashing with argon2id, and the password policy.

Hashing costs tens of milliseconds of CPU and ``memory_cost`` KiB of memory on purpose,
so async code calls :meth:`PasswordHasher.ahash` and :meth:`PasswordHasher.averify` (or
runs its own blocking function under :attr:`PasswordHasher.limiter`). Three things keep a
burst of logins from hurting everybody else:

- the limiter lets at most as many hashes run at once as the process has cores (its CPU
  affinity, capped by a container's CPU quota), so a burst queues up instead of
  exhausting memory and threads;
- the queue is bounded: a login that would wait longer than ``max_wait_seconds`` for a
  hashing slot is refused at once with :class:`HashingBusy` (answer 503 + Retry-After),
  which is better than a page that loads for ten seconds and a client that retries;
- the argon2 computation itself runs on hashing threads with a lower CPU priority (a
  higher nice value) than the rest of the process, so when hashing wants more CPU than
  the worker has, the scheduler gives the event loop most of the core: logins slow down,
  other users' requests do not.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import secrets
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Protocol, Self, TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiterStatistics
from argon2 import PasswordHasher as _Argon2Hasher
from argon2 import Type
from argon2.exceptions import Argon2Error

from prodio.users.base import UserError, UserStoreUnavailable

# OWASP's recommended argon2id parameters (Password Storage Cheat Sheet): 19 MiB, 2
# passes, 1 lane. Raise them when the hardware allows; old hashes upgrade at next login.
DEFAULT_TIME_COST = 2
DEFAULT_MEMORY_COST_KIB = 19_456
DEFAULT_PARALLELISM = 1

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
COMMON_PASSWORDS_FILE = "common_passwords.txt"


logger = logging.getLogger("prodio.users.breach")


class PasswordPolicyError(UserError):
    """The password does not meet the policy; the message says what is expected."""


class BreachLookup(Protocol):
    """What a lookup of a password in a breach API tells (see :mod:`prodio.users.breach`)."""

    @property
    def checked(self) -> bool:
        """``False``: the API could not be asked, and the password was allowed without it."""
        ...

    @property
    def problem(self) -> str | None:
        """Why it could not be asked (never the password, its hash or a part of it)."""
        ...


class BreachCheck(Protocol):
    """An optional check of new passwords against passwords known from data breaches
    (:class:`prodio.users.breach.PwnedPasswordsCheck`).

    Both methods raise :class:`PasswordPolicyError` for a breached password and
    :class:`~prodio.users.base.UserStoreUnavailable` when the check cannot be done and may
    not be skipped.
    """

    def check(self, password: str) -> BreachLookup: ...

    async def acheck(self, password: str) -> BreachLookup: ...


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


def _letters(text: str) -> str:
    """The letters of ``text``, case-folded: what is left of "Prodio2024!" is "prodio"."""
    return "".join(
        character for character in normalize_password(text).casefold() if character.isalpha()
    )


def check_password_policy(
    password: str, *, username: str | None = None, context_words: Iterable[str] = ()
) -> None:
    """Raise :class:`PasswordPolicyError` unless the password may be set.

    Only the length counts (NIST SP 800-63B): no composition rules, and no truncation,
    since argon2 hashes the whole input. On top of that, a password on the bundled list of
    common passwords is refused (compared without regard to case or surrounding spaces),
    and so is one that is the user's own name or one of ``context_words`` (the
    application's name and the like, see ``Settings.password_context_words``) with only
    digits, symbols, spaces or a different case added: "Alice2024!" for alice, "prodio!!"
    anywhere. A password that merely contains such a word among others is allowed.
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
    letters = _letters(password)
    if letters:
        for word in (username, *context_words):
            if word and letters == _letters(word):
                raise PasswordPolicyError(
                    "a password must not be the user name or the name of this application "
                    "with digits or symbols added, which attackers try early; a passphrase "
                    "of several unrelated words is a good choice"
                )
    if candidate in common_passwords():
        raise PasswordPolicyError(
            "this password is on a list of the most common passwords, which attackers try "
            "first; choose another one (a passphrase of several unrelated words is a good "
            "choice)"
        )


def _report(lookup: BreachLookup) -> None:
    if not lookup.checked:
        logger.warning(
            "%s; the new password was accepted without it (PRODIO_PASSWORD_BREACH_API_ON_ERROR"
            "=allow)",
            lookup.problem,
        )


def check_new_password(
    password: str,
    *,
    username: str | None = None,
    context_words: Iterable[str] = (),
    breach_check: BreachCheck | None = None,
) -> None:
    """Everything a new password must pass: :func:`check_password_policy`, then, if there
    is one, the breach check (blocking: a network request; a lookup that could not be
    done and was allowed is logged as a warning)."""
    check_password_policy(password, username=username, context_words=context_words)
    if breach_check is not None:
        _report(breach_check.check(password))


async def acheck_new_password(
    password: str,
    *,
    username: str | None = None,
    context_words: Iterable[str] = (),
    breach_check: BreachCheck | None = None,
) -> None:
    """:func:`check_new_password` for async code: the breach lookup does not block."""
    check_password_policy(password, username=username, context_words=context_words)
    if breach_check is not None:
        _report(await breach_check.acheck(password))


# -- where hashes run: the hashing threads and the limiter in front of them -------------

# How much nicer (lower CPU priority) than the process the hashing threads run. When the
# hashes want more CPU than the worker has (a login storm), the scheduler shares the core
# by weight: at +10 a busy hashing thread gets about a tenth of a core the event loop also
# wants (CFS weights 110 against 1024), so logins slow down but keep going, and other
# users' requests keep their latency. When the loop is idle, hashing gets the whole core
# whatever its nice value. 0 hashes at the process's own priority.
DEFAULT_HASHING_NICENESS = 10
MAX_NICE = 19
# A password check that would wait longer than this for a hashing slot is refused at once
# (HashingBusy: 503 + Retry-After): a quick "try again in a moment" beats a sign-in page
# that hangs for ten seconds while the user clicks again and doubles the queue. How many
# logins a second get through depends on the CPU hashing gets, not on this bound; a
# shorter one only shortens the wait of those that do (3 s against 5 s in the benchmark:
# the same logins/s, login p99 3.6 s instead of 6 s).
DEFAULT_MAX_HASHING_WAIT_SECONDS = 3.0
# Whatever the wait estimate says (there is none before the first hash has finished), no
# more than this many checks wait per hashing slot: above the estimate's bound for hashes
# of 25 ms or more, so it only binds before anything was measured.
DEFAULT_MAX_WAITING_PER_SLOT = 128
# How far one shorter sample moves the limiter's duration estimates (a longer one replaces
# them).
HOLD_TIME_SMOOTHING = 0.25

_P = ParamSpec("_P")
_T = TypeVar("_T")


class HashingBusy(UserStoreUnavailable):
    """Too many password checks are queued; try again in :attr:`retry_after` seconds.

    It is a :class:`~prodio.users.base.UserStoreUnavailable` so that callers which already
    answer 503 ("try again in a moment") when users cannot be checked do so here too,
    instead of a 500; catch it first to add ``Retry-After``.
    """

    def __init__(self, *, retry_after: float, waiting: int) -> None:
        super().__init__(
            f"{waiting} password checks are already waiting for a hashing slot "
            f"(about {retry_after:.1f} s of work)"
        )
        self.retry_after = retry_after
        self.waiting = waiting

    @property
    def retry_after_seconds(self) -> int:
        """:attr:`retry_after` for a ``Retry-After`` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after))


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (``docker --cpus``, a Kubernetes CPU
    limit), or ``None`` when there is none or it cannot be read.

    Looks where a container sees its own cgroup: ``cpu.max`` (cgroup v2) or
    ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us`` (v1).
    """
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        quota_us, period_us = int(quota), int(period or "100000")
    except (OSError, ValueError):
        try:
            quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None
    # v1 writes -1 for "no quota"; a zero period is no quota anyone could have set.
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


@functools.cache
def _cached_cgroup_cpu_quota() -> float | None:
    return cgroup_cpu_quota()


def usable_cores() -> int:
    """How many cores this process can keep busy: its CPU affinity (a worker pinned with
    ``taskset`` or a cpuset has fewer than the machine), capped by a cgroup CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = _cached_cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def lower_thread_priority(niceness: int) -> int:
    """Make the calling thread ``niceness`` nicer than the process (at most 19); return
    the thread's nice value.

    Linux only: there the nice value belongs to each thread, and any thread may raise its
    own without privileges (lowering it back would need them). Elsewhere a no-op.
    """
    if sys.platform != "linux":
        return 0
    thread = threading.get_native_id()
    # PRIO_PROCESS with the process id reads the main thread's value: the base to add to.
    target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, os.getpid()) + niceness)
    # OSError: the thread inherited a higher value than the target from the thread that
    # made it, and going back down needs privileges; it stays nicer, which is allowed.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, target)
    return os.getpriority(os.PRIO_PROCESS, thread)


_hashing_thread = threading.local()
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _start_hashing_thread(niceness: int) -> None:
    _hashing_thread.niceness = lower_thread_priority(niceness) if niceness else 0


def on_hashing_thread() -> bool:
    """Whether the calling thread is one of the hashing threads."""
    return hasattr(_hashing_thread, "niceness")


def hashing_pool(niceness: int) -> ThreadPoolExecutor:
    """The threads that compute hashes at ``niceness``, shared by every hasher of the
    process that uses that value (threads start on demand; the limiters bound how many)."""
    with _pools_lock:
        pool = _pools.get(niceness)
        if pool is None:
            pool = ThreadPoolExecutor(
                thread_name_prefix=f"prodio-hash-nice+{niceness}",
                initializer=_start_hashing_thread,
                initargs=(niceness,),
            )
            _pools[niceness] = pool
        return pool


def _forget_pools_in_child() -> None:
    # A forked child has none of its parent's threads: it starts its own pools on demand.
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def _follow(previous: float | None, sample: float) -> float:
    """A duration estimate that takes a longer sample at once and moves a quarter of the
    way towards a shorter one.

    A slowdown must count at once: when a storm starts, hashes take several times longer,
    and an average that caught up over a few seconds let the queue grow to twice the wait
    it was meant to allow.
    """
    if previous is None or sample > previous:
        return sample
    return previous + HOLD_TIME_SMOOTHING * (sample - previous)


class HashingLimiter(anyio.CapacityLimiter):
    """An :class:`anyio.CapacityLimiter` for password hashing that will not queue forever.

    With ``total_tokens=None`` the number of tokens follows :func:`usable_cores`, looked up
    again at each acquisition (a worker pinned to a core after it started hashes one at a
    time from then on). A task that would have to wait is refused with
    :class:`HashingBusy` when all tokens are out and either ``max_waiting`` tasks already
    wait (default :data:`DEFAULT_MAX_WAITING_PER_SLOT` per token) or the estimated wait
    (see :meth:`estimated_wait`) exceeds ``max_wait_seconds``. While a token is free
    nothing is refused, so the estimates always get new samples. ``clock`` exists for
    tests.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # anyio.CapacityLimiter.__new__ returns a backend's limiter; this one wraps one.
        return object.__new__(cls)

    def __init__(
        self,
        total_tokens: int | None = None,
        *,
        max_wait_seconds: float = DEFAULT_MAX_HASHING_WAIT_SECONDS,
        max_waiting: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_wait_seconds <= 0:
            raise ValueError("max_wait_seconds must be positive")
        if max_waiting is not None and max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        self._fixed_tokens = total_tokens
        self._inner = anyio.CapacityLimiter(total_tokens or usable_cores())
        self.max_wait_seconds = max_wait_seconds
        self._max_waiting = max_waiting
        self._clock = clock
        self._waiting = 0
        self._held_since: dict[object, float] = {}
        self.hold_seconds: float | None = None
        """How long a token is held (see :func:`_follow`); ``None`` before the first
        release."""
        self.step_seconds: float | None = None
        """How long the queue takes to move up one place, as the tasks that waited saw it
        (see :func:`_follow`); ``None`` until one waited since the queue was last empty."""
        self.refused = 0
        """How many acquisitions were refused with :class:`HashingBusy`."""

    def _follow_cores(self) -> None:
        if self._fixed_tokens is None:
            cores = usable_cores()
            if cores != self._inner.total_tokens:
                self._inner.total_tokens = cores

    @property
    def total_tokens(self) -> float:
        self._follow_cores()
        return self._inner.total_tokens

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        self._inner.total_tokens = value
        self._fixed_tokens = int(value)

    @property
    def borrowed_tokens(self) -> int:
        return self._inner.borrowed_tokens

    @property
    def available_tokens(self) -> float:
        return self._inner.available_tokens

    @property
    def max_waiting(self) -> int:
        if self._max_waiting is not None:
            return self._max_waiting
        return DEFAULT_MAX_WAITING_PER_SLOT * max(1, int(self._inner.total_tokens))

    @property
    def waiting(self) -> int:
        """Tasks waiting for a token now."""
        return self._waiting

    def expected_hold(self) -> float | None:
        """How long a token is expected to be held: the smoothed past, or longer if a token
        out now has been held longer (so that a sudden slowdown counts at once, not only
        after several slow hashes have ended); ``None`` before anything was measured."""
        longest = max((self._clock() - since for since in self._held_since.values()), default=None)
        if longest is None or (self.hold_seconds is not None and self.hold_seconds >= longest):
            return self.hold_seconds
        return longest

    def estimated_wait(self, waiting: int | None = None) -> float | None:
        """Seconds a task arriving behind ``waiting`` others (default: those waiting now)
        would wait for a token; ``None`` before anything was measured.

        ``waiting + 1`` places, each taking the longer of: the expected hold divided among
        the tokens, and the time a place took for the tasks that waited lately. The second
        also counts what happens between one holder's release and the next one's start
        (the next waiter must be woken on a busy event loop, then reach a thread), which
        a starved loop makes longer than the hash itself.
        """
        hold = self.expected_hold()
        if hold is None:
            return None
        step = max(hold / max(1.0, self._inner.total_tokens), self.step_seconds or 0.0)
        return ((self._waiting if waiting is None else waiting) + 1) * step

    def _admit(self) -> None:
        if self._inner.available_tokens >= 1:
            return
        wait = self.estimated_wait()
        if self._waiting >= self.max_waiting or (wait is not None and wait > self.max_wait_seconds):
            self.refused += 1
            raise HashingBusy(
                retry_after=self.max_wait_seconds if wait is None else wait,
                waiting=self._waiting,
            )

    def _record_hold(self, borrower: object) -> None:
        since = self._held_since.pop(borrower, None)
        if since is not None:
            self.hold_seconds = _follow(self.hold_seconds, max(0.0, self._clock() - since))
        if self._waiting == 0 and self._inner.available_tokens >= 1:
            # The queue is empty: how fast it moved under a past load says nothing about
            # the next one (and a stale long step would refuse every newcomer forever).
            self.step_seconds = None

    @staticmethod
    def _current_borrower() -> object:
        return anyio.get_current_task().id

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire_nowait(self) -> None:
        self.acquire_on_behalf_of_nowait(self._current_borrower())

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        self._follow_cores()
        self._inner.acquire_on_behalf_of_nowait(borrower)
        self._held_since[borrower] = self._clock()

    async def acquire(self) -> None:
        await self.acquire_on_behalf_of(self._current_borrower())

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        self._follow_cores()
        self._admit()
        queued = self._inner.available_tokens < 1
        ahead = self._waiting
        arrived = self._clock()
        self._waiting += 1
        try:
            await self._inner.acquire_on_behalf_of(borrower)
        finally:
            self._waiting -= 1
        now = self._clock()
        self._held_since[borrower] = now
        if queued:
            self.step_seconds = _follow(self.step_seconds, (now - arrived) / (ahead + 1))

    def release(self) -> None:
        self.release_on_behalf_of(self._current_borrower())

    def release_on_behalf_of(self, borrower: object) -> None:
        self._inner.release_on_behalf_of(borrower)
        self._record_hold(borrower)

    def statistics(self) -> CapacityLimiterStatistics:
        return self._inner.statistics()


class PasswordHasher:
    """argon2id hashing with the policy applied and constant-cost failures.

    ``max_concurrency`` caps the hashes computed at once by :meth:`ahash`, :meth:`averify`
    and anything else run under :attr:`limiter` (default: the cores this process may use,
    see :func:`usable_cores`); ``max_wait_seconds`` and ``max_waiting`` bound the queue in
    front of it (see :class:`HashingLimiter`). Every argon2 computation, from async or
    blocking callers alike, runs on a hashing thread ``niceness`` nicer than the process.

    ``context_words`` are refused as passwords with digits or symbols added (see
    :func:`check_password_policy`). ``breach_check`` (off by default;
    :func:`prodio.users.breach.build_breach_check` makes it from the settings) is asked
    about every password :meth:`hash` and :meth:`ahash` accept, after the local policy:
    see :func:`check_new_password`.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
        max_concurrency: int | None = None,
        niceness: int = DEFAULT_HASHING_NICENESS,
        max_wait_seconds: float = DEFAULT_MAX_HASHING_WAIT_SECONDS,
        max_waiting: int | None = None,
        breach_check: BreachCheck | None = None,
        context_words: Iterable[str] = (),
    ) -> None:
        if not 0 <= niceness <= MAX_NICE:
            # Negative would mean a higher priority than the event loop: the opposite of
            # the point, and not allowed without privileges anyway.
            raise ValueError(f"niceness must be 0 to {MAX_NICE}, not {niceness}")
        self._argon2 = _Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        self.niceness = niceness
        self.breach_check = breach_check
        self.context_words = tuple(context_words)
        self.limiter = HashingLimiter(
            max_concurrency, max_wait_seconds=max_wait_seconds, max_waiting=max_waiting
        )
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def _on_hashing_thread(
        self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        # The calling thread (a worker thread of the limiter's caller, or the CLI's main
        # thread) waits without using CPU while a hashing thread computes.
        if on_hashing_thread():
            return function(*args, **kwargs)
        return hashing_pool(self.niceness).submit(function, *args, **kwargs).result()

    @property
    def parameters(self) -> tuple[int, int, int]:
        """``(time_cost, memory_cost_kib, parallelism)`` of new hashes."""
        return (self._argon2.time_cost, self._argon2.memory_cost, self._argon2.parallelism)

    def hash(self, password: str, *, username: str | None = None) -> str:
        """Check the policy (raising :class:`PasswordPolicyError`), then hash.

        Pass ``username`` to refuse the user's own name as the password. With a
        :attr:`breach_check`, this blocks on its network request too: async code calls
        :meth:`ahash`, or :meth:`acheck_new_password` and then :meth:`rehash`, so that the
        lookup does not hold a hashing slot.
        """
        check_new_password(
            password,
            username=username,
            context_words=self.context_words,
            breach_check=self.breach_check,
        )
        return self.rehash(password)

    async def acheck_new_password(self, password: str, *, username: str | None = None) -> None:
        """The policy and the breach check of :meth:`hash`, without hashing and without
        blocking the event loop (raises :class:`PasswordPolicyError`, or
        :class:`~prodio.users.base.UserStoreUnavailable` when the breach check must be
        done and cannot be)."""
        await acheck_new_password(
            password,
            username=username,
            context_words=self.context_words,
            breach_check=self.breach_check,
        )

    def rehash(self, password: str) -> str:
        """Hash a password that was already accepted, without applying the policy.

        For upgrading a stored hash after a successful login: a password set under an
        older policy must keep working.
        """
        return self._on_hashing_thread(self._argon2.hash, normalize_password(password))

    def _dummy(self) -> str:
        # Made once, with this hasher's parameters, so that checking a password of a user
        # who does not exist costs what checking a real one does.
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._on_hashing_thread(
                    self._argon2.hash, secrets.token_urlsafe(32)
                )
            return self._dummy_hash

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; never raises.

        ``None`` (no such user) does a full verification against a dummy hash and returns
        ``False``. A malformed hash returns ``False``.
        """
        target = self._dummy() if password_hash is None else password_hash
        try:
            matches = self._on_hashing_thread(
                self._argon2.verify, target, normalize_password(password)
            )
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
        """:meth:`hash` in a worker thread, under :attr:`limiter`; the breach lookup, if
        any, runs before, on the event loop, so that it holds no hashing slot.

        Raises :class:`HashingBusy` at once when too many hashes are already queued.
        """
        await self.acheck_new_password(password, username=username)
        return await anyio.to_thread.run_sync(self.rehash, password, limiter=self.limiter)

    async def averify(self, password_hash: str | None, password: str) -> bool:
        """:meth:`verify` in a worker thread, under :attr:`limiter`.

        Raises :class:`HashingBusy` at once when too many hashes are already queued.
        """
        return await anyio.to_thread.run_sync(
            self.verify, password_hash, password, limiter=self.limiter
        )
