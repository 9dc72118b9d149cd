"""Scenario 4: prodio's in-memory session store with many sessions, in a process of its own.

Measures

- bytes per session: the growth of the resident set (``VmRSS``) while ``N`` sessions with
  empty data are created, and, on a smaller sample, what ``tracemalloc`` counts;
- how long one cleanup tick holds the event loop, with a ticker task that records the
  longest gap between its wake-ups while :func:`prodio.session.cleanup.purge_expired_now`
  (what ``purge_periodically`` runs every tick) works. Two cases: a steady tick where 1 %
  of the sessions expired since the last one, and a mass expiry where all of them did.

The store's clock is a fake one, so that expiry needs no waiting.

Prints one JSON object on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio

from prodio.session.base import SessionStore, SessionTimeouts
from prodio.session.cleanup import DEFAULT_PURGE_BATCH, purge_expired_now
from prodio.session.memory import InMemorySessionStore

IDLE_SECONDS = 1800.0
ABSOLUTE_SECONDS = 8 * 3600.0
USERS = 1000
TICKER_SLEEP = 0.0005


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def new_store(clock: FakeClock) -> InMemorySessionStore:
    return InMemorySessionStore(SessionTimeouts(IDLE_SECONDS, ABSOLUTE_SECONDS), clock=clock)


async def fill(store: InMemorySessionStore, count: int, clock: FakeClock, step: float) -> None:
    for number in range(count):
        await store.create(f"user{number % USERS}")
        clock.now += step


def bytes_per_session(count: int) -> dict[str, float]:
    """RSS growth per session for ``count`` sessions with empty data."""
    gc.collect()
    before = rss_bytes()
    clock = FakeClock()
    store = new_store(clock)
    asyncio.run(fill(store, count, clock, 0.0))
    gc.collect()
    grown = rss_bytes() - before
    result = {"sessions": count, "rss_bytes_per_session": grown / count}
    del store
    gc.collect()
    return result


def traced_bytes_per_session(count: int, data: dict[str, Any] | None) -> float:
    clock = FakeClock()
    store = new_store(clock)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]

        async def fill_with_data() -> None:
            for number in range(count):
                await store.create(f"user{number % USERS}", data)

        asyncio.run(fill_with_data())
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return grown / count


@dataclass
class LoopWatch:
    """The longest time anything else held the loop, seen by a task that wakes up often."""

    longest_gap: float = 0.0
    gaps: int = 0
    running: bool = True

    async def tick(self) -> None:
        last = time.perf_counter()
        while self.running:
            await anyio.sleep(TICKER_SLEEP)
            now = time.perf_counter()
            self.longest_gap = max(self.longest_gap, now - last - TICKER_SLEEP)
            self.gaps += 1
            last = now


@dataclass
class TimedPurges:
    """Wraps a store to time each ``purge_expired`` batch (what holds the loop at once)."""

    store: InMemorySessionStore
    durations: list[float] = field(default_factory=list)
    removed: int = 0

    async def purge_expired(self, limit: int = DEFAULT_PURGE_BATCH) -> int:
        started = time.perf_counter()
        removed = await self.store.purge_expired(limit)
        self.durations.append(time.perf_counter() - started)
        self.removed += removed
        return removed


@contextmanager
def gc_paused() -> Iterator[None]:
    # A full collection over a million objects would land in whichever batch triggers it;
    # measured separately below, so that batch times show the purge's own cost.
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def measure_tick(store: InMemorySessionStore, budget: float) -> dict[str, float | int | bool]:
    timed = TimedPurges(store)
    watch = LoopWatch()
    finished = False
    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch.tick)
        await anyio.sleep(0.01)
        with anyio.move_on_after(budget):
            await purge_expired_now(cast(SessionStore, timed))
            finished = True
        watch.running = False
    return {
        "finished": finished,
        "seconds": time.perf_counter() - started,
        "removed": timed.removed,
        "batches": len(timed.durations),
        "longest_batch_ms": max(timed.durations, default=0.0) * 1000,
        "first_batch_ms": (timed.durations[0] if timed.durations else 0.0) * 1000,
        "last_batch_ms": (timed.durations[-1] if timed.durations else 0.0) * 1000,
        "longest_loop_hold_ms": watch.longest_gap * 1000,
    }


def tick_case(count: int, *, expired: int, budget: float) -> dict[str, Any]:
    """``count`` sessions of which the oldest ``expired`` are past their idle timeout."""
    clock = FakeClock()
    store = new_store(clock)
    asyncio.run(fill(store, expired, clock, 0.0))
    clock.now += IDLE_SECONDS / 2
    asyncio.run(fill(store, count - expired, clock, 0.0))
    clock.now += IDLE_SECONDS / 2 + 1
    with gc_paused():
        result = asyncio.run(measure_tick(store, budget))
    started = time.perf_counter()
    gc.collect()
    result["full_gc_ms"] = (time.perf_counter() - started) * 1000
    result.update({"sessions": count, "expired": expired})
    del store
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--traced-sample", type=int, default=100_000)
    parser.add_argument(
        "--budget", type=float, default=30.0, help="seconds one purge may run before it stops"
    )
    args = parser.parse_args()
    count = args.sessions
    steady = max(1, count // 100)
    note = {"text": "x" * 200, "saves": 3, "saved_at": 1_700_000_000.5}
    result: dict[str, Any] = {
        "memory": {
            **bytes_per_session(count),
            "traced_sample": args.traced_sample,
            "traced_bytes_per_session": traced_bytes_per_session(args.traced_sample, None),
            "traced_bytes_per_session_with_note": traced_bytes_per_session(
                args.traced_sample, {"ui.notepad.note": note}
            ),
            "note_json_bytes": len(json.dumps(note)),
        },
        "ticks": [
            tick_case(count, expired=steady, budget=args.budget),
            tick_case(count, expired=count, budget=args.budget),
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
