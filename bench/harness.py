"""The processes a benchmark run starts and the numbers it reads from them.

Everything runs on this machine only (127.0.0.1), in a temporary folder of its own: a
``redis-server`` on a free port (never the shared 6379), the servers under test, ``wrk``
and, for the multi-instance scenario, ``nginx``. Servers are pinned to :data:`SERVER_CORE`,
load generators to :data:`LOAD_CORE`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SERVER_CORE = 0
LOAD_CORE = 1
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_SECONDS = 90.0
SECRET_KEY = "bench-secret-key-not-for-production-" + "k" * 32
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-1"
# The login storm's users: enough of them that no account ever has more than a few logins in
# flight, as when many different people sign in at once.
STORM_USER_PREFIX = "storm"
STORM_USERS = 100
STORM_PASSWORD = "storm-password-1"
# Headers a browser sends with a same-site form post (prodio's CSRF check wants one of them).
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}
PAGE_LOAD = {"sec-fetch-mode": "navigate", "accept": "text/html"}
CSRF_FIELD = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
SESSION_COOKIE = "prodio_session"


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and, if possible, what to do."""


def require_binary(name: str, package: str | None = None) -> str:
    """The path of ``name``, or a :class:`BenchError` saying which Debian package has it."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )
    if found is None:
        raise BenchError(f"{name} is not installed: apt-get install -y {package or name}")
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def available_cores() -> set[int]:
    return set(os.sched_getaffinity(0))


def pin_process(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` to ``core``; threads started later inherit it."""
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(int(task), {core})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS_PER_SECOND


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {name}")


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``)."""
    return _status_kib(pid, "VmHWM") * 1024


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def wait_until_idle(pid: int, *, timeout: float = 60.0, busy_share: float = 0.1) -> float:
    """Wait until ``pid`` uses less than ``busy_share`` of a core; return the seconds waited.

    A server that was sent more work than it could do (a login storm) keeps working on it
    after the clients gave up; the next round must not pay for that.
    """
    started = time.monotonic()
    step = 0.5
    before = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(step)
        after = cpu_seconds(pid)
        if after - before < busy_share * step:
            break
        before = after
    return time.monotonic() - started


def wait_for_status(url: str, *, timeout: float, process: subprocess.Popen[bytes]) -> float:
    """Poll ``url`` until it answers 200; return when it did (``time.monotonic()``)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"the process serving {url} exited with {process.returncode}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


