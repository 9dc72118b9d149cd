"""The ``prodio`` command: run the server and manage user accounts.

Every failure ends as one line ``prodio: error: ...`` on standard error and a non-zero exit
status: 2 for a usage or configuration mistake, 1 for an operation that failed.
"""

from __future__ import annotations

import argparse
import functools
import gc
import getpass
import io
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

import anyio

from prodio import __version__
from prodio.cluster import MAX_INSTANCES, Cluster, ClusterError, MissingBinaryError
from prodio.config import Settings, SettingsError, load_settings
from prodio.session import SessionStore, SessionStoreUnavailable, build_session_store
from prodio.telemetry import unheeded_variables
from prodio.users import (
    PasswordHasher,
    User,
    UserError,
    UserExists,
    UserNotFound,
    UserStore,
    UserStoreUnavailable,
    build_user_store,
    check_password_policy,
    normalize_username,
)

PROG = "prodio"
FIRST_USER = "admin"
TEMPORARY_NOTE = " (temporary password: it must be changed at the next sign-in, within {lifetime})"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line, with the exit status to end with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _new_password_hasher() -> PasswordHasher:
    return PasswordHasher()


# -- serve ----------------------------------------------------------------------------


def duration_text(seconds: int) -> str:
    """``seconds`` as a person would say it: "72 hours", "30 days", "90 minutes"."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        # Hours up to three days read better than days ("72 hours", not "3 days").
        if seconds % size == 0 and (unit != "day" or seconds > 3 * 86_400):
            count = seconds // size
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return "1 second" if seconds == 1 else f"{seconds} seconds"


def _temporary_note(settings: Settings) -> str:
    return TEMPORARY_NOTE.format(lifetime=duration_text(settings.temporary_password_lifetime))


def _first_user_box(username: str, password: str, lifetime: int) -> str:
    lines = [
        "prodio made the first user (dev mode):",
        "",
        f"    user:      {username}",
        f"    password:  {password}",
        "",
        "This password is shown only ONCE: note it now.",
        "Signing in with it leads to a page where you must choose your own",
        f"before anything else (or set one now: prodio users set-password {username}).",
        f"It signs in for {duration_text(lifetime)} only (PRODIO_TEMPORARY_PASSWORD_LIFETIME).",
    ]
    width = max(len(line) for line in lines)
    border = "+" + "-" * (width + 2) + "+"
    body = [f"| {line.ljust(width)} |" for line in lines]
    return "\n".join([border, *body, border])


def bootstrap_first_user(
    store: UserStore, settings: Settings, hasher: PasswordHasher, *, stderr: TextIO
) -> str | None:
    """Make sure somebody can log in; return the password made for ``admin``, if any.

    With no user at all: in dev mode make ``admin`` with a random password and show it
    once; otherwise say how to add a user (the server still starts). The password is a
    temporary one: its first sign-in must change it (ASVS 6.3.2, 6.4.1), since it sat in a
    console (and maybe a log) in plain text, and it stops working after
    ``PRODIO_TEMPORARY_PASSWORD_LIFETIME``. When the only account has such an expired
    password, say so and how to set another, rather than make a second account.
    """
    count = store.count()
    if count == 1:
        [only] = store.list()
        if _temporary_password_expired(only, settings):
            print(
                f"{PROG}: note: the temporary password of {only.username}, the only user, "
                "has expired, so nobody can sign in; set a new one with: "
                f"prodio users set-password {only.username}",
                file=stderr,
            )
        return None
    if count > 0:
        return None
    if not settings.is_dev:
        print(
            f"{PROG}: note: there is no user yet, so nobody can log in; "
            "add one with: prodio users add NAME",
            file=stderr,
        )
        return None
    password = secrets.token_urlsafe(12)
    try:
        store.add(FIRST_USER, hasher.hash(password), must_change_password=True)
    except UserExists:
        # Another instance starting at the same time made it first; it showed its password.
        return None
    print(
        _first_user_box(FIRST_USER, password, settings.temporary_password_lifetime),
        file=stderr,
        flush=True,
    )
    return password


def prepare_serve(
    settings: Settings, *, stderr: TextIO, hasher: PasswordHasher | None = None
) -> str | None:
    """Everything ``serve`` does before the server starts: migrate the user store and
    make the first user. Returns the password made for ``admin``, if one was made."""
    unheeded = unheeded_variables(settings)
    if unheeded:
        print(
            f"{PROG}: warning: {', '.join(unheeded)} set, but FastAPI's OpenTelemetry "
            "spans and metrics are off: set PRODIO_OPENTELEMETRY=true to turn them on",
            file=stderr,
        )
    with _user_store(settings) as store:
        return bootstrap_first_user(
            store, settings, hasher or _new_password_hasher(), stderr=stderr
        )


GRACEFUL_SHUTDOWN_SECONDS = 5


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = load_settings(**overrides)

    # Imported here so that the users commands need neither the web stack nor uvicorn.
    import uvicorn

    from prodio.logs import configure_logging

    configure_logging(settings)
    prepare_serve(settings, stderr=sys.stderr)
    run = functools.partial(
        uvicorn.run,
        host=settings.host,
        port=settings.port,
        # Forwarded headers are believed only from the proxies the operator listed: with
        # none listed, nobody can change the client address or scheme prodio sees.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        # An open page holds a Gradio stream; without a bound, a rolling restart would wait
        # for every browser to leave.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=True,
    )
    if args.reload:
        # The reloader imports the app afresh in a child process, which reads its
        # settings from the environment: hand the command-line values down that way.
        os.environ["PRODIO_HOST"] = settings.host
        os.environ["PRODIO_PORT"] = str(settings.port)
        run("prodio.main:create_app_from_env", factory=True, reload=True)
    else:
        from prodio.main import create_app

        app = create_app(settings)
        freeze_startup_objects()
        run(app)
    return EXIT_OK


def freeze_startup_objects() -> None:
    """Hide what start-up built (Gradio, the app, every module) from the garbage collector.

    It all lives as long as the process; left in the collector's sight, each full collection
    walked it and stopped the event loop for 60-110 ms, most of a quiet p99 (bench/).
    """
    gc.collect()
    gc.freeze()


# -- cluster --------------------------------------------------------------------------

CLUSTER_WATCH_SECONDS = 0.5
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM stop the cluster the way Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Shield the shutdown: a second Ctrl-C must not leave children running."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _announce(cluster: Cluster, notes: str) -> None:
    instances = " ".join(instance.address for instance in cluster.instances)
    balancing = "sticky by session cookie" if cluster.sticky else "round-robin"
    redis = (
        f"its own Redis at {cluster.redis_url} (no persistence: sessions end with the cluster)"
        if cluster.owns_redis
        else "the Redis of PRODIO_REDIS_URL"
    )
    logs = f"logs in {cluster.run_dir}"
    if cluster.log_dir is not None:
        logs += f" (copied to {cluster.log_dir} when it stops)"
    print(f"prodio cluster: {cluster.url}/", flush=True)
    print(f"  nginx ({balancing}) -> {len(cluster.instances)} prodio instance(s): {instances}")
    print(f"  sessions in {redis}")
    print(f"  {logs}")
    print("Press Ctrl-C to stop everything.", flush=True)
    if notes:
        print(notes, end="", file=sys.stderr, flush=True)


def _watch(cluster: Cluster) -> None:
    """Wait for Ctrl-C or SIGTERM; report instances that die, give up if nginx or Redis does."""
    while True:
        time.sleep(CLUSTER_WATCH_SECONDS)
        problem = cluster.fatal_problem()
        if problem is not None:
            raise ClusterError(problem)
        for instance in cluster.newly_dead_instances():
            print(
                f"{PROG}: warning: {instance.process.name} ({instance.address}) "
                f"{instance.process.exit_description}; nginx sends its requests to the "
                f"others (log: {instance.process.log_path})",
                file=sys.stderr,
                flush=True,
            )


def _cluster(args: argparse.Namespace) -> int:
    settings = load_settings()
    cluster = Cluster(
        settings,
        instances=args.instances,
        port=args.port,
        sticky=args.sticky,
        log_dir=args.log_dir,
    )
    try:
        cluster.check_prerequisites()
    except MissingBinaryError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    except ClusterError as error:
        raise CliError(str(error)) from None
    # Migrate the user database and make the first user once, before the instances start.
    notes = io.StringIO()
    prepare_serve(settings, stderr=notes)
    print(
        f"{PROG}: starting Redis, {args.instances} prodio instance(s) and nginx...",
        file=sys.stderr,
        flush=True,
    )
    with _sigterm_as_interrupt():
        try:
            cluster.start()
            _announce(cluster, notes.getvalue())
            _watch(cluster)
        except KeyboardInterrupt:
            print(f"{PROG}: stopping the cluster...", file=sys.stderr, flush=True)
        except ClusterError as error:
            if error.details:
                print(error.details, file=sys.stderr)
            raise CliError(str(error)) from None
        finally:
            with _signals_ignored():
                cluster.stop()
    return EXIT_OK


# -- users ----------------------------------------------------------------------------


@contextmanager
def _user_store(settings: Settings) -> Iterator[UserStore]:
    store = build_user_store(settings)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def _read_new_password(username: str, from_stdin: bool) -> str:
    if from_stdin:
        try:
            line = sys.stdin.readline() if sys.stdin is not None else ""
        except UnicodeDecodeError as error:
            raise CliError(f"standard input is not {error.encoding} text") from None
        if not line:
            raise CliError("no password on standard input")
        # Only the line ending goes: spaces belong to the password.
        return line.removesuffix("\n").removesuffix("\r")
    try:
        first = getpass.getpass(f"New password for {username}: ")
        second = getpass.getpass("Repeat the password: ")
    except EOFError:
        raise CliError("no password given (use --password-stdin to pipe one in)") from None
    if first != second:
        raise CliError("the two passwords differ; nothing was changed")
    return first


def _check_new_password(settings: Settings, password: str, username: str) -> None:
    """The password policy (with the configured context words), then, when
    ``PRODIO_PASSWORD_BREACH_API`` names one, the breach check (only the first 5 characters
    of the password's SHA-1 are sent)."""
    check_password_policy(password, username=username, context_words=settings.context_words())
    if settings.password_breach_api is None:
        return
    # Imported only when asked for: the HTTP client is of no use to the other commands.
    from prodio.users.breach import build_breach_check

    breach_check = build_breach_check(settings)
    if breach_check is None:
        return
    result = breach_check.check(password)
    if not result.checked:
        print(
            f"{PROG}: warning: {result.problem}; the password is set without it "
            "(PRODIO_PASSWORD_BREACH_API_ON_ERROR=allow)",
            file=sys.stderr,
        )


def _require_user(store: UserStore, name: str) -> None:
    if store.get(name) is None:
        raise UserNotFound(f"no user named {name}")


def _reachable_session_store(settings: Settings) -> SessionStore | None:
    """The session store this process can reach, or ``None`` when sessions live only in
    a running server's memory."""
    if settings.session_backend == "memory":
        return None
    return build_session_store(settings)


async def _end_sessions(store: SessionStore, username: str) -> int:
    try:
        return await store.delete_user_sessions(username)
    finally:
        await store.aclose()


def _revoke_sessions(settings: Settings, username: str) -> None:
    """End every session of ``username``, or say why this command cannot."""
    store = _reachable_session_store(settings)
    if store is None:
        print(
            f"{PROG}: note: sessions are kept in the server's memory "
            "(PRODIO_SESSION_BACKEND=memory), out of this command's reach: "
            f"the server ends {username}'s open sessions at their next request, within "
            f"{settings.account_recheck_interval:g} s (PRODIO_ACCOUNT_RECHECK_INTERVAL)",
            file=sys.stderr,
        )
        return
    try:
        ended = anyio.run(_end_sessions, store, username)
    except SessionStoreUnavailable as error:
        raise CliError(
            f"the account was changed, but {username}'s sessions could not be ended: {error}"
        ) from None
    print(f"ended {ended} open session(s) of {username}")


def _temporary_password_expired(user: User, settings: Settings) -> bool:
    return user.temporary_password_expired(settings.temporary_password_lifetime, datetime.now(UTC))


def _status(user: User, settings: Settings) -> str:
    status = "disabled" if user.disabled else "active"
    if _temporary_password_expired(user, settings):
        # Signs in no more: an administrator must set a new password.
        return status + ",temporary-password-expired"
    return status + (",temporary-password" if user.must_change_password else "")


def _users_add(args: argparse.Namespace) -> int:
    settings = load_settings()
    name = normalize_username(args.name)
    with _user_store(settings) as store:
        if store.get(name) is not None:
            raise UserExists(f"user {name} already exists")
        password = _read_new_password(name, args.password_stdin)
        _check_new_password(settings, password, name)
        password_hash = _new_password_hasher().hash(password, username=name)
        store.add(name, password_hash, must_change_password=args.temporary)
    print(f"added user {name}" + (_temporary_note(settings) if args.temporary else ""))
    return EXIT_OK


def _users_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _user_store(settings) as store:
        users = store.list()
    if not users:
        print("no users yet; add one with: prodio users add NAME")
        return EXIT_OK
    rows = [("NAME", "STATUS", "CREATED")] + [
        (user.username, _status(user, settings), user.created_at.strftime("%Y-%m-%d %H:%M UTC"))
        for user in users
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for name, status, created in rows:
        print(f"{name.ljust(widths[0])}  {status.ljust(widths[1])}  {created}")
    return EXIT_OK


def _change_account(
    args: argparse.Namespace,
    change: Callable[[UserStore, str], object],
    done: str,
    *,
    end_sessions: bool,
) -> int:
    """Apply ``change`` to the account named on the command line, say ``done`` (with
    ``{name}``), and end the account's sessions if asked."""
    settings = load_settings()
    name = normalize_username(args.name)
    with _user_store(settings) as store:
        change(store, name)
    print(done.format(name=name))
    if end_sessions:
        _revoke_sessions(settings, name)
    return EXIT_OK


def _users_remove(args: argparse.Namespace) -> int:
    return _change_account(
        args, lambda store, name: store.remove(name), "removed user {name}", end_sessions=True
    )


def _users_set_password(args: argparse.Namespace) -> int:
    settings = load_settings()
    name = normalize_username(args.name)
    with _user_store(settings) as store:
        _require_user(store, name)
        password = _read_new_password(name, args.password_stdin)
        _check_new_password(settings, password, name)
        password_hash = _new_password_hasher().hash(password, username=name)
        store.set_password_hash(name, password_hash, must_change_password=args.temporary)
    print(f"changed the password of {name}" + (_temporary_note(settings) if args.temporary else ""))
    _revoke_sessions(settings, name)
    return EXIT_OK


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    return _change_account(
        args,
        lambda store, name: store.set_disabled(name, disabled),
        f"{'disabled' if disabled else 'enabled'} user {{name}}",
        end_sessions=disabled,
    )


def _users_end_sessions(args: argparse.Namespace) -> int:
    # The new epoch reaches sessions wherever they live (a server's memory included); the
    # deletion that follows makes it immediate where this command can reach them.
    return _change_account(
        args,
        lambda store, name: store.renew_session_epoch(name),
        "signed {name} out everywhere: every session opened before now has ended",
        end_sessions=True,
    )


def _users_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def _users_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


# -- parsing --------------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def _instance_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= count <= MAX_INSTANCES:
        raise argparse.ArgumentTypeError(f"a cluster has 1 to {MAX_INSTANCES} instances")
    return count


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``prodio`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Put Gradio apps into production: serve them, manage users."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the web server",
        description="Run the web server; settings come from PRODIO_* variables and .env.",
    )
    serve.add_argument("--host", help="address to listen on (default: PRODIO_HOST)")
    serve.add_argument("--port", type=_port, help="port to listen on (default: PRODIO_PORT)")
    serve.add_argument(
        "--reload", action="store_true", help="restart when source files change (development)"
    )
    serve.set_defaults(handler=_serve)

    cluster = commands.add_parser(
        "cluster",
        help="try several instances behind nginx, on this machine",
        description=(
            "Start Redis (unless PRODIO_REDIS_URL is set), N prodio instances and nginx "
            "on 127.0.0.1, all with the current settings; Ctrl-C stops everything. "
            "Needs nginx and redis-server. See docs/deploy.md."
        ),
    )
    cluster.add_argument(
        "--instances",
        type=_instance_count,
        default=2,
        metavar="N",
        help="how many prodio instances (default: 2)",
    )
    cluster.add_argument(
        "--port", type=_port, default=8080, help="nginx's port (default: 8080; 0: a free one)"
    )
    cluster.add_argument(
        "--sticky",
        action="store_true",
        help="send each session to one instance (pages with queued or streaming events)",
    )
    cluster.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep a copy of every log there on exit"
    )
    cluster.set_defaults(handler=_cluster)

    users = commands.add_parser("users", help="manage user accounts")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    def with_name(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("name", metavar="NAME", help="user name")
        action.set_defaults(handler=handler)
        return action

    stdin_help = "read the password from the first line of standard input instead of asking"
    temporary_help = (
        "a temporary password: the user must choose their own at the next sign-in, "
        "before anything else"
    )
    add = with_name("add", "add a user (asks for the password)", _users_add)
    add.add_argument("--password-stdin", action="store_true", help=stdin_help)
    add.add_argument("--temporary", action="store_true", help=temporary_help)
    listing = actions.add_parser("list", help="list the users", description="List the users.")
    listing.set_defaults(handler=_users_list)
    with_name("remove", "remove a user and end their sessions", _users_remove)
    set_password = with_name(
        "set-password", "set a user's password and end their sessions", _users_set_password
    )
    set_password.add_argument("--password-stdin", action="store_true", help=stdin_help)
    set_password.add_argument("--temporary", action="store_true", help=temporary_help)
    with_name("disable", "stop a user from logging in and end their sessions", _users_disable)
    with_name("enable", "let a disabled user log in again", _users_enable)
    with_name(
        "end-sessions",
        "end all of a user's sessions (sign them out everywhere); the account stays as it is",
        _users_end_sessions,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prodio`` command; return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse has printed usage or help already.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as error:
        return _fail(str(error), error.exit_code)
    except SettingsError as error:
        return _fail(str(error), EXIT_USAGE)
    except (UserError, UserStoreUnavailable) as error:
        return _fail(str(error), EXIT_FAILED)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(message: str, exit_code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return exit_code
