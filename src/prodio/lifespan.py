"""Start-up and shut-down: schema migration, the expiry task, closing connections."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

from prodio.services import Services
from prodio.session.base import SessionStoreUnavailable
from prodio.session.cleanup import purge_periodically

logger = logging.getLogger("prodio")


def lifespan_for(
    services: Services,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = services.settings
        await anyio.to_thread.run_sync(services.users.migrate)
        try:
            await services.sessions.ping()
        except SessionStoreUnavailable:
            # Start anyway: /readyz reports it, requests get 503, and service resumes by
            # itself when the store comes back. Refusing to start would turn a Redis blip
            # during a deploy into an outage.
            logger.warning("session store unreachable at start-up")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                purge_periodically, services.sessions, settings.session_cleanup_interval
            )
            logger.info(
                "prodio ready",
                extra={"env": settings.env.value, "session_backend": settings.session_backend},
            )
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
        await services.sessions.aclose()
        await anyio.to_thread.run_sync(services.users.close)

    return lifespan
