"""Typed dependencies: what a route may ask for."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request

from prodio.services import Services
from prodio.session.base import Session


# async on purpose: a plain ``def`` dependency runs in FastAPI's thread pool, a thread
# hand-off per request that doubled the route's CPU cost (measured in bench/).
async def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


async def get_session(request: Request) -> Session:
    """The caller's live session; the auth middleware already refused requests without one."""
    session = getattr(request.state, "session", None)
    if not isinstance(session, Session) or getattr(request.state, "user", None) is None:
        raise HTTPException(status_code=401, detail="not authenticated")
    return session


async def get_optional_session(request: Request) -> Session | None:
    if getattr(request.state, "user", None) is None:
        return None
    session = getattr(request.state, "session", None)
    return session if isinstance(session, Session) else None


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
OptionalSessionDep = Annotated[Session | None, Depends(get_optional_session)]
