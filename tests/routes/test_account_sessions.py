"""``/account/sessions``: a user sees their live sessions and ends any or all of them
(ASVS 7.5.2), through the whole app.

Real stores throughout: the SQLite user database of the app under test, in-memory sessions,
and two instances sharing a real redis-server. Each browser is an httpx client with its own
cookie jar, client address and user agent.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from prodio.middleware.headers import PRODIO_PAGE_POLICY
from prodio.middleware.logging import SessionTagger
from prodio.routes.account import (
    SESSION_NOT_FOUND,
    SESSIONS_UNAVAILABLE,
    WRONG_CURRENT_PASSWORD,
)
from prodio.routes.login import (
    MAX_USER_AGENT_LENGTH,
    SESSION_CLIENT_ADDRESS,
    SESSION_USER_AGENT,
    STALE_FORM_ERROR,
    user_agent_label,
)
from prodio.session.base import SessionStoreUnavailable, SessionTimeouts
from prodio.session.handles import SessionHandles
from prodio.session.redis import RedisSessionStore
from tests.apptest import (
    BASE_URL,
    BOB_PASSWORD,
    FETCH,
    MAX_FAILURES,
    ORIGIN,
    PAGE,
    PASSWORD,
    SECRET,
    AppUnderTest,
    VerifyCounter,
    app_with_users,
    form_fields,
    running_app,
    session_cookie_of,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

PATH = "/account/sessions"
HANDLES = SessionHandles(SECRET.encode())
LAPTOP = ("192.0.2.10", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
PHONE = ("198.51.100.7", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1")
TABLET = ("2001:db8::42", "Mozilla/5.0 (Linux; Android 14; Tablet) Chrome/126.0")
BOBS = ("203.0.113.99", "bob's very own browser/1.0")


# --- helpers --------------------------------------------------------------------------------


async def browser(
    env: AppUnderTest,
    stack: AsyncExitStack,
    device: tuple[str, str | bytes] = LAPTOP,
    name: str = "alice",
    password: str = PASSWORD,
) -> httpx.AsyncClient:
    """A new browser of ``env``'s app at ``device`` (address, user agent), signed in."""
    address, user_agent = device
    client = await stack.enter_async_context(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=env.app, client=(address, 50_000)),
            base_url=BASE_URL,
            headers={"user-agent": user_agent},
        )
    )
    response = await env.login(name, password, client=client)
    assert response.status_code == 303, response.text
    return client


def session_id_of(env: AppUnderTest, client: httpx.AsyncClient) -> str:
    """The id of the session ``client``'s cookie names (the test may know it; pages may not)."""
    return env.services.tokens.verify(client.cookies["prodio_session"]).session_id


def handle_of(env: AppUnderTest, client: httpx.AsyncClient) -> str:
    return HANDLES.of(session_id_of(env, client))


