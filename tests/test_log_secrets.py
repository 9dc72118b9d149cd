"""No secret ever reaches a log.

A realistic stretch of traffic runs through the whole app (logins that work and fail, a
lockout, Gradio events, the session API, logout, a replayed cookie, forged cookies, an
``Authorization`` header, 401s, a revoked account and a crash) with the process logging set
up by ``prodio.logs.configure_logging`` at DEBUG, in text and in JSON, with sessions in
memory and in Redis. Every line written is then searched for every secret the traffic
used: raw session ids, JWTs, CSRF tokens and cookie values, passwords, the secret key and
the ``Cookie`` and ``Authorization`` header values.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import Request
from starlette.routing import Route

from prodio.logs import configure_logging
from prodio.session.base import SessionTimeouts
from prodio.session.redis import RedisSessionStore
from tests.apptest import (
    FETCH,
    ORIGIN,
    PAGE,
    SECRET,
    AppUnderTest,
    form_fields,
    make_settings,
    running_app,
    session_cookie_of,
)
from tests.redis_server import RedisServer

PASSWORDS = {
    "alice": "alice's correct horse battery",
    "bob": "bob's staple of 2 batteries",
    "carol": "carol's long passphrase here",
}
WRONG_PASSWORDS = ["wrong-guess-Qx81 first", "wrong-guess-Zk22 second", "wrong-guess-Pm07 third"]
MAX_FAILURES = 3
NOTE = "a note about nothing in particular"


# A part of a secret this long is a leak too (a truncated token in a log line still
# narrows a search, and a logged prefix of a password is half a password).
FRAGMENT_LENGTH = 16


@dataclass
class Secrets:
    """Every secret value the traffic used, by kind.

    Each is searched for whole; those marked ``fragments`` also by every run of
    :data:`FRAGMENT_LENGTH` characters. Values that carry a JWT's header (the same for every
    token, and naming no session) are searched for whole only; their secret parts are
    added on their own.
    """

    values: dict[str, set[str]] = field(default_factory=dict)
    fragments: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, value: str | None, *, fragments: bool = True) -> None:
        assert value, f"an empty {kind}: the traffic did not produce what the test expects"
        self.values.setdefault(kind, set()).add(value)
        if fragments:
            for start in range(max(1, len(value) - FRAGMENT_LENGTH + 1)):
                self.fragments.setdefault(value[start : start + FRAGMENT_LENGTH], kind)

    def add_jwt(self, token: str | None) -> None:
        self.add("jwt", token, fragments=False)
        _header, payload, signature = (token or "").split(".")
        self.add("jwt claims", payload)
        self.add("jwt signature", signature)
        claims = jwt.decode(token or "", options={"verify_signature": False})
        self.add("session id", claims["sid"])

    def add_csrf_token(self, token: str | None) -> None:
        self.add("csrf token", token)

    def leaks(self, lines: list[str]) -> list[str]:
        found = []
        for line in lines:
            for kind, values in self.values.items():
                found += [f"{kind} {v[:8]}... in: {line[:300]}" for v in values if v in line]
            found += [
                f"part of a {kind} ({fragment!r}) in: {line[:300]}"
                for fragment, kind in self.fragments.items()
                if fragment in line
            ]
        return found

    def __len__(self) -> int:
        return sum(len(values) for values in self.values.values())


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Give back the logging set-up that ``configure_logging`` replaces."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    named = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "gradio")
    saved = {
        name: (
            logging.getLogger(name).level,
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
            logging.getLogger(name).disabled,
        )
        for name in named
    }
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    for name, (level, handlers, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A test redis-server of our own (tests/session's fixtures do not reach this folder)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@asynccontextmanager
async def app_for(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AppUnderTest]:
    settings: dict[str, Any] = {
        "login_max_failures": MAX_FAILURES,
        "account_recheck_interval": 0,
        "log_level": "DEBUG",
    }
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.client() as client:
            client.flushall()
        settings |= {"session_backend": "redis", "redis_url": server.url}
        settings["sessions"] = RedisSessionStore.from_url(
            server.url, SessionTimeouts(1800, 28800), socket_timeout=5.0
        )
    async with running_app(tmp_path, **settings) as env:
        for name, password in PASSWORDS.items():
            env.add_user(name, password)
        yield env


async def crash(request: Request) -> None:
    raise RuntimeError(f"the handler broke while serving {request.state.user}")


async def gradio_call(client: httpx.AsyncClient, api_name: str, data: list[Any]) -> str:
    started = await client.post(
        f"/gradio_api/call/{api_name}", json={"data": data}, headers={**FETCH, **ORIGIN}
    )
    assert started.status_code == 200, started.text
    result = await client.get(f"/gradio_api/call/{api_name}/{started.json()['event_id']}")
    assert "event: complete" in result.text, result.text
    return result.text


def forged_tokens(real: str) -> dict[str, str]:
    header, payload, signature = real.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    claims = jwt.decode(real, options={"verify_signature": False})
    return {
        "bad signature": f"{header}.{payload}.{flipped}",
        "alg none": f"{none_header}.{payload}.",
        "other key": jwt.encode(claims, "another-secret-key-" * 3, algorithm="HS256"),
        "junk": "junk-cookie-value-4f1d9a7be2c3",
    }


async def run_traffic(env: AppUnderTest, secrets: Secrets) -> list[str]:
    """Drive the app like a day of users and attackers; return the responses' request ids."""
    request_ids: list[str] = []
    env.app.router.routes.insert(0, Route("/crash", crash))
    secrets.add("secret key", SECRET)
    for password in [*PASSWORDS.values(), *WRONG_PASSWORDS]:
        secrets.add("password", password)

    alice = env.client
    page = await alice.get("/login", headers=PAGE)
    secrets.add_csrf_token(form_fields(page.text)["csrf_token"])
    secrets.add("csrf cookie", alice.cookies.get("prodio_csrf"))
    response = await env.login("alice", PASSWORDS["alice"], next_path="/?tab=notes")
    assert response.status_code == 303
    secrets.add_jwt(session_cookie_of(response))
    request_ids.append(response.headers["x-request-id"])

    assert (await alice.get("/", headers=PAGE)).status_code == 200
    session_info = (await alice.get("/api/session", headers=FETCH)).json()
    secrets.add_csrf_token(session_info["csrf_token"])
    await gradio_call(alice, "notepad_save", [NOTE])
    await gradio_call(alice, "text_stats", ["some words to count"])
    await gradio_call(alice, "header_user", [])

    # Logging in again replaces the session (a renewal): two ids, both secret.
    renewed = await env.login("alice", PASSWORDS["alice"])
    assert renewed.status_code == 303
    current_jwt = session_cookie_of(renewed)
    secrets.add_jwt(current_jwt)

    # Failures, an unknown user, and a lockout, from another browser.
    async with env.new_client() as attacker:
        for wrong in WRONG_PASSWORDS:
            assert (await env.login("bob", wrong, client=attacker)).status_code == 401
        locked = await env.login("bob", PASSWORDS["bob"], client=attacker)
        assert locked.status_code == 429
        assert (await env.login("mallory", WRONG_PASSWORDS[0], client=attacker)).status_code == 401
        secrets.add("csrf cookie", attacker.cookies.get("prodio_csrf"))

    # Forged cookies and a bearer token: all refused, none logged.
    assert current_jwt is not None
    for name, token in forged_tokens(current_jwt).items():
        secrets.add("forged token", token, fragments=False)
        cookie_header = f"prodio_session={token}; prodio_csrf=forged-csrf-{name.replace(' ', '-')}"
        secrets.add("cookie header", cookie_header, fragments=False)
        secrets.add("cookie value", cookie_header.rpartition("prodio_csrf=")[2])
        async with env.new_client() as forger:
            response = await forger.get("/api/session", headers={**FETCH, "cookie": cookie_header})
            assert response.status_code == 401, name
            request_ids.append(response.headers["x-request-id"])
    authorization = f"Bearer {current_jwt}"
    secrets.add("authorization header", authorization, fragments=False)
    async with env.new_client() as bearer:
        response = await bearer.get(
            "/api/session", headers={**FETCH, "authorization": authorization}
        )
        assert response.status_code == 401
        basic = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
        secrets.add("authorization header", basic)
        response = await bearer.get("/", headers={**PAGE, "authorization": basic})
        assert response.status_code == 303

    # A crash while signed in, with the cookie header spelled out.
    cookie_header = f"prodio_session={current_jwt}"
    secrets.add("cookie header", cookie_header, fragments=False)
    async with env.new_client() as crasher:
        response = await crasher.get("/crash", headers={**PAGE, "cookie": cookie_header})
        assert response.status_code == 500
        request_ids.append(response.headers["x-request-id"])

    # Logout, then the ended session's cookie played back.
    confirm = await alice.get("/logout", headers=PAGE)
    logout_token = form_fields(confirm.text)["csrf_token"]
    secrets.add_csrf_token(logout_token)
    assert (
        await alice.post("/logout", data={"csrf_token": "forged.x"}, headers=ORIGIN)
    ).status_code == 403
    assert (
        await alice.post("/logout", data={"csrf_token": logout_token}, headers=ORIGIN)
    ).status_code == 303
    async with env.new_client() as replay:
        response = await replay.get("/api/session", headers={**FETCH, "cookie": cookie_header})
        assert response.status_code == 401

    # Carol signs in, then her account is disabled: her session is revoked.
    async with env.new_client() as carol:
        response = await env.login("carol", PASSWORDS["carol"], client=carol)
        assert response.status_code == 303
        secrets.add_jwt(session_cookie_of(response))
        env.users.set_disabled("carol", True)
        assert (await carol.get("/api/session", headers=FETCH)).status_code == 401
    return request_ids


