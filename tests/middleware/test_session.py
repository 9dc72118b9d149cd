"""The session middleware: which cookies lead to a live session, and what happens to the rest."""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prodio.middleware.session import STATE_STORE_UNAVAILABLE, SessionMiddleware
from prodio.session.base import JSONValue, Session, SessionStoreUnavailable, SessionTimeouts
from prodio.session.cookies import CookiePolicy
from prodio.session.memory import InMemorySessionStore
from prodio.session.tokens import SessionTokenCodec

KEY = b"k" * 32
COOKIES = CookiePolicy(secure=False, samesite="lax")


class UnreachableStore(InMemorySessionStore):
    """The failure a memory store cannot show by itself: the backend does not answer."""

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        raise SessionStoreUnavailable("down")

    async def update(
        self,
        session_id: str,
        changes: Mapping[str, JSONValue] | None = None,
        *,
        remove=(),  # type: ignore[no-untyped-def]
    ) -> bool:
        raise SessionStoreUnavailable("down")


async def state_view(request: Request) -> JSONResponse:
    session = getattr(request.state, "session", None)
    return JSONResponse(
        {
            "user": session.username if session else None,
            "session_id": getattr(request.state, "session_id", None),
            "unavailable": getattr(request.state, STATE_STORE_UNAVAILABLE, False),
        }
    )


def _client(store: InMemorySessionStore) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/", state_view)])
    wrapped = SessionMiddleware(app, store=store, codec=SessionTokenCodec(KEY), cookies=COOKIES)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


@pytest.fixture
def store() -> InMemorySessionStore:
    return InMemorySessionStore(SessionTimeouts(idle=60, absolute=600))


async def _cookie_for(store: InMemorySessionStore, user: str = "alice") -> tuple[Session, str]:
    session = await store.create(user)
    token = SessionTokenCodec(KEY).issue(user, session.id, session.absolute_expires_at)
    return session, f"prodio_session={token}"


@pytest.mark.anyio
async def test_no_cookie_is_anonymous_and_creates_nothing(store: InMemorySessionStore) -> None:
    async with _client(store) as client:
        response = await client.get("/")
    assert response.json()["user"] is None
    assert "set-cookie" not in response.headers
    assert len(store) == 0


@pytest.mark.anyio
async def test_valid_cookie_puts_session_on_state_and_touches(store: InMemorySessionStore) -> None:
    session, cookie = await _cookie_for(store)
    await anyio.sleep(0.01)
    async with _client(store) as client:
        response = await client.get("/", headers={"cookie": cookie})
    assert response.json() == {"user": "alice", "session_id": session.id, "unavailable": False}
    assert "set-cookie" not in response.headers
    reloaded = await store.load(session.id, touch=False)
    assert reloaded is not None
    assert reloaded.last_seen > session.last_seen


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["garbage", "a.b.c", "", "x" * 5000])
async def test_invalid_cookie_is_anonymous_and_expired(
    store: InMemorySessionStore, value: str
) -> None:
    async with _client(store) as client:
        response = await client.get("/", headers={"cookie": f"prodio_session={value}"})
    assert response.json()["user"] is None
    if value:
        assert response.headers["set-cookie"].startswith('prodio_session=""')
        assert "Max-Age=0" in response.headers["set-cookie"]
    assert len(store) == 0


@pytest.mark.anyio
async def test_cookie_of_deleted_session_is_anonymous(store: InMemorySessionStore) -> None:
    session, cookie = await _cookie_for(store)
    await store.delete(session.id)
    async with _client(store) as client:
        response = await client.get("/", headers={"cookie": cookie})
    assert response.json()["user"] is None
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert len(store) == 0


@pytest.mark.anyio
async def test_token_naming_another_user_for_a_session_is_rejected(
    store: InMemorySessionStore,
) -> None:
    session = await store.create("alice")
    forged = SessionTokenCodec(KEY).issue("mallory", session.id, session.absolute_expires_at)
    async with _client(store) as client:
        response = await client.get("/", headers={"cookie": f"prodio_session={forged}"})
    assert response.json()["user"] is None


@pytest.mark.anyio
async def test_expired_session_is_anonymous() -> None:
    now = [1000.0]
    store = InMemorySessionStore(SessionTimeouts(idle=60, absolute=600), clock=lambda: now[0])
    session = await store.create("alice")
    token = SessionTokenCodec(KEY).issue("alice", session.id, time.time() + 600)
    now[0] += 61
    async with _client(store) as client:
        response = await client.get("/", headers={"cookie": f"prodio_session={token}"})
    assert response.json()["user"] is None
    assert len(store) == 0


@pytest.mark.anyio
async def test_unreachable_store_is_flagged_not_anonymous(store: InMemorySessionStore) -> None:
    down = UnreachableStore(store.timeouts)
    _, cookie = await _cookie_for(store)
    async with _client(down) as client:
        response = await client.get("/", headers={"cookie": cookie})
    assert response.json() == {"user": None, "session_id": None, "unavailable": True}
    # The cookie may still be good: it must not be thrown away because the store was down.
    assert "set-cookie" not in response.headers


@pytest.mark.anyio
async def test_lifespan_scopes_pass_through(store: InMemorySessionStore) -> None:
    seen: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["type"])

    wrapped = SessionMiddleware(app, store=store, codec=SessionTokenCodec(KEY), cookies=COOKIES)
    await wrapped({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