class _Forms(HTMLParser):
    """Every form of a page, as the fields it would send (the sessions page has several)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self._current: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self._current = {}
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and attributes.get("name"):
            self._current[attributes["name"] or ""] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms_of(html: str) -> list[dict[str, str]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def listed_handles(html: str) -> list[str]:
    """The handles of the sessions a page offers to end, in page order."""
    return [form["handle"] for form in forms_of(html) if form.get("action") == "end"]


def current_handle(html: str) -> str:
    [handle] = re.findall(r'<li id="session-([0-9a-f]+)" aria-current="true">', html)
    return handle


async def sessions_page(client: httpx.AsyncClient) -> httpx.Response:
    page = await client.get(PATH, headers=PAGE)
    assert page.status_code == 200, page.text
    return page


async def end(
    client: httpx.AsyncClient,
    handle: str | None = None,
    *,
    password: str = PASSWORD,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    action: str | None = None,
) -> httpx.Response:
    """Send the sessions form: end the session ``handle`` names, or (None) all the others."""
    if token is None:
        token = form_fields((await sessions_page(client)).text)["csrf_token"]
    data = {"csrf_token": token, "current_password": password, "username": "alice"}
    if handle is None:
        data["action"] = "end_others" if action is None else action
    else:
        data.update(action="end" if action is None else action, handle=handle)
    return await client.post(PATH, data=data, headers=headers or {**PAGE, **ORIGIN})


async def status_of(client: httpx.AsyncClient) -> int:
    return (await client.get("/api/session", headers=FETCH)).status_code


def audit_events(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [record for record in caplog.records if record.name == "prodio.audit"]


# --- the page -------------------------------------------------------------------------------


async def test_the_page_needs_a_session(env: AppUnderTest) -> None:
    page = await env.client.get(PATH, headers=PAGE)
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next={PATH}"
    post = await env.client.post(PATH, data={"action": "end_others"}, headers=FETCH)
    assert post.status_code == 401


async def test_the_page_is_a_scriptless_form_with_a_session_bound_token(
    env: AppUnderTest,
) -> None:
    async with AsyncExitStack() as stack:
        alice = await browser(env, stack)
        await browser(env, stack, PHONE)
        page = await sessions_page(alice)
    assert page.headers["content-security-policy"] == PRODIO_PAGE_POLICY
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text
    forms = forms_of(page.text)
    # One per session, and one for all the others.
    assert [form["action"] for form in forms] == ["end", "end", "end_others"]
    for form in forms:
        assert form["csrf_token"]
        assert "current_password" in form
    assert page.text.count('autocomplete="current-password"') == 3
    assert 'method="post" action="/account/sessions"' in page.text


async def test_the_page_lists_exactly_this_users_live_sessions(tmp_path: Path) -> None:
    # Ahead of the real clock: the account's password dates from "before" these sessions.
    now = [time.time() + 10]
    async with (
        app_with_users(
            tmp_path, session_idle_timeout=600, session_absolute_timeout=3600, clock=lambda: now[0]
        ) as env,
        AsyncExitStack() as stack,
    ):
        expired = await browser(env, stack, TABLET)
        now[0] += 300
        laptop = await browser(env, stack, LAPTOP)
        phone = await browser(env, stack, PHONE)
        logged_out = await browser(env, stack, TABLET)
        logout_token = form_fields((await logged_out.get("/logout", headers=PAGE)).text)
        ended = await logged_out.post("/logout", data=logout_token, headers={**PAGE, **ORIGIN})
        assert ended.status_code == 303
        bob = await browser(env, stack, BOBS, "bob", BOB_PASSWORD)
        expired_handle = handle_of(env, expired)
        now[0] += 301  # the first session has now been idle for longer than 600 s

        page = await sessions_page(laptop)

        assert sorted(listed_handles(page.text)) == sorted(
            [handle_of(env, laptop), handle_of(env, phone)]
        )
        assert current_handle(page.text) == handle_of(env, laptop)
        assert page.text.count("This session") == 1
        for address, user_agent in (LAPTOP, PHONE):
            assert address in page.text
            assert user_agent in page.text
        # Nothing of the dead sessions, nor of another user's.
        assert expired_handle not in page.text
        assert TABLET[0] not in page.text
        assert BOBS[0] not in page.text
        assert BOBS[1].replace("'", "&#39;") not in page.text
        assert handle_of(env, bob) not in page.text
        bobs_page = await sessions_page(bob)
        assert listed_handles(bobs_page.text) == [handle_of(env, bob)]
        assert LAPTOP[0] not in bobs_page.text


async def test_no_session_id_appears_in_pages_urls_forms_or_logs(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with AsyncExitStack() as stack:
        alice = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        tablet = await browser(env, stack, TABLET)
        bob = await browser(env, stack, BOBS, "bob", BOB_PASSWORD)
        ids = [session_id_of(env, client) for client in (alice, phone, tablet, bob)]
        seen = [(await sessions_page(alice)).text]
        wrong = await end(alice, handle_of(env, phone), password="not it")
        ended = await end(alice, handle_of(env, phone))
        seen += [wrong.text, ended.headers["location"], (await sessions_page(alice)).text]
        others = await end(alice)
        seen += [others.headers["location"], (await sessions_page(alice)).text]
        assert ended.status_code == others.status_code == 303
    for session_id in ids:
        for text in seen:
            assert session_id not in text
        assert session_id not in caplog.text
    # The handles are not the log's tags either: one cannot be matched with the other.
    tagger = SessionTagger(SECRET.encode())
    assert tagger.tag(ids[0]) not in HANDLES.of(ids[0])


# --- ending sessions ------------------------------------------------------------------------


async def test_ending_one_session_ends_it_and_leaves_the_others(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        tablet = await browser(env, stack, TABLET)
        bob = await browser(env, stack, BOBS, "bob", BOB_PASSWORD)

        response = await end(laptop, handle_of(env, phone))

        assert response.status_code == 303
        assert response.headers["location"] == f"{PATH}?ended=1"
        # Ended: its cookie now leads to the login page.
        assert await status_of(phone) == 401
        page_load = await phone.get("/", headers=PAGE)
        assert page_load.status_code == 303
        assert page_load.headers["location"] == "/login"
        for kept in (laptop, tablet, bob):
            assert await status_of(kept) == 200
        after = await laptop.get(response.headers["location"], headers=PAGE)
        assert "1 session was ended." in after.text
        assert sorted(listed_handles(after.text)) == sorted(
            [handle_of(env, laptop), handle_of(env, tablet)]
        )


async def test_ending_this_session_signs_this_browser_out(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        old_cookie = laptop.cookies["prodio_session"]

        response = await end(laptop, handle_of(env, laptop))

        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        assert response.headers["clear-site-data"] == '"cookies"'
        set_cookies = response.headers.get_list("set-cookie")
        assert any(c.startswith('prodio_session=""') and "Max-Age=0" in c for c in set_cookies)
        assert any(c.startswith('prodio_csrf=""') and "Max-Age=0" in c for c in set_cookies)
        assert await status_of(laptop) == 401
        async with env.new_client() as replay:
            replay.cookies.set("prodio_session", old_cookie)
            assert await status_of(replay) == 401
        assert await status_of(phone) == 200


async def test_ending_all_other_sessions_keeps_this_one(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        others = [await browser(env, stack, device) for device in (PHONE, TABLET, LAPTOP)]
        bob = await browser(env, stack, BOBS, "bob", BOB_PASSWORD)
        cookie = laptop.cookies["prodio_session"]

        response = await end(laptop)

        assert response.status_code == 303
        assert response.headers["location"] == f"{PATH}?ended=3"
        assert session_cookie_of(response) is None
        assert laptop.cookies["prodio_session"] == cookie
        assert await status_of(laptop) == 200
        for other in others:
            assert await status_of(other) == 401
        assert await status_of(bob) == 200
        page = await laptop.get(response.headers["location"], headers=PAGE)
        assert "3 sessions were ended." in page.text
        assert listed_handles(page.text) == [handle_of(env, laptop)]
        assert "This is your only session." in page.text
        assert "end_others" not in page.text


@pytest.mark.parametrize(
    "handle",
    [
        "0" * 32,
        "",
        "not a handle",
        "F" * 32,
        "a" * 1_000,
        "é" * 32,
        "<script>alert(1)</script>",
        "bob's",
        "ended",
        "raw id",
    ],
)
async def test_a_handle_that_names_none_of_this_users_sessions_changes_nothing(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch, handle: str
) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        bob = await browser(env, stack, BOBS, "bob", BOB_PASSWORD)
        if handle == "bob's":
            handle = listed_handles((await sessions_page(bob)).text)[0]
        elif handle == "ended":
            gone = await browser(env, stack, TABLET)
            handle = handle_of(env, gone)
            assert await env.sessions.delete(session_id_of(env, gone))
        elif handle == "raw id":
            # The id itself is no handle: ids are never accepted from a form.
            handle = session_id_of(env, phone)
        verify = VerifyCounter(env, monkeypatch)

        response = await end(laptop, handle)

        assert response.status_code == 404
        assert SESSION_NOT_FOUND in response.text
        assert "Traceback" not in response.text
        # Told before the password is looked at: no guess spent, no hash computed.
        assert verify.calls == 0
        for kept in (laptop, phone, bob):
            assert await status_of(kept) == 200


async def test_a_wrong_password_ends_nothing_and_is_throttled(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stolen session must not end the owner's other sessions, nor guess the password
    faster than the login page allows: the same throttle, the same account counter."""
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        phone_handle = handle_of(env, phone)
        verify = VerifyCounter(env, monkeypatch)
        for index in range(MAX_FAILURES):
            guess = f"guess {index}"
            refused = await (
                end(laptop, phone_handle, password=guess)
                if index % 2
                else end(laptop, password=guess)
            )
            assert refused.status_code == 403
            assert WRONG_CURRENT_PASSWORD in refused.text
            assert await status_of(phone) == 200
            if index % 2:
                # The refused form is shown open again, so the user sees where to retype.
                assert refused.text.count("<details open>") == 1
                row = refused.text.split(f'id="session-{phone_handle}"')[1].split("</li>")[0]
                assert "<details open>" in row
                assert "autofocus" in row
        assert verify.calls == MAX_FAILURES
        locked = await end(laptop, phone_handle)
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["retry-after"]) <= 900
        assert "Too many failed sign-in attempts" in locked.text
        assert verify.calls == MAX_FAILURES
        assert await status_of(phone) == 200
        assert await status_of(laptop) == 200
        # The same counter as the login page: the account is locked there too.
        newcomer = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=env.app, client=("192.0.2.50", 1)),
                base_url=BASE_URL,
            )
        )
        assert (await env.login("alice", PASSWORD, client=newcomer)).status_code == 429


