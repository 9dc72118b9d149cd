"""The ``prodio`` command: in-process through ``main()``, plus real subprocess runs.

No server is started here: ``serve`` is tested up to the ``uvicorn.run`` call, which is
recorded instead (the integration tests start real servers).
"""

from __future__ import annotations

import getpass
import io
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from prodio import cli
from prodio.config import Settings, load_settings
from prodio.session import RedisSessionStore, SessionTimeouts
from prodio.users import PasswordAuthenticator, PasswordHasher, SqlUserStore, UserExists
from prodio.users.sql import MIGRATIONS
from tests.apptest import FETCH, running_app
from tests.conftest import require_binary
from tests.users.backdate import backdate_password
from tests.users.range_api import RangeApi, serving, sha1_upper
from tests.users.support import cheap_hasher, free_port

PASSWORD = "correct horse battery staple"
TIMEOUTS = SessionTimeouts(idle=600, absolute=3600)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no PRODIO_* variables but the data folder, no .env, cheap
    hashing."""
    for name in list(os.environ):
        if name.startswith("PRODIO_"):
            monkeypatch.delenv(name)
    # serve --reload writes these; set-then-delete makes monkeypatch remove them after.
    for name in ("PRODIO_HOST", "PRODIO_PORT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data"
    monkeypatch.setenv("PRODIO_DATA_DIR", str(folder))
    monkeypatch.setattr(cli, "_new_password_hasher", cheap_hasher)
    return folder


@pytest.fixture
def users(data_dir: Path) -> Iterator[SqlUserStore]:
    """The store the CLI writes to, opened separately to check its work."""
    store = SqlUserStore(f"sqlite:///{data_dir / 'users.db'}")
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


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Answer getpass prompts with the given strings; returns the prompts asked."""

    def answer(*answers: str) -> list[str]:
        asked: list[str] = []
        queue = list(answers)

        def fake_getpass(prompt: str = "Password: ", stream: Any = None) -> str:
            asked.append(prompt)
            if not queue:
                raise EOFError
            return queue.pop(0)

        monkeypatch.setattr(getpass, "getpass", fake_getpass)
        return asked

    return answer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("prodio: error: "), err
    assert fragment in lines[0]
    assert "Traceback" not in err


# -- users add -------------------------------------------------------------------------


def test_add_with_password_stdin(
    data_dir: Path,
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdin(PASSWORD + "\n")
    code, out, err = run(capsys, "users", "add", "Alice", "--password-stdin")
    assert (code, out, err) == (0, "added user alice\n", "")
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, PASSWORD)
    assert alice.must_change_password is False


HOURS = 3600


