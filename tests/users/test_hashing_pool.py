"""Where password hashes run: the hashing threads' priority and the limiter's queue bound.

No test here measures a time: the limiter's clock is a fake one where a wait matters.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from prodio.users import PasswordHasher, UserStoreUnavailable
from prodio.users import passwords as passwords_module
from prodio.users.passwords import (
    DEFAULT_HASHING_NICENESS,
    DEFAULT_MAX_WAITING_PER_SLOT,
    MAX_NICE,
    HashingBusy,
    HashingLimiter,
    cgroup_cpu_quota,
    hashing_pool,
    on_hashing_thread,
    usable_cores,
)
from tests.apptest import running_app
from tests.users.support import CHEAP_ARGON2

GOOD = "correct horse battery staple"

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="per-thread nice values are a Linux feature"
)


def nice_from_proc(thread_id: int) -> int:
    """A thread's nice value as the kernel reports it: field 19 of its stat file."""
    stat = Path(f"/proc/self/task/{thread_id}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def process_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, os.getpid())


class _Spy:
    """Stands in for the argon2 hasher: notes the thread and its nice value on each call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[tuple[str, int, int, bool]] = []
        self._lock = threading.Lock()

    def _note(self, name: str) -> None:
        thread = threading.get_native_id()
        with self._lock:
            self.calls.append((name, thread, nice_from_proc(thread), on_hashing_thread()))

    def hash(self, password: str) -> str:
        self._note("hash")
        return str(self._inner.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        self._note("verify")
        return bool(self._inner.verify(password_hash, password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def spied_hasher(**options: Any) -> tuple[PasswordHasher, _Spy]:
    hasher = PasswordHasher(**{**CHEAP_ARGON2, **options})
    spy = _Spy(hasher._argon2)
    hasher._argon2 = spy  # type: ignore[assignment]
    return hasher, spy


# --- the hashing threads --------------------------------------------------------------


@linux_only
def test_the_default_niceness_is_ten_and_hashes_run_at_it() -> None:
    assert DEFAULT_HASHING_NICENESS == 10
    hasher, spy = spied_hasher()
    password_hash = hasher.hash(GOOD)
    assert hasher.verify(password_hash, GOOD) is True
    assert hasher.verify(None, GOOD) is False  # the dummy hash is made on a hashing thread too
    expected = min(MAX_NICE, process_nice() + 10)
    assert [name for name, *_ in spy.calls] == ["hash", "verify", "hash", "verify"]
    for _, thread, nice, on_pool in spy.calls:
        assert on_pool
        assert thread != threading.get_native_id()
        assert nice == expected
        assert os.getpriority(os.PRIO_PROCESS, thread) == expected


@linux_only
@pytest.mark.parametrize("niceness", [0, 3, MAX_NICE])
def test_hashes_run_at_the_configured_niceness(niceness: int) -> None:
    hasher, spy = spied_hasher(niceness=niceness)
    hasher.hash(GOOD)
    [(_, _, nice, on_pool)] = spy.calls
    assert on_pool
    assert nice == min(MAX_NICE, process_nice() + niceness)


@linux_only
@pytest.mark.anyio
async def test_only_the_hashing_threads_are_niced() -> None:
    """The event loop's thread and anyio's shared worker threads keep their priority: a
    nice value, once raised, cannot be lowered again without privileges."""
    hasher, spy = spied_hasher(niceness=6)
    callers: list[int] = []

    def check(password_hash: str) -> bool:
        callers.append(nice_from_proc(threading.get_native_id()))
        return hasher.verify(password_hash, GOOD)

    password_hash = await hasher.ahash(GOOD)
    assert await anyio.to_thread.run_sync(check, password_hash, limiter=hasher.limiter)
    assert await hasher.averify(password_hash, GOOD) is True
    base = process_nice()
    assert callers == [base]
    assert nice_from_proc(threading.get_native_id()) == base
    assert {nice for _, _, nice, _ in spy.calls} == {min(MAX_NICE, base + 6)}


def test_a_niceness_outside_0_to_19_is_refused() -> None:
    for niceness in (-1, MAX_NICE + 1):
        with pytest.raises(ValueError, match="niceness"):
            PasswordHasher(niceness=niceness)


def test_hashing_threads_are_shared_per_niceness_and_nest_without_deadlock() -> None:
    assert hashing_pool(4) is hashing_pool(4)
    assert hashing_pool(4) is not hashing_pool(5)
    hasher, spy = spied_hasher(niceness=4, max_concurrency=1)
    # A hash asked for from a hashing thread runs right there instead of queueing for
    # another one (which, with every thread busy like this one, would never come).
    password_hash = hashing_pool(4).submit(hasher.hash, GOOD).result()
    assert hasher.verify(password_hash, GOOD) is True
    assert all(on_pool for *_, on_pool in spy.calls)
    assert on_hashing_thread() is False


def test_errors_of_a_hash_reach_the_caller() -> None:
    hasher = PasswordHasher(**CHEAP_ARGON2)
    assert hasher.verify("not an argon2 hash", GOOD) is False
    assert hasher.verify(hasher.hash(GOOD), "another password") is False


# --- how many hash at once ------------------------------------------------------------


def test_cgroup_cpu_quota_reads_v2_and_v1(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    for garbage in ("garbage\n", "100000 0\n", "-5 100000\n"):
        (tmp_path / "cpu.max").write_text(garbage)
        assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_cpu_quota(tmp_path) == 0.5


def test_usable_cores_is_the_affinity_capped_by_the_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    monkeypatch.setattr(passwords_module, "_cached_cgroup_cpu_quota", lambda: None)
    assert usable_cores() == (affinity or os.cpu_count() or 1)
    monkeypatch.setattr(passwords_module, "_cached_cgroup_cpu_quota", lambda: 0.5)
    assert usable_cores() == 1
    monkeypatch.setattr(passwords_module, "_cached_cgroup_cpu_quota", lambda: 1000.0)
    assert usable_cores() == (affinity or os.cpu_count() or 1)


@pytest.fixture
def one_core() -> Iterator[int]:
    """Pin the calling thread to one of its cores (as a worker started on all cores and
    pinned afterwards); restore its affinity afterwards."""
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("needs two cores to see a change")
    os.sched_setaffinity(0, {min(cores)})
    try:
        yield len(cores)
    finally:
        os.sched_setaffinity(0, cores)


def test_the_default_limiter_follows_the_cores_the_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(passwords_module, "_cached_cgroup_cpu_quota", lambda: None)
    limiter = PasswordHasher().limiter
    before = limiter.total_tokens
    assert before == usable_cores()
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
        try:
            assert limiter.total_tokens == 1
        finally:
            os.sched_setaffinity(0, cores)
        assert limiter.total_tokens == before
    assert PasswordHasher(max_concurrency=3).limiter.total_tokens == 3


@pytest.mark.anyio
async def test_a_pinned_worker_hashes_one_at_a_time(
    one_core: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords_module, "_cached_cgroup_cpu_quota", lambda: None)
    hasher = PasswordHasher(**CHEAP_ARGON2)
    running = 0
    most = 0
    lock = threading.Lock()

    def tracked() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        hasher.hash(GOOD)
        with lock:
            running -= 1

    run = functools.partial(anyio.to_thread.run_sync, tracked, limiter=hasher.limiter)
    async with anyio.create_task_group() as tasks:
        for _ in range(4):
            tasks.start_soon(run)
    assert most == 1


# --- the queue bound ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_waiting_tasks_beyond_max_waiting_are_refused_at_once() -> None:
    limiter = HashingLimiter(1, max_waiting=2)
    holder = object()
    limiter.acquire_on_behalf_of_nowait(holder)
    got: list[int] = []

    async def wait_for_a_token(number: int) -> None:
        async with limiter:
            got.append(number)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait_for_a_token, 1)
        tasks.start_soon(wait_for_a_token, 2)
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting == 2
        with pytest.raises(HashingBusy) as refused:
            await limiter.acquire()
        assert refused.value.waiting == 2
        assert refused.value.retry_after_seconds >= 1
        assert isinstance(refused.value, UserStoreUnavailable)  # answered 503, never 500
        assert limiter.refused == 1
        assert limiter.borrowed_tokens == 1
        limiter.release_on_behalf_of(holder)
    assert got == [1, 2]
    async with limiter:  # nothing waits any more: admitted again
        pass
    assert limiter.refused == 1


@pytest.mark.anyio
async def test_a_wait_estimated_beyond_max_wait_seconds_is_refused() -> None:
    clock = FakeClock()
    limiter = HashingLimiter(1, max_wait_seconds=3.0, max_waiting=100, clock=clock)
    assert limiter.estimated_wait() is None  # nothing measured yet
    first = object()
    limiter.acquire_on_behalf_of_nowait(first)
    clock.now += 2.0
    limiter.release_on_behalf_of(first)
    assert limiter.hold_seconds == 2.0

    holder = object()
    limiter.acquire_on_behalf_of_nowait(holder)
    assert limiter.estimated_wait() == 2.0  # one hold ahead of a newcomer

    async def wait_for_a_token() -> None:
        async with limiter:
            pass

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait_for_a_token)  # 2 s of wait: admitted
        await anyio.wait_all_tasks_blocked()
        assert limiter.waiting == 1
        with pytest.raises(HashingBusy) as refused:
            await limiter.acquire()  # 2 holds ahead: 4 s > 3 s
        assert refused.value.retry_after == 4.0
        assert refused.value.retry_after_seconds == 4
        limiter.release_on_behalf_of(holder)
    assert limiter.refused == 1


@pytest.mark.anyio
async def test_a_token_held_long_now_counts_before_it_is_returned() -> None:
    clock = FakeClock()
    limiter = HashingLimiter(1, max_wait_seconds=3.0, clock=clock)
    sample = object()
    limiter.acquire_on_behalf_of_nowait(sample)
    clock.now += 0.1
    limiter.release_on_behalf_of(sample)
    holder = object()
    limiter.acquire_on_behalf_of_nowait(holder)
    clock.now += 10.0  # a hash that suddenly takes far longer than before
    assert limiter.expected_hold() == 10.0
    with pytest.raises(HashingBusy):
        await limiter.acquire()
    limiter.release_on_behalf_of(holder)


@pytest.mark.anyio
async def test_the_time_waiters_really_waited_counts_beyond_the_hold() -> None:
    """On a starved event loop the queue moves slower than hashes end: a waiter is woken
    only when the loop gets round to it. What waiters saw bounds the queue then."""
    clock = FakeClock()
    limiter = HashingLimiter(1, max_wait_seconds=3.0, clock=clock)
    holder = object()
    limiter.acquire_on_behalf_of_nowait(holder)
    done = anyio.Event()

    async def hold_until_done() -> None:
        async with limiter:
            await done.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hold_until_done)
        await anyio.wait_all_tasks_blocked()
        clock.now += 0.1
        limiter.release_on_behalf_of(holder)  # held 0.1 s ...
        clock.now += 3.9  # ... but the waiter starts 3.9 s later
        await anyio.wait_all_tasks_blocked()
        assert limiter.hold_seconds == pytest.approx(0.1)
        assert limiter.step_seconds == pytest.approx(4.0)
        assert limiter.estimated_wait() == pytest.approx(4.0)
        with pytest.raises(HashingBusy):
            await limiter.acquire()
        done.set()
    # The queue emptied: the next load starts from the hold time alone.
    assert limiter.step_seconds is None
    async with limiter:
        pass


@pytest.mark.anyio
async def test_the_hold_estimate_rises_at_once_and_falls_gradually() -> None:
    clock = FakeClock()
    limiter = HashingLimiter(1, clock=clock)
    for held in (2.0, 5.0, 1.0):
        borrower = object()
        limiter.acquire_on_behalf_of_nowait(borrower)
        clock.now += held
        limiter.release_on_behalf_of(borrower)
        if held == 5.0:
            assert limiter.hold_seconds == 5.0
    assert limiter.hold_seconds == 4.0  # 5 + 0.25 * (1 - 5)


@pytest.mark.anyio
async def test_a_free_token_is_never_refused() -> None:
    clock = FakeClock()
    limiter = HashingLimiter(2, max_wait_seconds=1.0, max_waiting=0, clock=clock)
    slow = object()
    limiter.acquire_on_behalf_of_nowait(slow)
    clock.now += 100.0
    limiter.release_on_behalf_of(slow)
    holder = object()
    limiter.acquire_on_behalf_of_nowait(holder)
    async with limiter:  # the second token is free: no estimate applies
        assert limiter.borrowed_tokens == 2
    other = object()
    limiter.acquire_on_behalf_of_nowait(other)
    with pytest.raises(HashingBusy):  # none free: now the bounds apply
        await limiter.acquire()
    limiter.release_on_behalf_of(holder)
    limiter.release_on_behalf_of(other)


def test_max_waiting_defaults_to_a_number_per_token() -> None:
    assert HashingLimiter(3).max_waiting == 3 * DEFAULT_MAX_WAITING_PER_SLOT
    assert HashingLimiter(3, max_waiting=5).max_waiting == 5
    with pytest.raises(ValueError, match="max_wait_seconds"):
        HashingLimiter(1, max_wait_seconds=0)
    with pytest.raises(ValueError, match="max_waiting"):
        HashingLimiter(1, max_waiting=-1)


@pytest.mark.anyio
async def test_averify_is_refused_while_the_queue_is_full() -> None:
    hasher = PasswordHasher(**CHEAP_ARGON2, max_concurrency=1, max_waiting=0)
    password_hash = hasher.hash(GOOD)
    holder = object()
    hasher.limiter.acquire_on_behalf_of_nowait(holder)
    with pytest.raises(HashingBusy):
        await hasher.averify(password_hash, GOOD)
    with pytest.raises(HashingBusy):
        await hasher.ahash(GOOD)
    hasher.limiter.release_on_behalf_of(holder)
    assert await hasher.averify(password_hash, GOOD) is True


@pytest.mark.anyio
async def test_a_login_refused_for_a_full_hashing_queue_is_a_quick_503(tmp_path: Path) -> None:
    async with running_app(tmp_path) as env:
        env.add_user("alice", GOOD)
        limiter = HashingLimiter(1, max_waiting=0)
        env.hasher.limiter = limiter
        holder = object()
        limiter.acquire_on_behalf_of_nowait(holder)
        refusals = env.services.settings.login_max_failures + 1
        for _ in range(refusals):
            refused = await env.login("alice", GOOD)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert "prodio_session=" not in refused.headers.get("set-cookie", "")
            assert "temporarily unavailable" in refused.text
        assert limiter.refused == refusals
        limiter.release_on_behalf_of(holder)
        # More refusals than it takes to lock an account, yet none counted as a failure.
        assert (await env.login("alice", GOOD)).status_code == 303
