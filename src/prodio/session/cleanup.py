"""The background task that removes expired sessions.

Start it in the app's lifespan and cancel it at shutdown::

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(purge_periodically, store, settings.session_cleanup_interval)
        yield
        tasks.cancel_scope.cancel()

Expired sessions are already invisible (every store checks expiry on each read); this
only gives their memory back. It never stops on an error: a store that is down now may be
back next tick.
"""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel

from prodio.session.base import SessionStore, SessionStoreUnavailable

logger = logging.getLogger("prodio.session")

# About 5 ms of work per batch on this machine: the loop is never held for long.
DEFAULT_PURGE_BATCH = 2_000


async def purge_expired_now(store: SessionStore, *, batch: int = DEFAULT_PURGE_BATCH) -> int:
    """Purge every expired session, ``batch`` at a time, and return how many went.

    Between batches it lets the event loop run other tasks, so that even a large purge
    never holds up requests for long.
    """
    if batch < 1:
        raise ValueError("the purge batch size must be at least 1")
    total = 0
    while True:
        removed = await store.purge_expired(batch)
        total += removed
        if removed < batch:
            return total
        await anyio.lowlevel.checkpoint()


async def purge_periodically(
    store: SessionStore, interval: float, *, batch: int = DEFAULT_PURGE_BATCH
) -> None:
    """Every ``interval`` seconds, purge the store's expired sessions; run until cancelled.

    Errors are logged and the next tick tries again: :class:`SessionStoreUnavailable` as a
    warning, anything unexpected with its traceback. Cancellation ends it at once.
    """
    if interval <= 0:
        raise ValueError("the session cleanup interval must be positive")
    if batch < 1:
        raise ValueError("the purge batch size must be at least 1")
    while True:
        await anyio.sleep(interval)
        try:
            removed = await purge_expired_now(store, batch=batch)
        except SessionStoreUnavailable as exc:
            logger.warning("session cleanup skipped, the session store is unavailable: %s", exc)
            continue
        except Exception:
            logger.exception("session cleanup failed; trying again in %s s", interval)
            continue
        if removed:
            logger.info("session cleanup removed %d expired sessions", removed)
        else:
            logger.debug("session cleanup found no expired sessions")
