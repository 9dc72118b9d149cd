"""Login, logout, CSRF, ``next``, expiry and revocation through the whole app."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from prodio.audit import AUDIT_LOGGER
from prodio.session.base import SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from tests.apptest import (
    FETCH,
    ORIGIN,
    PAGE,
    AppUnderTest,
    form_fields,
    running_app,
    session_cookie_of,
)
from tests.users.backdate import backdate_password

PASSWORD = "correct horse battery"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AppUnderTest]:
    async with running_app(tmp_path) as app_env:
        app_env.add_user("alice", PASSWORD)
        app_env.add_user("bob", "bob's password 123")
        yield app_env


def _sessions(env: AppUnderTest) -> int:
    store = env.sessions
    assert isinstance(store, InMemorySessionStore)
    return len(store)


# --- the login page -------------------------------------------------------------------


@pytest.mark.anyio
async def test_anonymous_home_redirects_to_login(env: AppUnderTest) -> None:
    response = await env.client.get("/", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


@pytest.mark.anyio
async def test_login_page_has_token_and_creates_no_session(env: AppUnderTest) -> None:
    response = await env.client.get("/login", headers=PAGE)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    fields = form_fields(response.text)
    assert fields["csrf_token"]
    assert {"username", "password", "next"} <= set(fields)
    assert "prodio_csrf=" in response.headers["set-cookie"]
    assert "HttpOnly" in response.headers["set-cookie"]
    assert _sessions(env) == 0


@pytest.mark.anyio
async def test_successful_login_sets_a_safe_cookie_and_opens_home(env: AppUnderTest) -> None:
    response = await env.login("alice", PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookies = response.headers.get_list("set-cookie")
    [session_header] = [c for c in cookies if c.startswith("prodio_session=")]
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in session_header
    assert "Domain" not in session_header
    assert any(c.startswith('prodio_csrf=""') and "Max-Age=0" in c for c in cookies)
    assert _sessions(env) == 1
    home = await env.client.get("/", headers=PAGE)
    assert home.status_code == 200
    assert "<html" in home.text.lower()


@pytest.mark.anyio
async def test_user_name_is_case_insensitive(env: AppUnderTest) -> None:
    response = await env.login("ALICE", PASSWORD)
    assert response.status_code == 303


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("", ""),
        ("alice", ""),
        ("a" * 5000, PASSWORD),
        ("alice", "p" * 5000),
        ("bad name!", PASSWORD),
    ],
)
async def test_failed_login_is_generic_and_sets_no_session(
    env: AppUnderTest, username: str, password: str
) -> None:
    response = await env.login(username, password)
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert session_cookie_of(response) is None
    assert _sessions(env) == 0


@pytest.mark.anyio
async def test_disabled_account_gets_the_same_answer(env: AppUnderTest) -> None:
    wrong = await env.login("alice", "not the password")
    env.users.set_disabled("bob", True)
    disabled = await env.login("bob", "bob's password 123")
    assert disabled.status_code == wrong.status_code == 401

    def without_token(text: str) -> str:
        token = form_fields(text)["csrf_token"]
        return text.replace(token, "").replace("bob", "USER").replace("alice", "USER")

    assert without_token(disabled.text) == without_token(wrong.text)
    assert session_cookie_of(disabled) is None


# --- CSRF and origin ------------------------------------------------------------------


async def _login_post(env: AppUnderTest, data: dict[str, str], headers: dict[str, str]) -> int:
    response = await env.client.post("/login", data=data, headers=headers)
    assert session_cookie_of(response) is None
    return response.status_code


@pytest.mark.anyio
async def test_login_without_token_is_refused(env: AppUnderTest) -> None:
    await env.client.get("/login")
    status = await _login_post(env, {"username": "alice", "password": PASSWORD}, ORIGIN)
    assert status == 403
    assert _sessions(env) == 0


@pytest.mark.anyio
async def test_token_from_another_browser_is_refused(env: AppUnderTest) -> None:
    async with env.new_client() as attacker:
        stolen = form_fields((await attacker.get("/login")).text)["csrf_token"]
    await env.client.get("/login")
    data = {"username": "alice", "password": PASSWORD, "csrf_token": stolen}
    assert await _login_post(env, data, ORIGIN) == 403


@pytest.mark.anyio
async def test_token_without_its_cookie_is_refused(env: AppUnderTest) -> None:
    token = form_fields((await env.client.get("/login")).text)["csrf_token"]
    env.client.cookies.clear()
    data = {"username": "alice", "password": PASSWORD, "csrf_token": token}
    assert await _login_post(env, data, ORIGIN) == 403


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site", "origin": "http://prodio.test"},
    ],
)
async def test_cross_origin_login_is_refused(env: AppUnderTest, headers: dict[str, str]) -> None:
    token = form_fields((await env.client.get("/login")).text)["csrf_token"]
    data = {"username": "alice", "password": PASSWORD, "csrf_token": token}
    assert await _login_post(env, data, headers) == 403


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"username": "alice"}', "application/json"),
        (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
        (b"", "text/plain"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    ],
)
async def test_malformed_login_bodies_get_a_clean_4xx(
    env: AppUnderTest, content: bytes, content_type: str
) -> None:
    await env.client.get("/login")
    response = await env.client.post(
        "/login", content=content, headers={"content-type": content_type, **ORIGIN}
    )
    assert 400 <= response.status_code < 500
    assert "Traceback" not in response.text
    assert session_cookie_of(response) is None


@pytest.mark.anyio
async def test_file_upload_in_login_form_is_refused(env: AppUnderTest) -> None:
    token = form_fields((await env.client.get("/login")).text)["csrf_token"]
    response = await env.client.post(
        "/login",
        data={"username": "alice", "csrf_token": token},
        files={"password": ("p.txt", PASSWORD.encode())},
        headers=ORIGIN,
    )
    assert response.status_code == 400
    assert session_cookie_of(response) is None


# --- next -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_deep_link_returns_after_login(env: AppUnderTest) -> None:
    first = await env.client.get("/api/session?x=1", headers=PAGE)
    assert first.headers["location"] == "/login?next=/api/session%3Fx%3D1"
    page = await env.client.get(first.headers["location"], headers=PAGE)
    fields = form_fields(page.text)
    assert fields["next"] == "/api/session?x=1"
    response = await env.login("alice", PASSWORD, next_path=fields["next"])
    assert response.headers["location"] == "/api/session?x=1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/login",
        "/logout",
        "\t//evil.example",
        "/x\r\nLocation: //evil.example",
        "///evil.example",
        "http:/evil.example",
    ],
)
async def test_foreign_or_unsafe_next_goes_home(env: AppUnderTest, target: str) -> None:
    response = await env.login("alice", PASSWORD, next_path=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


@pytest.mark.anyio
async def test_encoded_control_characters_stay_encoded_in_next(env: AppUnderTest) -> None:
    response = await env.login("alice", PASSWORD, next_path="/%0d%0aSet-Cookie:x=y")
    assert response.headers["location"] == "/%0d%0aSet-Cookie:x=y"
    assert all("x=y" not in c for c in response.headers.get_list("set-cookie"))


@pytest.mark.anyio
async def test_logged_in_user_visiting_login_goes_to_next(env: AppUnderTest) -> None:
    await env.login("alice", PASSWORD)
    response = await env.client.get("/login?next=/api/session", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == "/api/session"


# --- sessions: fixation, logout, expiry, revocation -------------------------------------


@pytest.mark.anyio
async def test_login_replaces_an_existing_session(env: AppUnderTest) -> None:
    first = session_cookie_of(await env.login("alice", PASSWORD))
    second = session_cookie_of(await env.login("alice", PASSWORD))
    assert first
    assert second
    assert first != second
    assert _sessions(env) == 1
    async with env.new_client() as other:
        other.cookies.set("prodio_session", first)
        assert (await other.get("/api/session", headers=FETCH)).status_code == 401


@pytest.mark.anyio
async def test_logout_needs_the_session_token_and_ends_the_session(env: AppUnderTest) -> None:
    cookie = session_cookie_of(await env.login("alice", PASSWORD))
    confirm = await env.client.get("/logout", headers=PAGE)
    assert confirm.status_code == 200
    token = form_fields(confirm.text)["csrf_token"]

    refused = await env.client.post("/logout", data={"csrf_token": "forged.x"}, headers=ORIGIN)
    assert refused.status_code == 403
    cross = await env.client.post(
        "/logout", data={"csrf_token": token}, headers={"origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    assert _sessions(env) == 1

    done = await env.client.post("/logout", data={"csrf_token": token}, headers={**PAGE, **ORIGIN})
    assert done.status_code == 303
    assert done.headers["location"] == "/login"
    assert any("Max-Age=0" in c for c in done.headers.get_list("set-cookie"))
    assert _sessions(env) == 0
    async with env.new_client() as replay:
        replay.cookies.set("prodio_session", cookie or "")
        assert (await replay.get("/", headers=PAGE)).status_code == 303
        assert (await replay.get("/api/session", headers=FETCH)).status_code == 401


@pytest.mark.anyio
async def test_logout_clears_the_site_data(env: AppUnderTest) -> None:
    await env.login("alice", PASSWORD)
    await env.client.get("/login")  # a pre-login CSRF cookie too, as a stale tab leaves one
    token = form_fields((await env.client.get("/logout", headers=PAGE)).text)["csrf_token"]
    done = await env.client.post("/logout", data={"csrf_token": token}, headers={**PAGE, **ORIGIN})
    assert done.status_code == 303
    assert done.headers["clear-site-data"] == '"cookies"'
    # And for browsers that ignore it (or a plain-HTTP site, where it does not apply):
    expired = {c.split("=", 1)[0] for c in done.headers.get_list("set-cookie") if "Max-Age=0" in c}
    assert expired == {"prodio_session", "prodio_csrf"}
    # A refused logout clears nothing.
    await env.login("alice", PASSWORD)
    refused = await env.client.post("/logout", data={"csrf_token": "x.y"}, headers=ORIGIN)
    assert refused.status_code == 403
    assert "clear-site-data" not in refused.headers


@pytest.mark.anyio
async def test_token_for_another_session_cannot_log_out(env: AppUnderTest) -> None:
    await env.login("alice", PASSWORD)
    async with env.new_client() as other:
        await env.login("bob", "bob's password 123", client=other)
        bobs_token = (await other.get("/api/session")).json()["csrf_token"]
    response = await env.client.post("/logout", data={"csrf_token": bobs_token}, headers=ORIGIN)
    assert response.status_code == 403
    assert _sessions(env) == 2


@pytest.mark.anyio
async def test_the_api_hands_out_one_token_per_session_and_it_logs_out(env: AppUnderTest) -> None:
    await env.login("alice", PASSWORD)
    token = (await env.client.get("/api/session")).json()["csrf_token"]
    assert (await env.client.get("/api/session")).json()["csrf_token"] == token
    await env.login("alice", PASSWORD)  # a new session: the old token is no longer good
    renewed = (await env.client.get("/api/session")).json()["csrf_token"]
    assert renewed != token
    stale = await env.client.post("/logout", data={"csrf_token": token}, headers=ORIGIN)
    assert stale.status_code == 403
    done = await env.client.post("/logout", data={"csrf_token": renewed}, headers=ORIGIN)
    assert done.status_code == 303
    assert _sessions(env) == 0


@pytest.mark.anyio
async def test_idle_and_absolute_expiry(tmp_path: Path) -> None:
    # Ahead of the real clock: the account's password dates from "before" these sessions.
    now = [time.time() + 10]
    async with running_app(
        tmp_path, session_idle_timeout=60, session_absolute_timeout=300, clock=lambda: now[0]
    ) as env:
        env.add_user("alice", PASSWORD)
        await env.login("alice", PASSWORD)
        # Busy: a request every 50 s keeps the idle timer fresh; the absolute limit holds.
        statuses = []
        for _ in range(6):
            now[0] += 50
            statuses.append((await env.client.get("/api/session", headers=FETCH)).status_code)
        assert statuses == [200, 200, 200, 200, 200, 401]
        await env.login("alice", PASSWORD)
        now[0] += 59
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 200
        now[0] += 61
        expired = await env.client.get("/", headers=PAGE)
        assert expired.status_code == 303
        assert expired.headers["location"] == "/login"


@pytest.mark.anyio
async def test_revoked_sessions_are_refused_at_once(env: AppUnderTest) -> None:
    await env.login("alice", PASSWORD)
    assert (await env.client.get("/api/session", headers=FETCH)).status_code == 200
    assert await env.sessions.delete_user_sessions("alice") == 1
    assert (await env.client.get("/api/session", headers=FETCH)).status_code == 401


@pytest.mark.anyio
async def test_disabling_or_removing_an_account_ends_its_sessions(tmp_path: Path) -> None:
    async with running_app(tmp_path, account_recheck_interval=0) as env:
        env.add_user("alice", PASSWORD)
        env.add_user("bob", PASSWORD)
        await env.login("alice", PASSWORD)
        async with env.new_client() as bob:
            await env.login("bob", PASSWORD, client=bob)
            env.users.set_disabled("alice", True)
            env.users.remove("bob")
            assert (await bob.get("/api/session", headers=FETCH)).status_code == 401
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 401
        assert _sessions(env) == 0


@pytest.mark.anyio
async def test_password_change_ends_older_sessions(tmp_path: Path) -> None:
    async with running_app(tmp_path, account_recheck_interval=0) as env:
        env.add_user("alice", PASSWORD)
        await env.login("alice", PASSWORD)
        await anyio.sleep(0.01)
        env.users.set_password_hash("alice", env.hasher.hash("a brand new password"))
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 401
        relogin = await env.login("alice", "a brand new password")
        assert relogin.status_code == 303
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 200


@pytest.mark.anyio
async def test_an_account_made_again_under_the_same_name_has_none_of_the_old_sessions(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path, account_recheck_interval=0) as env:
        env.add_user("alice", PASSWORD)
        await env.login("alice", PASSWORD)
        # Removed and made again at once (before any request saw the removal), as a
        # script of another process could.
        env.users.remove("alice")
        env.add_user("alice", "another password 42")
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 401
        assert _sessions(env) == 0


@pytest.mark.anyio
async def test_a_temporary_password_leads_to_the_change_page(env: AppUnderTest) -> None:
    env.users.add("carol", env.hasher.hash("temporary pass 1"), must_change_password=True)
    response = await env.login("carol", "temporary pass 1", next_path="/api/session")
    assert response.status_code == 303
    assert response.headers["location"] == "/account/password"
    assert (await env.client.get("/api/session", headers=FETCH)).status_code == 403
    # The flag lives in the session: no store round trip decides it.
    claims = env.services.tokens.verify(session_cookie_of(response) or "")
    session = await env.sessions.load(claims.session_id)
    assert session is not None
    assert session.data["auth.must_change_password"] is True


# --- expired temporary passwords (ASVS 6.4.1) -------------------------------------------

TEMPORARY = "temporary pass 1"
HOURS = 3600


def _add_expired_temporary(env: AppUnderTest, name: str = "carol") -> None:
    """An account whose temporary password was set 73 hours ago: past the default 72."""
    env.users.add(name, env.hasher.hash(TEMPORARY), must_change_password=True)
    backdate_password(env.users, name, 73 * HOURS)


def _answer(response: httpx.Response) -> tuple[int, list[str], str, dict[str, str]]:
    """What a client learns from a login answer, but for what differs on every request:
    the CSRF token in the form and the request id."""
    token = form_fields(response.text)["csrf_token"]
    values = {k: v for k, v in response.headers.items() if k not in ("x-request-id",)}
    return (
        response.status_code,
        list(response.headers.keys()),
        response.text.replace(token, "TOKEN"),
        values,
    )


@pytest.mark.anyio
async def test_an_expired_temporary_password_gets_the_answer_of_a_wrong_one(
    env: AppUnderTest,
) -> None:
    _add_expired_temporary(env)
    wrong = await env.login("carol", "not the password")
    expired = await env.login("carol", TEMPORARY)
    assert expired.status_code == 401
    assert _answer(expired) == _answer(wrong)
    assert "Wrong user name or password." in expired.text
    assert session_cookie_of(expired) is None
    assert _sessions(env) == 0


@pytest.mark.anyio
async def test_an_expired_temporary_password_is_audited_as_such(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    _add_expired_temporary(env)
    await env.login("carol", "not the password")
    await env.login("carol", TEMPORARY)
    logins = [vars(r) for r in caplog.records if r.name == AUDIT_LOGGER and r.event == "login"]  # type: ignore[attr-defined]
    assert [(r["outcome"], r["user"], r["reason"], r["account_failures"]) for r in logins] == [
        ("failure", "carol", "wrong user name or password, or account disabled", 1),
        ("failure", "carol", "temporary password expired", 2),
    ]
    assert TEMPORARY not in caplog.text


@pytest.mark.anyio
async def test_an_expired_temporary_password_counts_toward_the_lock(env: AppUnderTest) -> None:
    """Like a wrong password: an account that never locked on its right but expired
    password would tell an attacker it was right."""
    _add_expired_temporary(env)
    max_failures = env.services.settings.login_max_failures
    for _ in range(max_failures):
        assert (await env.login("carol", TEMPORARY)).status_code == 401
    locked = await env.login("carol", TEMPORARY)
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.text


@pytest.mark.anyio
async def test_the_configured_temporary_password_lifetime_applies(tmp_path: Path) -> None:
    async with running_app(tmp_path, temporary_password_lifetime=60) as env:
        env.users.add("carol", env.hasher.hash(TEMPORARY), must_change_password=True)
        backdate_password(env.users, "carol", 50)
        # Within its lifetime: signed in to the password change, as before.
        within = await env.login("carol", TEMPORARY)
        assert within.status_code == 303
        assert within.headers["location"] == "/account/password"
        backdate_password(env.users, "carol", 61)
        async with env.new_client() as later:
            assert (await env.login("carol", TEMPORARY, client=later)).status_code == 401
        # A new password renews it.
        env.users.set_password_hash("carol", env.hasher.hash(TEMPORARY), must_change_password=True)
        async with env.new_client() as renewed:
            answer = await env.login("carol", TEMPORARY, client=renewed)
            assert answer.headers["location"] == "/account/password"


# --- forged tokens ----------------------------------------------------------------------


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.anyio
async def test_forged_tokens_give_no_access(env: AppUnderTest) -> None:
    real = session_cookie_of(await env.login("alice", PASSWORD)) or ""
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    forgeries = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "no exp, re-signed by nobody": f"{header}.{_b64(no_exp)}.{signature}",
        "other user": f"{header}.{_b64({**claims, 'sub': 'bob'})}.{signature}",
        "truncated": f"{header}.{payload}",
    }
    for name, token in forgeries.items():
        async with env.new_client() as attacker:
            attacker.cookies.set("prodio_session", token)
            response = await attacker.get("/api/session", headers=FETCH)
            assert response.status_code == 401, name
    # A genuine token whose session was deleted is no better.
    await env.sessions.delete(claims["sid"])
    async with env.new_client() as attacker:
        attacker.cookies.set("prodio_session", real)
        assert (await attacker.get("/api/session", headers=FETCH)).status_code == 401


# --- /api/session and the store being down -------------------------------------------------


@pytest.mark.anyio
async def test_api_session_describes_the_session(env: AppUnderTest) -> None:
    await env.login("alice", PASSWORD)
    body = (await env.client.get("/api/session", headers=FETCH)).json()
    assert body["user"] == "alice"
    assert body["idle_timeout"] == 1800
    assert set(body) == {
        "user",
        "created_at",
        "last_seen",
        "idle_expires_at",
        "absolute_expires_at",
        "expires_at",
        "idle_timeout",
        "csrf_token",
    }
    assert body["expires_at"] == min(body["idle_expires_at"], body["absolute_expires_at"])


class FlakyStore(InMemorySessionStore):
    """A store whose backend can be switched off: the failure memory cannot show by itself."""

    down = False

    async def load(self, session_id: str, *, touch: bool = True):  # type: ignore[no-untyped-def]
        if self.down:
            from prodio.session.base import SessionStoreUnavailable

            raise SessionStoreUnavailable("down")
        return await super().load(session_id, touch=touch)

    async def create(self, username, data=None):  # type: ignore[no-untyped-def]
        if self.down:
            from prodio.session.base import SessionStoreUnavailable

            raise SessionStoreUnavailable("down")
        return await super().create(username, data)

    async def ping(self) -> None:
        if self.down:
            from prodio.session.base import SessionStoreUnavailable

            raise SessionStoreUnavailable("down")


@pytest.mark.anyio
async def test_store_outage_fails_closed(tmp_path: Path) -> None:
    store = FlakyStore(SessionTimeouts(1800, 28800))
    async with running_app(tmp_path, sessions=store) as env:
        env.add_user("alice", PASSWORD)
        await env.login("alice", PASSWORD)
        store.down = True
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 503
        assert (await env.client.get("/", headers=PAGE)).status_code == 503
        assert (await env.client.get("/healthz")).status_code == 200
        assert (await env.client.get("/readyz")).status_code == 503
        async with env.new_client() as newcomer:
            response = await env.login("alice", PASSWORD, client=newcomer)
            assert response.status_code == 503
            assert session_cookie_of(response) is None
        store.down = False
        assert (await env.client.get("/api/session", headers=FETCH)).status_code == 200
        assert (await env.client.get("/readyz")).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/login", "/healthz", "/readyz"])
async def test_head_is_answered_like_get_without_a_body(env: AppUnderTest, path: str) -> None:
    response = await env.client.head(path)
    assert response.status_code == 200
    assert response.content == b""