async def test_forged_requests_change_nothing(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        bob = await browser(env, stack, BOBS, "bob", BOB_PASSWORD)
        bobs_token = form_fields((await sessions_page(bob)).text)["csrf_token"]
        phone_handle = handle_of(env, phone)
        attempts = [
            await end(laptop, phone_handle, token=""),
            await end(laptop, phone_handle, token="forged.token"),
            # A genuine token, but bound to bob's session.
            await end(laptop, phone_handle, token=bobs_token),
            await end(laptop, token=bobs_token),
            await end(laptop, phone_handle, headers={"origin": "http://evil.example"}),
            await end(laptop, headers={"sec-fetch-site": "cross-site", **ORIGIN}),
            await end(laptop, phone_handle, headers={"origin": "null"}),
        ]
        assert [response.status_code for response in attempts] == [403] * len(attempts)
        for kept in (laptop, phone, bob):
            assert await status_of(kept) == 200
        missing = await laptop.post(
            PATH,
            data={"action": "end", "handle": phone_handle, "current_password": PASSWORD},
            headers={**PAGE, **ORIGIN},
        )
        assert missing.status_code == 403
        assert STALE_FORM_ERROR in missing.text
        assert await status_of(phone) == 200


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"action": "end_others"}', "application/json"),
        (
            b"action=end_others&current_password=" + b"x" * 20_000,
            "application/x-www-form-urlencoded",
        ),
        (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
        (b"", "text/plain"),
    ],
)
async def test_malformed_bodies_get_a_clean_4xx(
    env: AppUnderTest, content: bytes, content_type: str
) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        response = await laptop.post(
            PATH, content=content, headers={"content-type": content_type, **ORIGIN}
        )
        assert 400 <= response.status_code < 500
        assert "Traceback" not in response.text
        assert await status_of(phone) == 200