@dataclass
class RunDirs:
    """The temporary folder of one run and the environment every server gets."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def base_env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PRODIO_", "GRADIO_"))
        }
        env.update(
            {
                "PRODIO_ENV": "dev",
                "PRODIO_SECRET_KEY": SECRET_KEY,
                "PRODIO_DATA_DIR": str(self.data_dir),
                "PRODIO_LOG_LEVEL": "INFO",
                "PRODIO_LOG_FORMAT": "text",
                "GRADIO_ANALYTICS_ENABLED": "False",
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env


def add_user(dirs: RunDirs, name: str, password: str) -> None:
    """Create a user the way an operator does: ``prodio users add NAME --password-stdin``."""
    users_command(dirs, "add", name, "--password-stdin", stdin=password + "\n")


def users_command(dirs: RunDirs, *args: str, stdin: str | None = None) -> str:
    """Run ``prodio users ARGS...`` as an operator does; return what it printed."""
    prodio = Path(sys.executable).with_name("prodio")
    done = subprocess.run(
        [str(prodio), "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=dirs.base_env(),
        cwd=dirs.root,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"prodio users {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def add_users_in_process(dirs: RunDirs, names: Sequence[str], password: str) -> None:
    """Create many users at once through prodio's user store API (what the CLI calls),
    in this process: one CLI process per user would take most of a quick run."""
    from prodio.config import Settings
    from prodio.users import PasswordHasher, build_user_store

    settings = Settings(
        _env_file=None,
        data_dir=dirs.data_dir,
        secret_key=SECRET_KEY,
    )
    store = build_user_store(settings)
    try:
        store.migrate()
        password_hash = PasswordHasher().hash(password)
        for name in names:
            store.add(name, password_hash)
    finally:
        store.close()


def storm_user_names() -> list[str]:
    return [f"{STORM_USER_PREFIX}{number:02d}" for number in range(STORM_USERS)]


@dataclass
class Server:
    """One server process under test: ``bench/serve.py APP`` under uvicorn."""

    name: str
    app: str
    loop: str
    http: str
    dirs: RunDirs
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/ping"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float = 0.0
    _log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        command = [
            sys.executable,
            str(BENCH_DIR / "serve.py"),
            self.app,
            "--port",
            str(self.port),
            "--loop",
            self.loop,
            "--http",
            self.http,
        ]
        env = {**self.dirs.base_env(), **self.env, "PRODIO_PORT": str(self.port)}
        self._log = self.dirs.log(self.name).open("wb")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=self.dirs.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        if self.process is None:
            raise BenchError(f"{self.name} was not started")
        try:
            self.ready_at = wait_for_status(
                self.base_url + self.ready_path, timeout=timeout, process=self.process
            )
        except BenchError as exc:
            tail = self.dirs.log(self.name).read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name}: {exc}\n--- its log ends with ---\n{tail}") from None

    def pin(self, core: int = SERVER_CORE) -> None:
        pin_process(self.pid, core)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None


class RedisServer:
    """A throwaway ``redis-server`` without persistence, on a free port, in the run folder."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_binary("redis-server")
        self.directory = directory / "redis"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("wb")
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    pin_process(self.process.pid, SERVER_CORE)
                    return
            time.sleep(0.05)
        raise BenchError("redis-server did not start within 10 s")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid) if self.process else 0.0

    def script_calls(self) -> int:
        """``EVALSHA`` + ``EVAL`` calls so far (``INFO commandstats``): every session store
        operation is one script, so this counts the store's round trips."""
        with redis.Redis(port=self.port, socket_timeout=5.0) as client:
            stats: dict[str, dict[str, int]] = client.info("commandstats")
        return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def login_cookie(base_url: str, username: str, password: str) -> str:
    """Log in through the login form, as a browser does; return the session cookie value."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        page = client.get("/login", headers=PAGE_LOAD)
        match = CSRF_FIELD.search(page.text)
        if page.status_code != 200 or match is None:
            raise BenchError(f"GET /login answered {page.status_code} without a CSRF token")
        answer = client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": match.group(1)},
            headers={**PAGE_LOAD, **SAME_ORIGIN},
        )
        cookie = answer.cookies.get(SESSION_COOKIE)
        if answer.status_code != 303 or not cookie:
            raise BenchError(f"POST /login answered {answer.status_code} without a session")
        return cookie


@dataclass(frozen=True)
class Target:
    """One HTTP request that ``wrk`` repeats."""

    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    # Headers that change from one request to the next, sent in turn (a session cookie per
    # simulated user): the load is many users' requests, not one user's 32 at once.
    header_turns: Sequence[Mapping[str, str]] = ()

    def check(self, base_url: str) -> None:
        """Send it once; a benchmark of error responses would measure nothing useful."""
        answer = httpx.request(
            self.method,
            base_url + self.path,
            headers=dict(self.headers),
            content=self.body.encode() if self.body is not None else None,
            timeout=30.0,
        )
        if answer.status_code != 200:
            raise BenchError(
                f"{self.method} {self.path} answered {answer.status_code}: {answer.text[:300]}"
            )


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, '
    .. '"p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


_script_numbers = itertools.count(1)


def _lua_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(target: Target) -> str:
    lines = [f"wrk.method = {_lua_string(target.method)}"]
    for name, value in target.headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    if target.body is not None:
        lines.append(f"wrk.body = {_lua_string(target.body)}")
    if target.header_turns:
        turns = ", ".join(
            "{" + ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in t.items()) + "}"
            for t in target.header_turns
        )
        lines.append(f"local turns = {{ {turns} }}")
        lines.append("local turn = 0")
        lines.append(
            "request = function()\n"
            "  turn = turn % #turns + 1\n"
            "  for name, value in pairs(turns[turn]) do wrk.headers[name] = value end\n"
            "  return wrk.format()\n"
            "end"
        )
    return "\n".join(lines) + "\n" + _WRK_DONE


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    base_url: str,
    target: Target,
    *,
    seconds: float,
    connections: int,
    script_dir: Path,
    threads: int = 1,
) -> WrkResult:
    wrk = require_binary("wrk")
    script = script_dir / f"wrk-{next(_script_numbers)}.lua"
    script.write_text(wrk_script(target))
    command = [
        "taskset",
        "-c",
        str(LOAD_CORE),
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url + target.path,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    line = next((row for row in done.stdout.splitlines() if row.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(
        raw[key]
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
    )


@dataclass(frozen=True)
class Measurement:
    """One round of one row: what wrk saw and what the server spent."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    requests: int
    errors: int
    redis_cpu_us_per_request: float = 0.0
    redis_scripts_per_request: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "requests_per_second": self.requests_per_second,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "cpu_us_per_request": self.cpu_us_per_request,
            "requests": self.requests,
            "errors": self.errors,
            "redis_cpu_us_per_request": self.redis_cpu_us_per_request,
            "redis_scripts_per_request": self.redis_scripts_per_request,
        }


def measure(
    base_url: str,
    target: Target,
    pids: Sequence[int],
    *,
    seconds: float,
    connections: int,
    script_dir: Path,
    redis: RedisServer | None = None,
) -> Measurement:
    """Run wrk against ``target`` and charge the CPU the ``pids`` used to its requests."""
    before = sum(cpu_seconds(pid) for pid in pids)
    redis_before = redis.cpu_seconds() if redis else 0.0
    scripts_before = redis.script_calls() if redis else 0
    result = run_wrk(
        base_url, target, seconds=seconds, connections=connections, script_dir=script_dir
    )
    spent = sum(cpu_seconds(pid) for pid in pids) - before
    redis_spent = (redis.cpu_seconds() - redis_before) if redis else 0.0
    scripts = (redis.script_calls() - scripts_before) if redis else 0
    requests = max(result.requests, 1)
    return Measurement(
        requests_per_second=result.requests_per_second,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        cpu_us_per_request=spent / requests * 1e6,
        requests=result.requests,
        errors=result.errors,
        redis_cpu_us_per_request=redis_spent / requests * 1e6,
        redis_scripts_per_request=scripts / requests,
    )
