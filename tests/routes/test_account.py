"""``/account/password``: a user changes their own password, through the whole app.

Real stores throughout: the SQLite user database of the app under test, in-memory sessions
(one and two instances), and two instances sharing a real redis-server.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from prodio.middleware.headers import PRODIO_PAGE_POLICY
from prodio.routes.account import (
    PASSWORDS_DIFFER,
    SAME_PASSWORD,
    STALE_PASSWORD,
    WRONG_CURRENT_PASSWORD,
)
from prodio.session.base import SessionTimeouts
from prodio.session.redis import RedisSessionStore
from tests.apptest import (
    BASE_URL,
    BOB_PASSWORD,
    FETCH,
    MAX_FAILURES,
    ORIGIN,
    PAGE,
    PASSWORD,
    AppUnderTest,
    VerifyCounter,
    app_with_users,
    form_fields,
    running_app,
    session_cookie_of,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a brand new passphrase"
PATH = "/account/password"


async def signed_in(
    env: AppUnderTest, stack: AsyncExitStack, name: str = "alice", password: str = PASSWORD
) -> httpx.AsyncClient:
    """A new browser of ``env``'s app, signed in."""
    client = await stack.enter_async_context(env.new_client())
    response = await env.login(name, password, client=client)
    assert response.status_code == 303, response.text
    return client


