"""``GET /api/session``: the caller's session, for the UI's expiry notice and for scripts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from prodio.routes.csrf import CsrfTokens
from prodio.routes.deps import ServicesDep, SessionDep

router = APIRouter(prefix="/api")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@router.api_route("/session", methods=["GET", "HEAD"])
async def session_info(session: SessionDep, services: ServicesDep) -> JSONResponse:
    """Reading it counts as activity: the idle timer restarts (the "stay signed in" action)."""
    body: dict[str, Any] = {
        "user": session.username,
        "created_at": _iso(session.created_at),
        "last_seen": _iso(session.last_seen),
        "idle_expires_at": _iso(session.idle_expires_at),
        "absolute_expires_at": _iso(session.absolute_expires_at),
        "expires_at": _iso(session.expires_at),
        "idle_timeout": int(services.settings.session_idle_timeout),
        "csrf_token": services.csrf.issue(CsrfTokens.session_binding(session.id)),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