@pytest.mark.parametrize("action", ["", "end_all", "END", "end_others "])
async def test_an_unknown_action_changes_nothing(env: AppUnderTest, action: str) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        response = await end(laptop, handle_of(env, phone), action=action)
        assert response.status_code == 400
        assert STALE_FORM_ERROR in response.text
        assert await status_of(phone) == 200


@pytest.mark.parametrize(
    ("ended", "shown"),
    [
        ("0", "No session was ended"),
        ("1", "1 session was ended."),
        ("12", "12 sessions were ended."),
        ("", None),
        ("-1", None),
        ("²", None),
        ("1" * 7, None),
        ("<b>", None),
    ],
)
async def test_the_confirmation_shows_a_count_and_nothing_else(
    env: AppUnderTest, ended: str, shown: str | None
) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        page = await laptop.get(PATH, params={"ended": ended}, headers=PAGE)
    assert page.status_code == 200
    if shown is None:
        assert 'id="sessions-ended"' not in page.text
    else:
        assert shown in page.text
    assert "<b>" not in page.text


# --- what a session records so that its user recognises it ----------------------------------


async def test_a_session_records_its_browser_and_address(env: AppUnderTest) -> None:
    # Raw bytes, as a hostile client may send them: escape sequences, a right-to-left
    # override (in UTF-8), a tab, and far too many of them.
    noisy = "Mozilla/5.0\x00 (evil\x1b[31m)\u202e\tgpj.exe  ".encode() + b"x" * 500
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack, ("192.0.2.77", noisy))
        session = await env.sessions.load(session_id_of(env, laptop), touch=False)
    assert session is not None
    recorded = session.data[SESSION_USER_AGENT]
    # The server hands the app header bytes decoded as Latin-1.
    assert recorded == user_agent_label(noisy.decode("latin-1"))
    assert recorded.startswith("Mozilla/5.0 (evil[31m)")
    assert recorded.endswith("x")
    assert len(recorded) == MAX_USER_AGENT_LENGTH
    assert not any(unicodedata.category(character).startswith("C") for character in recorded)
    assert session.data[SESSION_CLIENT_ADDRESS] == "192.0.2.77"


