"""The audit log: the helper's fields, and one event per security-relevant thing in the app."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from starlette.requests import Request

from prodio.audit import AUDIT_LOGGER, audit, audit_origin_refused
from prodio.logs import JsonFormatter, TextFormatter
from prodio.middleware.logging import SessionTagger
from tests.apptest import (
    FETCH,
    ORIGIN,
    PAGE,
    AppUnderTest,
    form_fields,
    running_app,
    session_cookie_of,
)

PASSWORD = "correct horse battery"
TAGGER = SessionTagger(b"k" * 32)
SESSION_ID = "S" * 43


def scope(**state: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/login",
        "root_path": "",
        "headers": [],
        "client": ("203.0.113.9", 51000),
        "state": state,
    }


def audit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == AUDIT_LOGGER]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    names = ("event", "outcome", "user", "request_id", "session", "client", "path")
    return {name: getattr(record, name) for name in names}


@pytest.fixture(autouse=True)
def _capture_audit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=AUDIT_LOGGER)


# --- the helper ---------------------------------------------------------------------------


def test_an_event_carries_every_common_field(caplog: pytest.LogCaptureFixture) -> None:
    audit(
        "login",
        "success",
        scope(user="alice", session_id=SESSION_ID, request_id="req-1", session_tagger=TAGGER),
        retry_after=3,
    )
    [record] = audit_records(caplog)
    assert fields(record) == {
        "event": "login",
        "outcome": "success",
        "user": "alice",
        "request_id": "req-1",
        "session": TAGGER.tag(SESSION_ID),
        "client": "203.0.113.9",
        "path": "/login",
    }
    assert record.retry_after == 3  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "login success"
    assert SESSION_ID not in json.dumps(vars(record), default=str)


def test_a_request_object_works_as_well(caplog: pytest.LogCaptureFixture) -> None:
    audit("logout", "success", Request(scope(user="bob")))
    [record] = audit_records(caplog)
    assert record.user == "bob"  # type: ignore[attr-defined]
    assert record.session == "-"  # type: ignore[attr-defined]
    assert record.request_id == "-"  # type: ignore[attr-defined]


def test_explicit_user_and_session_ids_win_and_are_tagged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit(
        "session.renewed",
        "success",
        scope(session_tagger=TAGGER, user="someone"),
        user="alice",
        session_id="N" * 43,
        previous_session_id="P" * 43,
    )
    [record] = audit_records(caplog)
    assert record.user == "alice"  # type: ignore[attr-defined]
    assert record.session == TAGGER.tag("N" * 43)  # type: ignore[attr-defined]
    assert record.previous_session == TAGGER.tag("P" * 43)  # type: ignore[attr-defined]


def test_without_a_tagger_a_session_is_never_logged_raw(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit("access.denied", "failure", scope(session_id=SESSION_ID))
    [record] = audit_records(caplog)
    assert record.session == "untagged"  # type: ignore[attr-defined]


def test_failures_are_warnings_unless_told_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    audit("login", "failure", scope())
    audit("access.denied", "failure", scope(), level=logging.INFO)
    assert [r.levelno for r in audit_records(caplog)] == [logging.WARNING, logging.INFO]


def test_control_characters_are_escaped_and_long_text_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = scope()
    request["path"] = "/x\nFAKE audit line\x1b[31m"
    audit("login", "failure", request, user="eve\r\nadmin", reason="r" * 1000 + "\x00")
    [record] = audit_records(caplog)
    assert record.user == "eve\\x0d\\x0aadmin"  # type: ignore[attr-defined]
    assert record.path == "/x\\x0aFAKE audit line\\x1b[31m"  # type: ignore[attr-defined]
    assert len(record.reason) < 250  # type: ignore[attr-defined]
    assert "\x00" not in record.reason  # type: ignore[attr-defined]
    for formatter in (TextFormatter(), JsonFormatter()):
        assert "\n" not in formatter.format(record)


@pytest.mark.parametrize("name", ["client", "session", "message", "msg", "previous_session"])
def test_reserved_field_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        audit("login", "failure", scope(), **{name: "x"})


def test_origin_refusal_event(caplog: pytest.LogCaptureFixture) -> None:
    request = scope(user="alice", session_id=SESSION_ID, session_tagger=TAGGER)
    request["headers"] = [
        (b"origin", b"https://evil.example\n"),
        (b"sec-fetch-site", b"cross-site"),
    ]
    audit_origin_refused(request)
    socket = {**request, "type": "websocket"}
    audit_origin_refused(socket)
    http, ws = audit_records(caplog)
    assert (http.event, http.outcome, http.status, http.method) == (  # type: ignore[attr-defined]
        "origin.rejected",
        "failure",
        403,
        "POST",
    )
    assert http.origin == "https://evil.example\\x0a"  # type: ignore[attr-defined]
    assert http.fetch_site == "cross-site"  # type: ignore[attr-defined]
    assert http.session == TAGGER.tag(SESSION_ID)  # type: ignore[attr-defined]
    assert (ws.status, ws.method) == (1008, "WEBSOCKET")  # type: ignore[attr-defined]


def test_json_lines_carry_a_utc_time(caplog: pytest.LogCaptureFixture) -> None:
    audit("logout", "success", scope(user="alice"))
    [record] = audit_records(caplog)
    line = json.loads(JsonFormatter().format(record))
    assert line["time"].endswith("+00:00")
    assert {line[k] for k in ("event", "outcome", "user")} == {"logout", "success", "alice"}


# --- through the app ----------------------------------------------------------------------


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AppUnderTest]:
    async with running_app(tmp_path, account_recheck_interval=0) as app_env:
        app_env.add_user("alice", PASSWORD)
        app_env.add_user("bob", "bob's password 123")
        yield app_env


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.event, r.outcome) for r in audit_records(caplog)]  # type: ignore[attr-defined]


def last(caplog: pytest.LogCaptureFixture, event: str) -> Any:
    return [r for r in audit_records(caplog) if r.event == event][-1]  # type: ignore[attr-defined]


def request_log_tag(caplog: pytest.LogCaptureFixture) -> str:
    records = [r for r in caplog.records if r.name == "prodio.request"]
    return str(records[-1].session)  # type: ignore[attr-defined]


def logged_anywhere(caplog: pytest.LogCaptureFixture, value: str) -> bool:
    """Whether ``value`` is in any captured record: message, fields or exception."""
    return any(value in json.dumps(vars(r), default=str) for r in caplog.records)


def session_id_of(cookie: str) -> str:
    return str(jwt.decode(cookie, options={"verify_signature": False})["sid"])


@pytest.mark.anyio
async def test_login_logout_and_session_events(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await env.login("alice", PASSWORD)
    first_id = session_id_of(session_cookie_of(first) or "")
    assert ("login", "success") in events(caplog)
    created = last(caplog, "session.created")
    assert created.user == "alice"
    assert created.request_id == first.headers["x-request-id"]
    assert created.client == "127.0.0.1"
    # The audit log and the request log name a session alike, and never by its id.
    await env.client.get("/api/session", headers=FETCH)
    assert created.session == request_log_tag(caplog)
    assert not logged_anywhere(caplog, first_id)

    second = await env.login("alice", PASSWORD)
    renewed = last(caplog, "session.renewed")
    assert renewed.previous_session == created.session
    assert renewed.previous_user == "alice"
    assert renewed.session != created.session

    caplog.clear()
    token = form_fields((await env.client.get("/logout", headers=PAGE)).text)["csrf_token"]
    await env.client.post("/logout", data={"csrf_token": token}, headers=ORIGIN)
    logout = last(caplog, "logout")
    assert (logout.outcome, logout.user, logout.session) == ("success", "alice", renewed.session)

    # The cookie of the ended session, played back: a dead session, audited.
    async with env.new_client() as replay:
        replay.cookies.set("prodio_session", session_cookie_of(second) or "")
        await replay.get("/api/session", headers=FETCH)
    expired = last(caplog, "session.expired")
    assert (expired.user, expired.session) == ("alice", renewed.session)
    assert expired.outcome == "failure"


@pytest.mark.anyio
async def test_failed_login_events_name_the_account_or_nobody(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    await env.login(" ALICE ", "wrong password")
    await env.login("no such\nuser", "wrong password")
    failures = [r for r in audit_records(caplog) if r.event == "login"]  # type: ignore[attr-defined]
    assert [(r.outcome, r.user) for r in failures] == [  # type: ignore[attr-defined]
        ("failure", "alice"),
        ("failure", "(invalid name)"),
    ]
    assert failures[0].levelno == logging.WARNING
    assert failures[0].account_failures == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_csrf_rejections_are_audited(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    await env.client.get("/login")
    await env.client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": "forged.x"},
        headers=ORIGIN,
    )
    rejected = last(caplog, "csrf.rejected")
    assert (rejected.path, rejected.status, rejected.reason) == ("/login", 403, "bad CSRF token")
    assert rejected.user == "alice"

    await env.login("alice", PASSWORD)
    await env.client.post("/logout", data={"csrf_token": "forged.x"}, headers=ORIGIN)
    rejected = last(caplog, "csrf.rejected")
    assert (rejected.path, rejected.user) == ("/logout", "alice")
    assert rejected.session != "-"


@pytest.mark.anyio
async def test_forged_cookies_and_denials_are_audited(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    forged = jwt.encode({"sub": "alice", "sid": "x" * 43}, "not-the-key-" * 4, algorithm="HS256")
    async with env.new_client() as attacker:
        attacker.cookies.set("prodio_session", forged)
        response = await attacker.get("/api/session", headers=FETCH)
    assert response.status_code == 401
    rejected = last(caplog, "session.rejected")
    assert rejected.user == "-"
    assert rejected.reason
    denied = last(caplog, "access.denied")
    assert (denied.status, denied.path, denied.levelno) == (401, "/api/session", logging.WARNING)
    assert denied.request_id == response.headers["x-request-id"]

    await env.client.get("/%0Afake", headers=PAGE)
    denied = last(caplog, "access.denied")
    assert (denied.status, denied.path, denied.levelno) == (303, "/\\x0afake", logging.INFO)
    assert not logged_anywhere(caplog, forged)


@pytest.mark.anyio
async def test_revoking_a_disabled_accounts_sessions_is_audited(
    env: AppUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await env.login("alice", PASSWORD)
    await env.client.get("/api/session", headers=FETCH)
    session_tag = request_log_tag(caplog)
    env.users.set_disabled("alice", True)
    assert (await env.client.get("/api/session", headers=FETCH)).status_code == 401
    revoked = last(caplog, "session.revoked")
    assert (revoked.outcome, revoked.user, revoked.sessions_ended) == ("success", "alice", 1)
    assert revoked.session == session_tag
    assert "disabled" in revoked.reason