# Gradio 6.31's queue computes event statistics with pandas calls that pandas 3 deprecates:
# a third-party warning, raised (in a worker thread) for every queued event.
GRADIO_PANDAS_WARNING = "ignore::pandas.errors.Pandas4Warning"


@pytest.mark.anyio
@pytest.mark.filterwarnings(GRADIO_PANDAS_WARNING)
@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.usefixtures("root_logging")
async def test_no_secret_in_any_log_line(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, log_format: str
) -> None:
    configure_logging(make_settings(tmp_path, log_level="DEBUG", log_format=log_format))
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    handler.setStream(captured)

    secrets = Secrets()
    async with app_for(backend, tmp_path, request) as env:
        request_ids = await run_traffic(env, secrets)
    log = captured.getvalue()
    lines = log.splitlines()

    # The capture saw the traffic: requests, audit events, the crash's traceback.
    for request_id in request_ids:
        assert request_id in log
    for expected in (
        "login.lockout",
        "session.renewed",
        "session.rejected",
        "session.expired",
        "session.revoked",
        "access.denied",
        "csrf.rejected",
        "RuntimeError",
    ):
        assert expected in log, expected
    if log_format == "json":
        assert all(json.loads(line) for line in lines if line.startswith("{"))

    leaks = secrets.leaks(lines)
    assert not leaks, "\n".join(leaks[:20])
    assert len(secrets) > 25