async def test_the_session_a_password_change_makes_records_them_too(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        phone = await browser(env, stack, PHONE)
        page = await phone.get("/account/password", headers=PAGE)
        changed = await phone.post(
            "/account/password",
            data={
                "csrf_token": form_fields(page.text)["csrf_token"],
                "current_password": PASSWORD,
                "new_password": "a brand new passphrase",
                "confirm_password": "a brand new passphrase",
            },
            headers={**PAGE, **ORIGIN},
        )
        assert changed.status_code == 303
        session = await env.sessions.load(session_id_of(env, phone), touch=False)
    assert session is not None
    assert session.data[SESSION_USER_AGENT] == PHONE[1]
    assert session.data[SESSION_CLIENT_ADDRESS] == PHONE[0]


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        (None, ""),
        ("", ""),
        ("curl/8.5.0", "curl/8.5.0"),
        ("  a\r\nb\tc  ", "a b c"),
        ("\x00\x07\x7f\x85\x9b", ""),
        ("right\u202eleft\u200b", "rightleft"),
        ("é" * 300, "é" * MAX_USER_AGENT_LENGTH),
        ("x" * 199 + " y", "x" * 199),
    ],
)
def test_the_user_agent_is_cleaned_for_display(raw: str | None, label: str) -> None:
    assert user_agent_label(raw) == label


