"""Common passwords and the user's own name are refused, by the policy and by the CLI."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from prodio import cli
from prodio.config import load_settings
from prodio.services import build_services
from prodio.users import PasswordPolicyError, SqlUserStore, check_password_policy
from prodio.users.breach import PwnedPasswordsCheck
from prodio.users.passwords import MIN_PASSWORD_LENGTH, common_passwords
from tests.apptest import ORIGIN, PAGE, AppUnderTest, form_fields, running_app
from tests.users.range_api import RangeApi, serving, sha1_upper
from tests.users.support import cheap_hasher, free_port

GOOD = "correct horse battery staple"


@pytest.mark.parametrize(
    "password",
    [
        "password1",
        "Password1",
        "PASSWORD123",
        "  qwerty123  ",
        "1q2w3e4r5t",
        "iloveyou",
        "#1stunna",  # entries may start with "#", like the file's header lines
        # Full-width letters and digit: the same password after NFKC.
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11",
    ],
)
def test_common_passwords_are_refused(password: str) -> None:
    with pytest.raises(PasswordPolicyError) as caught:
        check_password_policy(password)
    assert "most common passwords" in str(caught.value)
    with pytest.raises(PasswordPolicyError):
        cheap_hasher().hash(password)


@pytest.mark.parametrize("password", [GOOD, "password1 but longer", "kzkzkzkz"])
def test_uncommon_passwords_pass(password: str) -> None:
    check_password_policy(password)
    check_password_policy(password, username="alice")


def test_the_length_rule_comes_first() -> None:
    with pytest.raises(PasswordPolicyError, match="8 to 1024 characters"):
        check_password_policy("123456")


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice.smith", "alice.smith"),
        ("alice.smith", "Alice.Smith"),
        ("bobby-tables", " BOBBY-TABLES "),
    ],
)
def test_the_user_name_is_refused_as_password(username: str, password: str) -> None:
    check_password_policy(password)  # fine on its own: not a common password
    with pytest.raises(PasswordPolicyError, match="must not be the user name"):
        check_password_policy(password, username=username)
    with pytest.raises(PasswordPolicyError, match="must not be the user name"):
        cheap_hasher().hash(password, username=username)


@pytest.mark.parametrize(
    ("username", "context_words", "password"),
    [
        ("alice.smith", (), "Alice.Smith2024!"),
        ("margaretha", (), "  margaretha 1990 "),
        ("bob", ("prodio", "Acme Tools"), "PRODIO!!2025"),
        ("bob", ("prodio", "Acme Tools"), "acme-tools-2025"),
        ("bob", ("prodio", "Acme Tools", "St. Elsewhere Hospital"), "stelsewherehospital#1"),
        # NFKC: full-width letters are the same letters.
        ("bob", ("prodio",), "\uff50\uff52\uff4f\uff44\uff49\uff4f12345"),
    ],
)
def test_a_context_word_with_digits_or_symbols_added_is_refused(
    username: str, context_words: tuple[str, ...], password: str
) -> None:
    check_password_policy(password)  # fine on its own
    with pytest.raises(PasswordPolicyError, match="name of this application"):
        check_password_policy(password, username=username, context_words=context_words)
    hasher = cheap_hasher()
    hasher.context_words = context_words
    with pytest.raises(PasswordPolicyError, match="name of this application"):
        hasher.hash(password, username=username)


@pytest.mark.parametrize(
    "password",
    [
        "prodio keeps my notes safe",  # the word among others: a passphrase
        "12345678-90!",  # no letters at all: no word to match (length and list still apply)
        "prodigious otter",
    ],
)
def test_a_password_that_only_contains_a_context_word_is_allowed(password: str) -> None:
    check_password_policy(password, username="alice", context_words=("prodio", "Acme Tools"))


def test_the_context_words_come_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, app_name="Acme Tools", password_context_words="hospital, Springfield"
    )
    assert settings.context_words() == ["prodio", "Acme Tools", "hospital", "Springfield"]
    hasher = build_services(settings).passwords._hasher
    with pytest.raises(PasswordPolicyError, match="name of this application"):
        hasher.hash("Springfield-2025")


def test_the_list_is_the_bundled_one_loaded_once() -> None:
    passwords = common_passwords()
    assert common_passwords() is passwords
    assert len(passwords) >= 10_000
    assert {"password", "123456", "qwerty", "iloveyou"} <= passwords
    assert all(entry == entry.lower() and entry.strip() == entry for entry in passwords)
    # The header (source and licence) is not read as passwords.
    assert not [entry for entry in passwords if entry.startswith("# ") or entry == "#"]
    # Most entries are shorter than the minimum, but thousands are long enough to matter.
    assert sum(1 for entry in passwords if len(entry) >= MIN_PASSWORD_LENGTH) > 3_000


def test_a_list_without_its_header_separator_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import prodio.users.passwords as passwords_module

    broken = tmp_path / "prodio_users"
    broken.mkdir()
    (broken / passwords_module.COMMON_PASSWORDS_FILE).write_text("# header\npassword\n")

    class Folder:
        def joinpath(self, name: str) -> Path:
            return broken / name

    monkeypatch.setattr(passwords_module.resources, "files", lambda _package: Folder())
    passwords_module.common_passwords.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="no header separator"):
            passwords_module.common_passwords()
    finally:
        monkeypatch.undo()
        passwords_module.common_passwords.cache_clear()
    assert "password" in passwords_module.common_passwords()


# -- through the CLI --------------------------------------------------------------------


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlUserStore]:
    for name in list(os.environ):
        if name.startswith("PRODIO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRODIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cli, "_new_password_hasher", cheap_hasher)
    store = SqlUserStore(f"sqlite:///{tmp_path / 'data' / 'users.db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def feed(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return feed


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_add_refuses_a_common_password(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin("Password123\n")
    code, out, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()
    assert line.startswith("prodio: error: ")
    assert "most common passwords" in line
    assert "Password123" not in err
    assert users.count() == 0


def test_cli_set_password_refuses_a_common_password(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    users.add("alice", cheap_hasher().hash(GOOD))
    stdin("qwertyuiop\n")
    code, _, err = run(capsys, "users", "set-password", "alice", "--password-stdin")
    assert code == 1
    assert "most common passwords" in err
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, GOOD)


def test_cli_add_accepts_an_uncommon_password(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(GOOD + "\n")
    assert run(capsys, "users", "add", "alice", "--password-stdin")[0] == 0
    assert users.get("alice") is not None


def test_cli_refuses_the_application_name_as_password(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRODIO_APP_NAME", "Acme Tools")
    stdin("Acme_Tools_2025\n")
    code, _, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert code == 1
    assert "name of this application" in err
    assert users.get("alice") is None


@pytest.mark.anyio
async def test_the_password_page_refuses_the_application_name(tmp_path: Path) -> None:
    async with running_app(tmp_path, app_name="Acme Tools") as env:
        env.add_user("alice", GOOD)
        assert (await env.login("alice", GOOD)).status_code == 303
        before = password_of(env, "alice")
        response = await change_to(env.client, "ACME tools 2025!")
        assert response.status_code == 400
        assert "name of this application" in response.text
        assert password_of(env, "alice") == before


@pytest.mark.parametrize("command", ["add", "set-password"])
def test_cli_refuses_the_user_name_as_password(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    if command == "set-password":
        users.add("margaretha", cheap_hasher().hash(GOOD))
    stdin("Margaretha\n")
    code, _, err = run(capsys, "users", command, "margaretha", "--password-stdin")
    assert code == 1
    assert err.startswith("prodio: error: ")
    stored = users.get("margaretha")
    if command == "add":
        assert stored is None
    else:
        assert stored is not None
        assert cheap_hasher().verify(stored.password_hash, GOOD)


# -- the optional breach check, on the password page ----------------------------------
#
# The app's hasher gets the check the settings would give it (PRODIO_PASSWORD_BREACH_API),
# against a real local range API server.

BREACHED = "monkey see monkey do 2019"
NEW = "violet tractor sings at noon"


@asynccontextmanager
async def page_with_breach_check(
    tmp_path: Path, api_url: str, **options: Any
) -> AsyncIterator[tuple[AppUnderTest, httpx.AsyncClient]]:
    async with running_app(tmp_path) as env:
        env.add_user("alice", GOOD)
        env.hasher.breach_check = PwnedPasswordsCheck(api_url, **options)
        response = await env.login("alice", GOOD)
        assert response.status_code == 303
        yield env, env.client


async def change_to(client: httpx.AsyncClient, new: str) -> httpx.Response:
    page = await client.get("/account/password", headers=PAGE)
    data = {
        "csrf_token": form_fields(page.text)["csrf_token"],
        "current_password": GOOD,
        "new_password": new,
        "confirm_password": new,
        "sign_out_others": "yes",
    }
    return await client.post("/account/password", data=data, headers={**PAGE, **ORIGIN})


def password_of(env: AppUnderTest, name: str) -> str:
    user = env.users.get(name)
    assert user is not None
    return user.password_hash


@pytest.mark.anyio
async def test_the_password_page_refuses_a_breached_password(tmp_path: Path) -> None:
    with serving(RangeApi(breached={BREACHED: 7})) as api:
        async with page_with_breach_check(tmp_path, api.url) as (env, client):
            before = password_of(env, "alice")
            response = await change_to(client, BREACHED)
            assert response.status_code == 400
            assert (
                "The new password cannot be used: this password appears in data breaches "
                "(7 times)" in response.text
            )
            assert password_of(env, "alice") == before
            response = await change_to(client, NEW)
            assert response.status_code == 303
            assert env.hasher.verify(password_of(env, "alice"), NEW)
        assert [seen.path for seen in api.requests] == [
            "/range/" + sha1_upper(BREACHED)[:5],
            "/range/" + sha1_upper(NEW)[:5],
        ]


@pytest.mark.anyio
async def test_the_password_page_with_the_breach_api_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with page_with_breach_check(tmp_path / "refuse", down, on_error="refuse") as (
        env,
        client,
    ):
        before = password_of(env, "alice")
        response = await change_to(client, NEW)
        # Refused as "try again in a moment", not as a bad password, and nothing changed.
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        assert "temporarily unavailable" in response.text
        assert password_of(env, "alice") == before
    with caplog.at_level(logging.WARNING, logger="prodio.users.breach"):
        async with page_with_breach_check(tmp_path / "allow", down) as (env, client):
            response = await change_to(client, NEW)
            assert response.status_code == 303
            assert env.hasher.verify(password_of(env, "alice"), NEW)
    assert "accepted without it" in caplog.text
    assert NEW not in caplog.text
    assert sha1_upper(NEW)[:5] not in caplog.text
