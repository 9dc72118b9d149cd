"""``/healthz`` (the process answers) and ``/readyz`` (it can serve users)."""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from prodio.routes.deps import ServicesDep
from prodio.session.base import SessionStoreUnavailable
from prodio.users.base import UserStoreUnavailable

logger = logging.getLogger("prodio.health")
router = APIRouter(include_in_schema=False)

READINESS_TIMEOUT_SECONDS = 3.0
NO_STORE = {"Cache-Control": "no-store"}


@router.api_route("/healthz", methods=["GET", "HEAD"])
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    with anyio.move_on_after(READINESS_TIMEOUT_SECONDS):
        try:
            await services.sessions.ping()
            checks["session_store"] = "ok"
        except SessionStoreUnavailable:
            checks["session_store"] = "unavailable"
    checks.setdefault("session_store", "timeout")
    with anyio.move_on_after(READINESS_TIMEOUT_SECONDS):
        try:
            await anyio.to_thread.run_sync(services.users.ping, abandon_on_cancel=True)
            checks["user_store"] = "ok"
        except UserStoreUnavailable:
            checks["user_store"] = "unavailable"
    checks.setdefault("user_store", "timeout")
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        logger.warning("not ready", extra=checks)
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=NO_STORE,
    )