async def test_a_session_without_a_recorded_browser_shows_as_unknown(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        account = env.users.get("alice")
        assert account is not None
        # What a login made before sessions recorded their browser and address left.
        old = await env.sessions.create("alice", {"auth.epoch": account.session_epoch})
        page = await sessions_page(laptop)
    assert HANDLES.of(old.id) in listed_handles(page.text)
    assert page.text.count("<dd>Unknown</dd>") == 2


# --- the way there, and who may not go -------------------------------------------------------


async def test_the_password_page_and_the_account_tab_link_here(env: AppUnderTest) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        password_page = await laptop.get("/account/password", headers=PAGE)
        config = (await laptop.get("/config", headers=FETCH)).json()
    assert f'href="{PATH}"' in password_page.text
    links = [
        component["props"].get("link")
        for component in config["components"]
        if component.get("type") == "button"
    ]
    assert PATH in links


async def test_a_session_that_must_change_its_password_cannot_come_here(
    env: AppUnderTest,
) -> None:
    env.users.add("carol", env.hasher.hash("temporary pass 1"), must_change_password=True)
    async with AsyncExitStack() as stack:
        first = await browser(env, stack, PHONE, "carol", "temporary pass 1")
        carol = await browser(env, stack, LAPTOP, "carol", "temporary pass 1")
        page = await carol.get(PATH, headers=PAGE)
        assert (page.status_code, page.headers["location"]) == (303, "/account/password")
        posted = await carol.post(
            PATH,
            data={"action": "end_others", "current_password": "temporary pass 1"},
            headers={**FETCH, **ORIGIN},
        )
        assert posted.status_code == 403
        assert await status_of(first) == 403  # still there, still only for the change page
        forced_page = await carol.get("/account/password", headers=PAGE)
        assert "Choose a new password" in forced_page.text
        assert f'href="{PATH}"' not in forced_page.text


# --- audit and failures ---------------------------------------------------------------------


async def test_ended_sessions_and_refusals_are_audited(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prodio.audit")
    tagger = SessionTagger(SECRET.encode())
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        tablet = await browser(env, stack, TABLET)
        laptop_tag, phone_tag, tablet_tag = (
            tagger.tag(session_id_of(env, client)) for client in (laptop, phone, tablet)
        )
        caplog.clear()
        await end(laptop, handle_of(env, phone), password="wrong one")
        await end(laptop, "0" * 32)
        await end(laptop, handle_of(env, phone))
        await end(laptop)
        await end(laptop, handle_of(env, laptop))
    recorded = [
        (r.event, r.outcome, getattr(r, "target", None), getattr(r, "ended_session", None))
        for r in audit_events(caplog)
        if r.event in ("session.end", "session.revoked")
    ]
    assert recorded == [
        ("session.end", "failure", None, None),
        ("session.end", "failure", None, None),
        ("session.end", "success", "another session", None),
        ("session.revoked", "success", None, phone_tag),
        ("session.end", "success", "all other sessions", None),
        ("session.revoked", "success", None, tablet_tag),
        ("session.end", "success", "this session", None),
        ("session.revoked", "success", None, laptop_tag),
    ]
    events = [r for r in audit_events(caplog) if r.event in ("session.end", "session.revoked")]
    wrong, unknown = events[0], events[1]
    assert (wrong.reason, wrong.account_failures) == ("wrong current password", 1)
    assert unknown.reason == "unknown session"
    assert all(r.user == "alice" for r in events)
    assert all(r.session == laptop_tag for r in events)
    revoked = [r for r in events if r.event == "session.revoked"]
    assert all((r.sessions_ended, r.reason) == (1, "ended by its user") for r in revoked)
    successes = [r for r in events if r.event == "session.end" and r.outcome == "success"]
    assert [r.sessions_ended for r in successes] == [1, 1, 1]
    assert "wrong one" not in caplog.text
    assert PASSWORD not in caplog.text


async def test_a_store_outage_gives_503_never_500(
    env: AppUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncExitStack() as stack:
        laptop = await browser(env, stack)
        phone = await browser(env, stack, PHONE)
        token = form_fields((await sessions_page(laptop)).text)["csrf_token"]
        phone_handle = handle_of(env, phone)

        async def unreachable(username: str) -> Any:
            raise SessionStoreUnavailable("down")

        monkeypatch.setattr(env.sessions, "list_user_sessions", unreachable)
        page = await laptop.get(PATH, headers=PAGE)
        one = await end(laptop, phone_handle, token=token)
        others = await end(laptop, token=token)
        monkeypatch.undo()
        for response in (page, one, others):
            assert response.status_code == 503
            assert SESSIONS_UNAVAILABLE in response.text
        assert await status_of(phone) == 200


# --- two instances on one Redis -------------------------------------------------------------


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {within} s")
        await anyio.sleep(0.001)


@pytest.mark.parametrize("local_cache_seconds", [0.0, 5.0], ids=["no-cache", "near-cache"])
async def test_a_session_ended_on_one_instance_is_refused_on_the_other(
    tmp_path: Path, clean_redis: RedisServer, local_cache_seconds: float
) -> None:
    url = clean_redis.url

    def store() -> RedisSessionStore:
        return RedisSessionStore.from_url(
            url,
            SessionTimeouts(1800, 28800),
            socket_timeout=2.0,
            local_cache_seconds=local_cache_seconds,
        )

    settings: dict[str, Any] = {"session_backend": "redis", "redis_url": url}
    first_store, second_store = store(), store()
    async with (
        app_with_users(tmp_path, sessions=first_store, **settings) as first,
        running_app(tmp_path, sessions=second_store, **settings) as second,
        AsyncExitStack() as stack,
    ):
        if local_cache_seconds:
            assert await first_store.wait_for_cache()
            assert await second_store.wait_for_cache()
        laptop = await browser(first, stack)
        phone = await browser(second, stack, PHONE)
        tablet = await browser(second, stack, TABLET)
        # Served by the other instance (from its near cache, when it has one).
        assert await status_of(phone) == 200
        assert await status_of(tablet) == 200

        # Sessions made on the other instance are listed here, with what they recorded.
        page = await sessions_page(laptop)
        assert sorted(listed_handles(page.text)) == sorted(
            handle_of(first, client) for client in (laptop, phone, tablet)
        )
        assert PHONE[1] in page.text

        response = await end(laptop, handle_of(first, phone))
        assert response.status_code == 303

        async def refused_there() -> bool:
            return await status_of(phone) == 401

        if local_cache_seconds:
            # As fast as Redis's invalidation message: well under the bound here.
            await _eventually(refused_there)
        else:
            assert await refused_there()
        assert await status_of(tablet) == 200
        assert await status_of(laptop) == 200

        assert (await end(laptop)).status_code == 303
        await _eventually(lambda: _status_is(tablet, 401))
        assert await status_of(laptop) == 200


async def _status_is(client: httpx.AsyncClient, status: int) -> bool:
    return await status_of(client) == status