async def change(
    client: httpx.AsyncClient,
    current: str = PASSWORD,
    new: str = NEW_PASSWORD,
    *,
    repeat: str | None = None,
    sign_out_others: bool = True,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Fill in and send the change form of ``client``'s session."""
    if token is None:
        token = form_fields((await client.get(PATH, headers=PAGE)).text)["csrf_token"]
    data = {
        "csrf_token": token,
        "current_password": current,
        "new_password": new,
        "confirm_password": new if repeat is None else repeat,
    }
    if sign_out_others:
        data["sign_out_others"] = "yes"
    return await client.post(PATH, data=data, headers=headers or {**PAGE, **ORIGIN})


async def status_of(client: httpx.AsyncClient) -> int:
    return (await client.get("/api/session", headers=FETCH)).status_code


def password_is(env: AppUnderTest, name: str, password: str) -> bool:
    user = env.users.get(name)
    assert user is not None
    return env.hasher.verify(user.password_hash, password)


# --- the page -----------------------------------------------------------------------------


async def test_the_page_needs_a_session(env: AppUnderTest) -> None:
    page = await env.client.get(PATH, headers=PAGE)
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next={PATH}"
    post = await env.client.post(PATH, data={"current_password": PASSWORD}, headers=FETCH)
    assert post.status_code == 401
    assert password_is(env, "alice", PASSWORD)


async def test_the_page_is_a_scriptless_form_with_a_session_bound_token(
    env: AppUnderTest,
) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        page = await alice.get(PATH, headers=PAGE)
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == PRODIO_PAGE_POLICY
    assert page.headers["cache-control"] == "no-store"
    fields = form_fields(page.text)
    assert fields["csrf_token"]
    assert {"current_password", "new_password", "confirm_password", "sign_out_others"} <= set(
        fields
    )
    assert 'autocomplete="current-password"' in page.text
    assert page.text.count('autocomplete="new-password"') == 2
    # Ticked unless the user unticks it; no maxlength, which browsers enforce by truncating.
    assert 'value="yes" checked' in page.text
    assert "maxlength" not in page.text.split('id="password-current"')[1].split(">")[0]
    assert "<script" not in page.text


async def test_the_account_tab_links_to_the_page(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        config = (await alice.get("/config", headers=FETCH)).json()
    links = [
        component["props"].get("link")
        for component in config["components"]
        if component.get("type") == "button"
    ]
    assert PATH in links


# --- a change, and the sessions after it ---------------------------------------------------


async def test_a_change_renews_this_browsers_session(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        old_cookie = alice.cookies.get("prodio_session")
        response = await change(alice)
        assert response.status_code == 303
        assert response.headers["location"] == PATH
        new_cookie = session_cookie_of(response)
        assert new_cookie
        assert new_cookie != old_cookie
        assert await status_of(alice) == 200
        confirmed = await alice.get(PATH, headers=PAGE)
        assert "Your password was changed" in confirmed.text
        # The session id known before the change is worthless after it.
        replay = await stack.enter_async_context(env.new_client())
        replay.cookies.set("prodio_session", old_cookie or "")
        assert await status_of(replay) == 401
    assert password_is(env, "alice", NEW_PASSWORD)
    assert not password_is(env, "alice", PASSWORD)
    async with env.new_client() as again:
        assert (await env.login("alice", PASSWORD, client=again)).status_code == 401
        assert (await env.login("alice", NEW_PASSWORD, client=again)).status_code == 303


@pytest.mark.parametrize("recheck", [0, 30])
async def test_signing_out_the_other_sessions_ends_them(tmp_path: Path, recheck: int) -> None:
    async with (
        app_with_users(tmp_path, account_recheck_interval=recheck) as env,
        AsyncExitStack() as stack,
    ):
        laptop = await signed_in(env, stack)
        phone = await signed_in(env, stack)
        bob = await signed_in(env, stack, "bob", BOB_PASSWORD)
        assert (await change(laptop, sign_out_others=True)).status_code == 303
        assert await status_of(laptop) == 200
        assert await status_of(phone) == 401
        assert await status_of(bob) == 200


@pytest.mark.parametrize("recheck", [0, 30])
async def test_keeping_the_other_sessions_keeps_them(tmp_path: Path, recheck: int) -> None:
    # recheck=0: every request re-reads the account, so a session that only survived
    # because nobody looked at the account again would show here.
    async with (
        app_with_users(tmp_path, account_recheck_interval=recheck) as env,
        AsyncExitStack() as stack,
    ):
        laptop = await signed_in(env, stack)
        phone = await signed_in(env, stack)
        old_laptop_cookie = laptop.cookies.get("prodio_session")
        assert (await change(laptop, sign_out_others=False)).status_code == 303
        for _ in range(3):
            assert await status_of(laptop) == 200
            assert await status_of(phone) == 200
        # This browser's own old session id is still ended: renewal is not optional.
        async with env.new_client() as replay:
            replay.cookies.set("prodio_session", old_laptop_cookie or "")
            assert await status_of(replay) == 401
        # An administrator's reset still ends them all (a new epoch).
        env.users.set_password_hash("alice", env.hasher.hash("an admin's new password"))
        if recheck == 0:
            assert await status_of(phone) == 401
            assert await status_of(laptop) == 401


async def test_sessions_held_by_another_instance_end_at_its_next_look(tmp_path: Path) -> None:
    """Two instances with sessions in their own memory and one user database: the other
    instance cannot be reached to delete its sessions, the account's new epoch ends them."""
    async with (
        app_with_users(tmp_path, account_recheck_interval=0) as first,
        running_app(tmp_path, account_recheck_interval=0) as second,
        AsyncExitStack() as stack,
    ):
        here = await signed_in(first, stack)
        kept = await signed_in(second, stack)
        assert (await change(here, sign_out_others=False)).status_code == 303
        assert await status_of(kept) == 200
        ended = await signed_in(second, stack, password=NEW_PASSWORD)
        assert (await change(here, NEW_PASSWORD, "third passphrase here")).status_code == 303
        assert await status_of(kept) == 401
        assert await status_of(ended) == 401
        assert await status_of(here) == 200


def redis_store(url: str) -> RedisSessionStore:
    return RedisSessionStore.from_url(url, SessionTimeouts(1800, 28800), socket_timeout=2.0)


@pytest.mark.parametrize("sign_out_others", [True, False])
async def test_two_instances_on_redis(
    tmp_path: Path, clean_redis: RedisServer, sign_out_others: bool
) -> None:
    url = clean_redis.url
    redis_settings: dict[str, Any] = {"session_backend": "redis", "redis_url": url}
    async with (
        app_with_users(tmp_path, sessions=redis_store(url), **redis_settings) as first,
        running_app(tmp_path, sessions=redis_store(url), **redis_settings) as second,
        AsyncExitStack() as stack,
    ):
        here = await signed_in(first, stack)
        there = await signed_in(second, stack)
        response = await change(here, sign_out_others=sign_out_others)
        assert response.status_code == 303
        # Ended at once on the other instance too (no recheck interval to wait for).
        assert await status_of(there) == (200 if not sign_out_others else 401)
        assert await status_of(here) == 200


# --- what is refused ----------------------------------------------------------------------


async def test_the_current_password_is_required(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        cookie = alice.cookies.get("prodio_session")
        for wrong in ("not it", "", "p" * 5000):
            response = await change(alice, current=wrong)
            assert response.status_code == 403
            assert WRONG_CURRENT_PASSWORD in response.text
            # Still signed in, same session: a typo does not sign anyone out.
            assert alice.cookies.get("prodio_session") == cookie
            assert await status_of(alice) == 200
    assert password_is(env, "alice", PASSWORD)


async def test_the_change_page_cannot_be_used_to_guess_the_password(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stolen session must not give more guesses than the login page: the current
    password is checked through the same throttle, under the same account."""
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        verify = VerifyCounter(env, monkeypatch)
        for index in range(MAX_FAILURES):
            assert (await change(alice, current=f"guess {index}")).status_code == 403
        locked = await change(alice, current=PASSWORD)
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["retry-after"]) <= 900
        assert "Too many failed sign-in attempts" in locked.text
        assert verify.calls == MAX_FAILURES
        # The same counter as the login page: the account is locked there too.
        newcomer = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=env.app, client=("192.0.2.50", 1)),
                base_url=BASE_URL,
            )
        )
        assert (await env.login("alice", PASSWORD, client=newcomer)).status_code == 429
    assert password_is(env, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("new", "repeat", "message"),
    [
        (NEW_PASSWORD, NEW_PASSWORD + "x", PASSWORDS_DIFFER),
        ("short", None, "8 to 1024 characters"),
        ("password123", None, "most common passwords"),
        (PASSWORD, None, SAME_PASSWORD),
        ("x" * 1025, None, "this one has 1025"),
    ],
)
async def test_the_new_password_must_meet_the_policy(
    env: AppUnderTest,
    monkeypatch: pytest.MonkeyPatch,
    new: str,
    repeat: str | None,
    message: str,
) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        verify = VerifyCounter(env, monkeypatch)
        response = await change(alice, new=new, repeat=repeat)
        assert response.status_code == 400
        assert message in response.text
        # Refused before the current password is looked at: no attempt spent, no hash.
        assert verify.calls == 0
        assert await status_of(alice) == 200
    assert password_is(env, "alice", PASSWORD)


async def test_the_user_name_is_refused_as_the_new_password(env: AppUnderTest) -> None:
    env.add_user("alexandria", PASSWORD)
    async with AsyncExitStack() as stack:
        alexandria = await signed_in(env, stack, "alexandria")
        for name in ("alexandria", " ALEXANDRIA  "):
            response = await change(alexandria, new=name)
            assert response.status_code == 400
            assert "must not be the user name" in response.text
    assert password_is(env, "alexandria", PASSWORD)


async def test_long_passwords_are_not_truncated(env: AppUnderTest) -> None:
    long_password = "correct horse " * 73  # 1022 characters
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        assert (await change(alice, new=long_password)).status_code == 303
    assert password_is(env, "alice", long_password)
    assert not password_is(env, "alice", long_password[:-1])


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"current_password": "x"}', "application/json"),
        (b"new_password=" + b"x" * 20_000, "application/x-www-form-urlencoded"),
        (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    ],
)
async def test_malformed_bodies_get_a_clean_4xx(
    env: AppUnderTest, content: bytes, content_type: str
) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        response = await alice.post(
            PATH, content=content, headers={"content-type": content_type, **ORIGIN}
        )
    assert 400 <= response.status_code < 500
    assert "Traceback" not in response.text
    assert password_is(env, "alice", PASSWORD)


async def test_forged_requests_change_nothing(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        bob = await signed_in(env, stack, "bob", BOB_PASSWORD)
        bobs_token = form_fields((await bob.get(PATH, headers=PAGE)).text)["csrf_token"]
        attempts = [
            await change(alice, token=""),
            await change(alice, token="forged.token"),
            # A valid token, but bound to bob's session.
            await change(alice, token=bobs_token),
            await change(alice, headers={"origin": "http://evil.example"}),
            await change(alice, headers={"sec-fetch-site": "cross-site", **ORIGIN}),
        ]
        assert [response.status_code for response in attempts] == [403] * 5
        assert await status_of(alice) == 200
    assert password_is(env, "alice", PASSWORD)


async def test_an_administrators_reset_meanwhile_is_not_overwritten(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        original = env.services.passwords.authenticate

        async def reset_right_after_the_check(username: str, password: str) -> Any:
            user = await original(username, password)
            env.users.set_password_hash("alice", env.hasher.hash("the admin's choice 42"))
            return user

        monkeypatch.setattr(env.services.passwords, "authenticate", reset_right_after_the_check)
        response = await change(alice)
        assert response.status_code == 409
        assert STALE_PASSWORD in response.text
    assert password_is(env, "alice", "the admin's choice 42")


# --- a password someone else chose ----------------------------------------------------------


async def test_a_temporary_password_must_be_changed_before_anything_else(
    env: AppUnderTest,
) -> None:
    env.users.add("carol", env.hasher.hash("temporary pass 1"), must_change_password=True)
    async with AsyncExitStack() as stack:
        other = await signed_in(env, stack, "carol", "temporary pass 1")
        carol = await stack.enter_async_context(env.new_client())
        login = await env.login("carol", "temporary pass 1", client=carol, next_path="/api/session")
        assert login.status_code == 303
        assert login.headers["location"] == PATH

        for path in ("/", "/?tab=notepad", "/config", "/api/session"):
            page = await carol.get(path, headers=PAGE)
            assert (page.status_code, page.headers["location"]) == (303, PATH), path
        api = await carol.get("/api/session", headers=FETCH)
        assert api.status_code == 403
        assert api.json() == {"detail": "password change required", "password_change_url": PATH}
        gradio = await carol.post("/gradio_api/queue/join", json={}, headers={**FETCH, **ORIGIN})
        assert gradio.status_code == 403
        # What stays open: the change page, logout, static files, health.
        for path in (PATH, "/logout", "/static/prodio.css", "/healthz"):
            assert (await carol.get(path, headers=PAGE)).status_code == 200, path

        page = await carol.get(PATH, headers=PAGE)
        assert "Choose a new password" in page.text
        assert "sign_out_others" not in form_fields(page.text)
        # The box cannot be unticked: sessions opened with a known password all end.
        done = await change(carol, "temporary pass 1", sign_out_others=False)
        assert done.status_code == 303
        assert done.headers["location"] == "/"
        assert (await carol.get("/", headers=PAGE)).status_code == 200
        assert await status_of(carol) == 200
        assert await status_of(other) == 401
    user = env.users.get("carol")
    assert user is not None
    assert user.must_change_password is False
    assert password_is(env, "carol", NEW_PASSWORD)


# --- the audit log ------------------------------------------------------------------------


def events(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [record for record in caplog.records if record.name == "prodio.audit"]


async def test_changes_and_refusals_are_audited(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prodio.audit")
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        await signed_in(env, stack)
        await change(alice, current="wrong one")
        await change(alice, new="short")
        caplog.clear()
        await change(alice, sign_out_others=True)
    recorded = [(r.event, r.outcome, r.user) for r in events(caplog)]
    assert recorded == [
        ("password.change", "success", "alice"),
        ("session.renewed", "success", "alice"),
        ("session.revoked", "success", "alice"),
    ]
    success, renewed, revoked = events(caplog)
    assert success.kept_other_sessions is False
    assert success.other_sessions_ended == 1
    assert success.forced is False
    assert renewed.session == success.session
    assert renewed.previous_session != renewed.session
    assert revoked.sessions_ended == 1


async def test_failures_are_audited_without_the_passwords(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prodio.audit")
    async with AsyncExitStack() as stack:
        alice = await signed_in(env, stack)
        caplog.clear()
        await change(alice, current="wrong one")
        await change(alice, new="short")
    failures = [r for r in events(caplog) if r.event == "password.change"]
    assert [(r.outcome, r.reason) for r in failures] == [
        ("failure", "wrong current password"),
        ("failure", "password policy"),
    ]
    assert failures[0].account_failures == 1
    assert all(r.levelno == logging.WARNING for r in failures)
    assert "wrong one" not in caplog.text
    assert PASSWORD not in caplog.text
