"""A whole prodio app in-process, driven over httpx's ASGI transport, for integration tests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from prodio.config import Settings
from prodio.main import create_app
from prodio.services import Services, build_services
from prodio.session.base import SessionStore, SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from prodio.users.passwords import PasswordHasher
from prodio.users.sql import SqlUserStore

BASE_URL = "http://prodio.test"
ORIGIN = {"origin": BASE_URL}
PAGE = {"sec-fetch-mode": "navigate", "accept": "text/html"}
FETCH = {"sec-fetch-mode": "cors", "accept": "application/json"}
SECRET = "test-secret-" + "x" * 40
# Cheap parameters: these tests exercise the flow, tests/users covers the real cost.
FAST_HASHER_ARGS: dict[str, int] = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
# The accounts of app_with_users: alice's password and bob's, and how many wrong passwords
# lock an account there.
PASSWORD = "correct horse battery"
BOB_PASSWORD = "bob's password 123"
MAX_FAILURES = 3


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "secret_key": SECRET,
        "session_cleanup_interval": 3600,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class _Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input":
            attributes = dict(attrs)
            if attributes.get("name"):
                self.inputs[attributes["name"] or ""] = attributes.get("value") or ""


def form_fields(html: str) -> dict[str, str]:
    parser = _Fields()
    parser.feed(html)
    return parser.inputs


def session_cookie_of(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        match = re.match(r"(?:__Host-)?prodio_session=([^;]*)", header)
        if match:
            return match.group(1)
    return None


@dataclass
class AppUnderTest:
    app: FastAPI
    services: Services
    sessions: SessionStore
    users: SqlUserStore
    hasher: PasswordHasher
    client: httpx.AsyncClient

    def add_user(self, name: str, password: str) -> None:
        self.users.add(name, self.hasher.hash(password))

    def new_client(self) -> httpx.AsyncClient:
        """Another browser: its own cookie jar, the same app."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL)

    async def login(
        self,
        username: str,
        password: str,
        *,
        client: httpx.AsyncClient | None = None,
        next_path: str | None = None,
    ) -> httpx.Response:
        client = client or self.client
        page = await client.get("/login", headers=PAGE)
        if page.status_code == 303:
            # Already signed in: fetch a form as the browser would after its cookie was
            # dropped, then post it with the old session cookie back in place.
            old = client.cookies.get("prodio_session")
            client.cookies.delete("prodio_session")
            page = await client.get("/login", headers=PAGE)
            client.cookies.set("prodio_session", old or "")
        fields = form_fields(page.text)
        data = {"username": username, "password": password, "csrf_token": fields["csrf_token"]}
        if next_path is not None:
            data["next"] = next_path
        return await client.post("/login", data=data, headers={**PAGE, **ORIGIN})


@asynccontextmanager
async def running_app(
    data_dir: Path,
    *,
    sessions: SessionStore | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> AsyncIterator[AppUnderTest]:
    settings = make_settings(data_dir, **overrides)
    if sessions is None:
        timeouts = SessionTimeouts(settings.session_idle_timeout, settings.session_absolute_timeout)
        sessions = (
            InMemorySessionStore(timeouts, clock=clock) if clock else InMemorySessionStore(timeouts)
        )
    users = SqlUserStore(settings.effective_database_url)
    # Cheap, but with the policy build_services gives the real one.
    hasher = PasswordHasher(**FAST_HASHER_ARGS, context_words=settings.context_words())
    services = build_services(settings, sessions=sessions, users=users, hasher=hasher)
    app = create_app(settings, services=services)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client,
    ):
        yield AppUnderTest(app, services, sessions, users, hasher, client)


@asynccontextmanager
async def app_with_users(data_dir: Path, **overrides: Any) -> AsyncIterator[AppUnderTest]:
    """:func:`running_app` with the accounts alice (:data:`PASSWORD`) and bob
    (:data:`BOB_PASSWORD`), which lock after :data:`MAX_FAILURES` wrong passwords unless
    ``overrides`` say otherwise."""
    settings: dict[str, Any] = {"login_max_failures": MAX_FAILURES, **overrides}
    async with running_app(data_dir, **settings) as env:
        env.add_user("alice", PASSWORD)
        env.add_user("bob", BOB_PASSWORD)
        yield env


class VerifyCounter:
    """Counts argon2 verifications: the hasher the app really uses, wrapped."""

    def __init__(self, env: AppUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = env.hasher.verify

        def counting_verify(password_hash: str | None, password: str) -> bool:
            self.calls += 1
            return original(password_hash, password)

        monkeypatch.setattr(env.hasher, "verify", counting_verify)


@asynccontextmanager
async def signed_in(
    env: AppUnderTest, user: str, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    """A new browser of ``env``'s app, signed in as ``user``; closed on leaving."""
    async with env.new_client() as client:
        assert (await env.login(user, password, client=client)).status_code == 303
        yield client


def signed_in_fixture(user: str) -> Any:
    """A fixture named ``user``: a browser of the test module's ``env`` app, signed in as
    ``user`` with :data:`PASSWORD`. Assigned to a name in a test module, it serves the tests
    of that module that take ``user`` as a parameter."""

    @pytest.fixture(name=user)
    async def browser(env: AppUnderTest) -> AsyncIterator[httpx.AsyncClient]:
        async with signed_in(env, user) as client:
            yield client

    return browser
