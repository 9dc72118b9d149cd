"""The background purge task: batches, yields between them, logs, survives errors, stops."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from prodio.session import InMemorySessionStore, SessionStoreUnavailable, SessionTimeouts
from prodio.session.cleanup import purge_expired_now, purge_periodically

pytestmark = pytest.mark.anyio

TICK = 0.01
# Guards against a hang only; the tests wait for events, not for time.
HANG_GUARD = 10


class ScriptedStore(InMemorySessionStore):
    """A real in-memory store whose ``purge_expired`` plays a script of outcomes.

    A fake, because a real store cannot be made to fail with an arbitrary bug on cue.
    Each step is a number of sessions to report as removed, or an exception to raise;
    after the script it reports 0. ``calls`` records each limit it was given.
    """

    def __init__(self, script: list[int | BaseException], *, on_call: Callable[[], None]) -> None:
        super().__init__(SessionTimeouts(idle=60, absolute=3600))
        self.script = list(script)
        self.calls: list[int] = []
        self.on_call = on_call
        self.done = anyio.Event()

    async def purge_expired(self, limit: int = 10_000) -> int:
        self.calls.append(limit)
        self.on_call()
        if not self.script:
            self.done.set()
            return 0
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


async def _run_until_script_done(store: ScriptedStore, *, batch: int = 10) -> None:
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: purge_periodically(store, TICK, batch=batch))
            await store.done.wait()
            tasks.cancel_scope.cancel()


async def test_a_tick_purges_in_batches_until_a_short_batch() -> None:
    store = ScriptedStore([10, 10, 3], on_call=lambda: None)
    assert await purge_expired_now(store, batch=10) == 23
    assert store.calls == [10, 10, 10]


async def test_other_tasks_run_between_batches() -> None:
    progress = 0
    seen_at_each_batch: list[int] = []
    store = ScriptedStore([5, 5, 5, 5, 2], on_call=lambda: seen_at_each_batch.append(progress))

    async def other_work() -> None:
        nonlocal progress
        while True:
            progress += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(other_work)
        await anyio.lowlevel.checkpoint()
        assert await purge_expired_now(store, batch=5) == 22
        tasks.cancel_scope.cancel()

    # The other task made progress between every two batches of one purge.
    assert all(b > a for a, b in itertools.pairwise(seen_at_each_batch))


async def test_it_logs_how_many_sessions_went(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prodio.session")
    store = ScriptedStore([10, 4], on_call=lambda: None)

    await _run_until_script_done(store)

    messages = [r.getMessage() for r in caplog.records if r.name == "prodio.session"]
    assert "session cleanup removed 14 expired sessions" in messages


async def test_it_survives_an_unavailable_store(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prodio.session")
    store = ScriptedStore(
        [SessionStoreUnavailable("Redis did not answer: timeout"), 7], on_call=lambda: None
    )

    await _run_until_script_done(store)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    assert "session cleanup removed 7 expired sessions" in caplog.messages
    assert len(store.calls) >= 3


async def test_it_survives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prodio.session")
    store = ScriptedStore([RuntimeError("a bug in a store"), 2], on_call=lambda: None)

    await _run_until_script_done(store)

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert "session cleanup removed 2 expired sessions" in caplog.messages


async def test_cancellation_ends_it_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="prodio.session")
    started = anyio.Event()
    store = ScriptedStore([], on_call=started.set)

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: purge_periodically(store, TICK))
            await started.wait()
            tasks.cancel_scope.cancel()

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_cancellation_during_a_purge_is_not_swallowed() -> None:
    in_purge = anyio.Event()

    class SlowStore(ScriptedStore):
        async def purge_expired(self, limit: int = 10_000) -> int:
            in_purge.set()
            await anyio.sleep_forever()
            return 0

    store = SlowStore([], on_call=lambda: None)
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(lambda: purge_periodically(store, TICK))
            await in_purge.wait()
            tasks.cancel_scope.cancel()
    # Reaching here means the task group ended: the task did not catch the cancellation.
    assert in_purge.is_set()


async def test_it_really_purges_a_real_store() -> None:
    clock_now = 1_000.0
    store = InMemorySessionStore(SessionTimeouts(idle=60, absolute=3600), clock=lambda: clock_now)
    expired = [await store.create("alice") for _ in range(25)]
    clock_now += 60
    fresh = await store.create("carol")

    assert await purge_expired_now(store, batch=10) == len(expired)
    assert len(store) == 1
    assert await store.load(fresh.id) is not None


@pytest.mark.parametrize(("interval", "batch"), [(0, 10), (-1, 10), (1, 0)])
async def test_bad_arguments_are_refused(interval: float, batch: int) -> None:
    store = InMemorySessionStore(SessionTimeouts(idle=60, absolute=3600))
    with pytest.raises(ValueError, match="must be"):
        await purge_periodically(store, interval, batch=batch)