def _statuses(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    code, out, _ = run(capsys, "users", "list")
    assert code == 0
    return {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}


def test_list_shows_an_expired_temporary_password(
    users: SqlUserStore, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("fresh", "expired", "own", "disabled"):
        users.add(name, "hash", must_change_password=name != "own")
    users.set_disabled("disabled", True)
    for name in ("expired", "own", "disabled"):
        backdate_password(users, name, 73 * HOURS)
    assert _statuses(capsys) == {
        "disabled": "disabled,temporary-password-expired",
        "expired": "active,temporary-password-expired",
        "fresh": "active,temporary-password",
        "own": "active",  # a password the user chose never expires
    }


def test_the_lifetime_setting_decides_what_list_calls_expired(
    users: SqlUserStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    users.add("carol", "hash", must_change_password=True)
    backdate_password(users, "carol", 2 * HOURS)
    assert _statuses(capsys)["carol"] == "active,temporary-password"
    monkeypatch.setenv("PRODIO_TEMPORARY_PASSWORD_LIFETIME", str(HOURS))
    assert _statuses(capsys)["carol"] == "active,temporary-password-expired"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("flags", "status"),
    [([], "active"), (["--temporary"], "active,temporary-password")],
)
async def test_set_password_renews_an_expired_temporary_password(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    status: str,
) -> None:
    users.add("carol", cheap_hasher().hash(PASSWORD), must_change_password=True)
    backdate_password(users, "carol", 73 * HOURS)
    passwords = PasswordAuthenticator(users, cheap_hasher())
    assert (await passwords.check("carol", PASSWORD)).refusal == "temporary password expired"

    stdin("a new password\n")
    code, _, _ = run(capsys, "users", "set-password", "carol", "--password-stdin", *flags)
    assert code == 0
    assert _statuses(capsys)["carol"] == status
    signed_in = await passwords.check("carol", "a new password")
    assert signed_in.user is not None
    assert signed_in.user.must_change_password is bool(flags)


def test_temporary_passwords_must_be_changed_at_the_next_sign_in(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(PASSWORD + "\n")
    code, out, err = run(capsys, "users", "add", "alice", "--password-stdin", "--temporary")
    assert (code, err) == (0, "")
    assert out.startswith("added user alice (temporary password: it must be changed")
    assert "within 72 hours" in out
    alice = users.get("alice")
    assert alice is not None
    assert alice.must_change_password is True
    code, out, _ = run(capsys, "users", "list")
    assert out.splitlines()[1].split()[:2] == ["alice", "active,temporary-password"]

    # A password set without --temporary is the user's own again; with it, temporary.
    for flags, temporary in (([], False), (["--temporary"], True)):
        stdin("another password\n")
        code, out, _ = run(capsys, "users", "set-password", "alice", "--password-stdin", *flags)
        assert code == 0
        assert ("temporary password" in out) is temporary
        alice = users.get("alice")
        assert alice is not None
        assert alice.must_change_password is temporary


@pytest.mark.parametrize(
    ("line", "password"),
    [
        ("  spaced pass  \n", "  spaced pass  "),
        ("windows line end\r\n", "windows line end"),
        ("no line end at all", "no line end at all"),
    ],
)
def test_password_stdin_strips_only_the_line_ending(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    line: str,
    password: str,
) -> None:
    stdin(line + "second line ignored\n" if line.endswith("\n") else line)
    assert run(capsys, "users", "add", "alice", "--password-stdin")[0] == 0
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, password)
    assert not cheap_hasher().verify(alice.password_hash, password.strip() + "x")
    if password != password.strip():
        assert not cheap_hasher().verify(alice.password_hash, password.strip())


def test_add_asks_twice(
    users: SqlUserStore,
    prompts: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    asked = prompts(PASSWORD, PASSWORD)
    code, out, _ = run(capsys, "users", "add", "alice")
    assert code == 0
    assert out == "added user alice\n"
    assert asked == ["New password for alice: ", "Repeat the password: "]
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, PASSWORD)


def test_add_with_different_repeat_adds_nobody(
    users: SqlUserStore,
    prompts: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    prompts(PASSWORD, PASSWORD + "!")
    code, out, err = run(capsys, "users", "add", "alice")
    assert code == 1
    assert out == ""
    assert_one_error_line(err, "the two passwords differ")
    assert users.count() == 0


def test_add_without_any_password_fails(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    prompts: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdin("")
    code, _, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert code == 1
    assert_one_error_line(err, "no password on standard input")
    prompts()  # getpass meets end of input
    code, _, err = run(capsys, "users", "add", "alice")
    assert code == 1
    assert_one_error_line(err, "no password given")
    assert users.count() == 0


def test_add_refuses_undecodable_input(
    users: SqlUserStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe\n"), "utf-8"))
    code, _, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert code == 1
    assert_one_error_line(err, "standard input is not utf-8 text")
    assert users.count() == 0


def test_add_refuses_a_short_password(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin("short\n")
    code, _, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert code == 1
    assert_one_error_line(err, "8 to 1024 characters")
    assert users.count() == 0


def test_add_refuses_a_duplicate_before_asking(
    users: SqlUserStore,
    prompts: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    users.add("alice", "hash-a")
    asked = prompts(PASSWORD, PASSWORD)
    code, _, err = run(capsys, "users", "add", "ALICE")
    assert code == 1
    assert_one_error_line(err, "user alice already exists")
    assert asked == []
    alice = users.get("alice")
    assert alice is not None
    assert alice.password_hash == "hash-a"


@pytest.mark.parametrize("name", ["bad name", "", "x" * 65, "semi;colon"])
def test_add_refuses_an_invalid_name(
    users: SqlUserStore,
    prompts: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    asked = prompts(PASSWORD, PASSWORD)
    code, _, err = run(capsys, "users", "add", name)
    assert code == 1
    assert_one_error_line(err, "a user name is 1-64 characters")
    assert asked == []


# -- users list, remove, set-password, disable, enable ---------------------------------


def test_list(users: SqlUserStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "users", "list")
    assert code == 0
    assert out == "no users yet; add one with: prodio users add NAME\n"

    users.add("bob", cheap_hasher().hash(PASSWORD))
    users.add("alexandra", cheap_hasher().hash(PASSWORD))
    users.set_disabled("bob", True)
    code, out, _ = run(capsys, "users", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "CREATED"]
    assert lines[1].split()[:2] == ["alexandra", "active"]
    assert lines[2].split()[:2] == ["bob", "disabled"]
    alexandra = users.get("alexandra")
    assert alexandra is not None
    assert alexandra.created_at.strftime("%Y-%m-%d %H:%M UTC") in lines[1]
    # Columns line up.
    assert lines[0].index("STATUS") == lines[1].index("active") == lines[2].index("disabled")
    assert "$argon2" not in out


def test_remove(users: SqlUserStore, capsys: pytest.CaptureFixture[str]) -> None:
    users.add("alice", "hash-a")
    code, out, err = run(capsys, "users", "remove", "Alice")
    assert code == 0
    assert out == "removed user alice\n"
    assert "sessions are kept in the server's memory" in err
    assert users.get("alice") is None
    code, out, err = run(capsys, "users", "remove", "alice")
    assert code == 1
    assert out == ""
    assert_one_error_line(err, "no user named alice")


def test_set_password(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    users.add("alice", cheap_hasher().hash("old password"))
    stdin("new password\n")
    code, out, err = run(capsys, "users", "set-password", "alice", "--password-stdin")
    assert code == 0
    assert out == "changed the password of alice\n"
    assert "the server ends alice's open sessions at their next request, within 30 s" in err
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, "new password")
    assert not cheap_hasher().verify(alice.password_hash, "old password")


def test_set_password_of_unknown_user_fails_before_asking(
    users: SqlUserStore,
    prompts: Callable[..., list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    asked = prompts(PASSWORD, PASSWORD)
    code, _, err = run(capsys, "users", "set-password", "nobody")
    assert code == 1
    assert_one_error_line(err, "no user named nobody")
    assert asked == []


def test_set_password_applies_the_policy(
    users: SqlUserStore, stdin: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    users.add("alice", "hash-a")
    stdin("x" * 1025 + "\n")
    code, _, err = run(capsys, "users", "set-password", "alice", "--password-stdin")
    assert code == 1
    assert_one_error_line(err, "8 to 1024 characters")
    alice = users.get("alice")
    assert alice is not None
    assert alice.password_hash == "hash-a"


# -- the optional breach check ---------------------------------------------------------

BREACHED = "monkey see monkey do 2019"


@pytest.fixture
def range_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeApi]:
    """A local Pwned Passwords range API that knows BREACHED, named in the settings."""
    with serving(RangeApi(breached={BREACHED: 42})) as api:
        monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API", api.url)
        monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "0.5")
        yield api


@pytest.mark.parametrize("command", ["add", "set-password"])
def test_a_breached_password_is_refused(
    users: SqlUserStore,
    range_api: RangeApi,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    if command == "set-password":
        users.add("alice", cheap_hasher().hash(PASSWORD))
    stdin(BREACHED + "\n")
    code, out, err = run(capsys, "users", command, "alice", "--password-stdin")
    assert (code, out) == (1, "")
    assert_one_error_line(err, "this password appears in data breaches (42 times)")
    assert BREACHED not in err
    # Only the first 5 characters of the SHA-1 were sent, with padding asked for.
    [seen] = range_api.requests
    assert seen.path == "/range/" + sha1_upper(BREACHED)[:5]
    assert seen.headers["add-padding"] == "true"
    alice = users.get("alice")
    if command == "add":
        assert alice is None
    else:
        assert alice is not None
        assert cheap_hasher().verify(alice.password_hash, PASSWORD)


def test_a_password_in_no_breach_is_set(
    users: SqlUserStore,
    range_api: RangeApi,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdin(PASSWORD + "\n")
    assert run(capsys, "users", "add", "alice", "--password-stdin") == (
        0,
        "added user alice\n",
        "",
    )
    assert [seen.path for seen in range_api.requests] == ["/range/" + sha1_upper(PASSWORD)[:5]]


def test_a_locally_refused_password_is_never_sent(
    users: SqlUserStore,
    range_api: RangeApi,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdin("password123\n")
    code, _, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert code == 1
    assert_one_error_line(err, "most common passwords")
    assert range_api.requests == []


def test_breach_api_down_allow_sets_the_password_with_a_warning(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API", f"http://127.0.0.1:{free_port()}")
    users.add("alice", cheap_hasher().hash(PASSWORD))
    stdin(BREACHED + "\n")
    code, out, err = run(capsys, "users", "set-password", "alice", "--password-stdin")
    assert code == 0
    assert out == "changed the password of alice\n"
    warning = err.splitlines()[0]
    assert warning.startswith("prodio: warning: the password breach check at 127.0.0.1 ")
    assert "the password is set without it (PRODIO_PASSWORD_BREACH_API_ON_ERROR=allow)" in warning
    assert BREACHED not in err
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, BREACHED)


def test_breach_api_slow_refuse_changes_nothing(
    users: SqlUserStore,
    range_api: RangeApi,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API_ON_ERROR", "refuse")
    range_api.mode = "slow"
    users.add("alice", cheap_hasher().hash(PASSWORD))
    stdin("a brand new passphrase\n")
    code, out, err = run(capsys, "users", "set-password", "alice", "--password-stdin")
    assert not range_api.release.is_set()  # it gave up while the server still waited
    assert (code, out) == (1, "")
    assert_one_error_line(err, "could not be done: no answer within 0.5 s")
    assert "PRODIO_PASSWORD_BREACH_API_ON_ERROR=refuse" in err
    alice = users.get("alice")
    assert alice is not None
    assert cheap_hasher().verify(alice.password_hash, PASSWORD)


def test_bad_breach_api_setting_exits_2(
    users: SqlUserStore,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API", "api.pwnedpasswords.com")
    stdin(PASSWORD + "\n")
    code, _, err = run(capsys, "users", "add", "alice", "--password-stdin")
    assert code == 2
    assert_one_error_line(err, "PRODIO_PASSWORD_BREACH_API: must be the base URL")
    assert users.count() == 0


def test_disable_and_enable(users: SqlUserStore, capsys: pytest.CaptureFixture[str]) -> None:
    users.add("alice", "hash-a")
    code, out, err = run(capsys, "users", "disable", "alice")
    assert code == 0
    assert out == "disabled user alice\n"
    assert err.startswith("prodio: note: sessions are kept in the server's memory")
    alice = users.get("alice")
    assert alice is not None
    assert alice.disabled is True

    code, out, err = run(capsys, "users", "enable", "alice")
    assert (code, out, err) == (0, "enabled user alice\n", "")
    alice = users.get("alice")
    assert alice is not None
    assert alice.disabled is False

    for action in ("disable", "enable"):
        code, _, err = run(capsys, "users", action, "nobody")
        assert code == 1
        assert_one_error_line(err, "no user named nobody")


# -- errors ----------------------------------------------------------------------------


def test_unreachable_database_is_one_line_without_the_password(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv(
        "PRODIO_DATABASE_URL", f"postgresql://prodio:Sup3r-S3cret@127.0.0.1:{port}/x"
    )
    for argv in (["users", "list"], ["users", "remove", "alice"], ["users", "enable", "bob"]):
        code, out, err = run(capsys, *argv)
        assert code == 1
        assert out == ""
        assert_one_error_line(err, f"prodio:***@127.0.0.1:{port}/x is unavailable")
        assert "Sup3r-S3cret" not in err


def test_schema_newer_than_prodio_is_one_line(
    users: SqlUserStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("prodio.users.sql.MIGRATIONS", ())
    code, _, err = run(capsys, "users", "list")
    assert code == 1
    assert_one_error_line(
        err, f"has schema version {len(MIGRATIONS)}, but this prodio knows versions up to 0"
    )


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("PRODIO_ENV", "prod", "PRODIO_SECRET_KEY is required"),
        ("PRODIO_DATABASE_URL", "mysql://u:Sup3r-S3cret@h/db", "unsupported database 'mysql'"),
        ("PRODIO_SESSION_IDLE_TIMEOUT", "never", "PRODIO_SESSION_IDLE_TIMEOUT"),
    ],
)
def test_configuration_errors_exit_2(
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    fragment: str,
) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = run(capsys, "users", "list")
    assert code == 2
    assert out == ""
    assert_one_error_line(err, fragment)
    assert "Sup3r-S3cret" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["users"],
        ["users", "frobnicate"],
        ["users", "add"],
        ["users", "list", "extra"],
        ["serve", "--port", "70000"],
        ["serve", "--port", "http"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "usage: prodio" in err
    assert "error:" in err
    assert "Traceback" not in err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "serve" in out
    assert "users" in out
    code, out, _ = run(capsys, "users", "--help")
    assert code == 0
    for action in ("add", "list", "remove", "set-password", "disable", "enable"):
        assert action in out
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.startswith("prodio ")


def test_interrupt_exits_130_quietly(
    users: SqlUserStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(prompt: str = "", stream: Any = None) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(getpass, "getpass", interrupted)
    code, _, err = run(capsys, "users", "add", "alice")
    assert code == 130
    assert "Traceback" not in err
    assert users.count() == 0


# -- ending sessions in Redis ----------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server of our own on a free port (never the shared one on 6379)."""
    binary = require_binary("redis-server")
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    command.extend(["--save", "", "--appendonly", "no"])  # nothing written to disk
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None:
                    pytest.fail(f"redis-server exited with {server.returncode}")
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def _open_sessions(url: str, *usernames: str) -> list[str]:
    async def create() -> list[str]:
        store = RedisSessionStore.from_url(url, TIMEOUTS)
        try:
            return [(await store.create(name)).id for name in usernames]
        finally:
            await store.aclose()

    return anyio.run(create)


def _live_sessions(url: str, session_ids: list[str]) -> list[bool]:
    async def load() -> list[bool]:
        store = RedisSessionStore.from_url(url, TIMEOUTS)
        try:
            return [await store.load(one, touch=False) is not None for one in session_ids]
        finally:
            await store.aclose()

    return anyio.run(load)


@pytest.mark.parametrize(
    "argv", [["disable"], ["set-password", "--password-stdin"], ["remove"], ["end-sessions"]]
)
def test_account_changes_end_the_users_sessions_in_redis(
    users: SqlUserStore,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    stdin: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.setenv("PRODIO_SESSION_BACKEND", "redis")
    monkeypatch.setenv("PRODIO_REDIS_URL", redis_url)
    users.add("alice", "hash-a")
    sessions = _open_sessions(redis_url, "alice", "alice", "bob")
    stdin("new password\n")
    code, out, err = run(capsys, "users", argv[0], "alice", *argv[1:])
    assert code == 0, err
    assert err == ""
    assert out.splitlines()[-1] == "ended 2 open session(s) of alice"
    assert _live_sessions(redis_url, sessions) == [False, False, True]


@pytest.mark.anyio
async def test_end_sessions_reaches_sessions_in_a_servers_memory(
    users: SqlUserStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the memory backend the command cannot reach the sessions, but the account's new
    epoch ends them at their next request all the same."""
    async with running_app(tmp_path / "data", account_recheck_interval=0) as env:
        env.add_user("alice", "correct horse battery staple")
        env.add_user("bob", "correct horse battery staple")
        async with env.new_client() as alice, env.new_client() as bob:
            for name, client in (("alice", alice), ("bob", bob)):
                answer = await env.login(name, "correct horse battery staple", client=client)
                assert answer.status_code == 303
            assert (await alice.get("/api/session", headers=FETCH)).status_code == 200
            code, out, err = run(capsys, "users", "end-sessions", "alice")
            assert code == 0, err
            assert out.startswith("signed alice out everywhere")
            assert "PRODIO_SESSION_BACKEND=memory" in err
            assert (await alice.get("/api/session", headers=FETCH)).status_code == 401
            assert (await bob.get("/api/session", headers=FETCH)).status_code == 200


def test_end_sessions_of_nobody_is_a_clear_error(
    users: SqlUserStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "users", "end-sessions", "nobody")
    assert code == 1
    assert out == ""
    assert_one_error_line(err, "no user named nobody")


def test_enable_leaves_sessions_alone(
    users: SqlUserStore,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PRODIO_SESSION_BACKEND", "redis")
    monkeypatch.setenv("PRODIO_REDIS_URL", redis_url)
    users.add("alice", "hash-a")
    sessions = _open_sessions(redis_url, "alice")
    assert run(capsys, "users", "enable", "alice")[:2] == (0, "enabled user alice\n")
    assert _live_sessions(redis_url, sessions) == [True]


def test_unreachable_redis_is_reported_after_the_account_change(
    users: SqlUserStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRODIO_SESSION_BACKEND", "redis")
    monkeypatch.setenv("PRODIO_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    users.add("alice", "hash-a")
    code, out, err = run(capsys, "users", "disable", "alice")
    assert code == 1
    assert out == "disabled user alice\n"
    assert_one_error_line(err, "the account was changed, but alice's sessions could not be ended")
    alice = users.get("alice")
    assert alice is not None
    assert alice.disabled is True


# -- serve -----------------------------------------------------------------------------


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=data_dir, **overrides)


def test_dev_start_makes_admin_and_shows_the_password_once(data_dir: Path) -> None:
    settings = _settings(data_dir)
    stderr = io.StringIO()
    password = cli.prepare_serve(settings, stderr=stderr, hasher=cheap_hasher())
    assert password is not None
    assert len(password) == 16
    shown = stderr.getvalue()
    assert shown.count(password) == 1
    assert "user:      admin" in shown
    assert "shown only ONCE" in shown
    assert "prodio users set-password admin" in shown
    lines = shown.splitlines()
    assert lines[0] == lines[-1]
    assert lines[0].startswith("+-")
    assert len({len(line) for line in lines}) == 1  # a closed box

    assert "you must choose your own" in shown
    assert "It signs in for 72 hours only (PRODIO_TEMPORARY_PASSWORD_LIFETIME)." in shown
    store = SqlUserStore(settings.effective_database_url)
    try:
        admin = store.get("admin")
        assert admin is not None
        assert cheap_hasher().verify(admin.password_hash, password)
        # Shown in a console in plain text: it must be changed at the first sign-in.
        assert admin.must_change_password is True
        # The next start finds a user and shows nothing.
        again = io.StringIO()
        assert cli.prepare_serve(settings, stderr=again, hasher=cheap_hasher()) is None
        assert again.getvalue() == ""
        assert store.count() == 1
    finally:
        store.close()


def test_dev_start_with_the_admins_password_expired_says_how_to_set_one(
    data_dir: Path, users: SqlUserStore
) -> None:
    settings = _settings(data_dir)
    assert cli.prepare_serve(settings, stderr=io.StringIO(), hasher=cheap_hasher()) is not None
    backdate_password(users, "admin", 73 * HOURS)
    stderr = io.StringIO()
    assert cli.prepare_serve(settings, stderr=stderr, hasher=cheap_hasher()) is None
    assert stderr.getvalue() == (
        "prodio: note: the temporary password of admin, the only user, has expired, so "
        "nobody can sign in; set a new one with: prodio users set-password admin\n"
    )
    # No second account, and admin is left as it was.
    assert [user.username for user in users.list()] == ["admin"]
    admin = users.get("admin")
    assert admin is not None
    assert admin.must_change_password is True

    # With another user, someone can sign in: nothing to say.
    users.add("alice", "hash")
    quiet = io.StringIO()
    assert cli.prepare_serve(settings, stderr=quiet, hasher=cheap_hasher()) is None
    assert quiet.getvalue() == ""


def test_prod_start_without_users_says_how_to_add_one(data_dir: Path) -> None:
    settings = _settings(data_dir, env="prod", secret_key="k" * 48, cookie_secure=True)
    stderr = io.StringIO()
    assert cli.prepare_serve(settings, stderr=stderr, hasher=cheap_hasher()) is None
    assert "no user yet" in stderr.getvalue()
    assert "prodio users add NAME" in stderr.getvalue()
    store = SqlUserStore(settings.effective_database_url)
    try:
        assert store.count() == 0
        assert store.schema_version() == len(MIGRATIONS)  # migrated all the same
    finally:
        store.close()


def test_dev_start_racing_another_instance_shows_nothing(
    users: SqlUserStore, data_dir: Path
) -> None:
    class RacedStore(SqlUserStore):
        """Counts no user, as another instance adds admin right after."""

        def count(self) -> int:
            return 0

    users.add("admin", "hash-of-the-other-instance")
    raced = RacedStore(f"sqlite:///{data_dir / 'users.db'}")
    stderr = io.StringIO()
    try:
        with pytest.raises(UserExists):
            raced.add("admin", "x")
        password = cli.bootstrap_first_user(
            raced, _settings(data_dir), cheap_hasher(), stderr=stderr
        )
    finally:
        raced.close()
    assert password is None
    assert stderr.getvalue() == ""
    admin = users.get("admin")
    assert admin is not None
    assert admin.password_hash == "hash-of-the-other-instance"


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))


@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    import uvicorn

    import prodio.logs

    recorder = _Recorder()
    monkeypatch.setattr(uvicorn, "run", recorder)
    # The real one reconfigures this process's root logger, pytest's capture included.
    monkeypatch.setattr(prodio.logs, "configure_logging", _Recorder())
    return recorder


def test_serve_runs_the_app_behind_the_configured_proxies(
    data_dir: Path,
    uvicorn_run: _Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = object()
    built: list[Settings] = []

    def create_app(settings: Settings) -> object:
        built.append(settings)
        return app

    stub = types.ModuleType("prodio.main")
    stub.create_app = create_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prodio.main", stub)
    monkeypatch.setenv("PRODIO_TRUSTED_PROXIES", '["10.0.0.1", "10.0.0.2"]')

    code, _, err = run(capsys, "serve", "--host", "127.0.0.9", "--port", "8123")
    assert code == 0
    assert "shown only ONCE" in err
    assert [settings.host for settings in built] == ["127.0.0.9"]
    assert built[0].port == 8123
    assert uvicorn_run.calls == [
        (
            (app,),
            {
                "host": "127.0.0.9",
                "port": 8123,
                "proxy_headers": True,
                "forwarded_allow_ips": "10.0.0.1,10.0.0.2",
                "timeout_graceful_shutdown": 5,
                "access_log": False,
                "log_config": None,
                "server_header": False,
                "date_header": True,
            },
        )
    ]


def test_serve_reload_hands_settings_to_the_factory(
    data_dir: Path, uvicorn_run: _Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(capsys, "serve", "--reload", "--port", "8124")
    assert code == 0
    assert uvicorn_run.calls == [
        (
            ("prodio.main:create_app_from_env",),
            {
                "host": "127.0.0.1",
                "port": 8124,
                # No proxies listed: forwarded headers are believed from nobody.
                "proxy_headers": False,
                "forwarded_allow_ips": None,
                "timeout_graceful_shutdown": 5,
                "access_log": False,
                "log_config": None,
                "server_header": False,
                "date_header": True,
                "factory": True,
                "reload": True,
            },
        )
    ]
    assert os.environ["PRODIO_HOST"] == "127.0.0.1"
    assert os.environ["PRODIO_PORT"] == "8124"


def test_serve_with_bad_configuration_exits_2_before_starting(
    data_dir: Path,
    uvicorn_run: _Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PRODIO_PORT", "http")
    code, _, err = run(capsys, "serve")
    assert code == 2
    assert_one_error_line(err, "invalid configuration: PRODIO_PORT")
    assert uvicorn_run.calls == []


def test_serve_with_unreachable_database_exits_1_before_starting(
    data_dir: Path,
    uvicorn_run: _Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(
        "PRODIO_DATABASE_URL", f"postgresql://p:Sup3r-S3cret@127.0.0.1:{free_port()}/x"
    )
    code, _, err = run(capsys, "serve")
    assert code == 1
    assert_one_error_line(err, "is unavailable")
    assert "Sup3r-S3cret" not in err
    assert uvicorn_run.calls == []


# -- real processes --------------------------------------------------------------------


def _clean_environment(data_dir: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRODIO_")}
    environment["PRODIO_DATA_DIR"] = str(data_dir)
    return environment


def test_console_script_and_module_in_real_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    environment = _clean_environment(data_dir)
    script = Path(sys.executable).parent / "prodio"
    assert script.is_file(), f"the console script is not installed at {script}"

    added = subprocess.run(
        [str(script), "users", "add", "Carol", "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert (added.returncode, added.stdout, added.stderr) == (0, "added user carol\n", "")

    listed = subprocess.run(
        [sys.executable, "-m", "prodio", "users", "list"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == ["carol", "active"]

    failed = subprocess.run(
        [str(script), "users", "remove", "nobody"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr == "prodio: error: no user named nobody\n"

    # Made with the default parameters: the real hasher verifies it.
    store = SqlUserStore(f"sqlite:///{data_dir / 'users.db'}")
    try:
        carol = store.get("carol")
    finally:
        store.close()
    assert carol is not None
    assert carol.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(carol.password_hash, PASSWORD)


def test_serve_hides_start_up_objects_from_the_collector() -> None:
    import gc

    from prodio.cli import freeze_startup_objects

    try:
        freeze_startup_objects()
        # What exists now is no longer walked by full collections (they stopped the loop).
        assert gc.get_freeze_count() > 1000
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()
