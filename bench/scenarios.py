"""The scenarios of the benchmark; each returns plain data for the JSON file and the report."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import timing_stats
from harness import (
    BENCH_DIR,
    BENCH_PASSWORD,
    BENCH_USER,
    CLOCK_TICKS_PER_SECOND,
    LOAD_CORE,
    SAME_ORIGIN,
    SERVER_CORE,
    STORM_PASSWORD,
    BenchError,
    Measurement,
    RedisServer,
    RunDirs,
    Server,
    Target,
    add_user,
    free_port,
    login_cookie,
    measure,
    median,
    peak_rss_bytes,
    pin_process,
    require_binary,
    stop_process,
    storm_user_names,
    users_command,
    wait_for_status,
    wait_until_idle,
)

CONNECTIONS = 32
SESSIONS_PER_CONNECTION = 4
NOTE_TEXT = "hello from the benchmark"
# The Notepad's save event (its api_name was "save" in earlier versions of the page).
SAVE_EVENT_NAMES = ("notepad_save", "save")


@dataclass(frozen=True)
class Mode:
    """An event loop and HTTP parser pair for uvicorn."""

    key: str
    label: str
    loop: str
    http: str


MODES = {
    "httptools": Mode("httptools", "uvloop + httptools", "uvloop", "httptools"),
    "h11": Mode("h11", "asyncio + h11", "asyncio", "h11"),
}


@dataclass(frozen=True)
class Settings:
    """How long and how often: ``--quick`` and the full run differ only here."""

    quick: bool
    modes: Sequence[Mode]
    rounds: int
    seconds: float
    warmup: float
    storm_rate: float
    storm_drain: float
    memstore_sessions: int
    memstore_traced_sample: int
    memstore_budget: float
    startup_samples: int
    nginx: bool
    profile: bool
    scenarios: frozenset[str]
    refusal_samples: int = 300
    refusal_warmup: int = 20
    refusal_seed: int = 1


@dataclass(frozen=True)
class ServerSpec:
    app: str
    ready_path: str
    prodio_store: str | None = None


@dataclass(frozen=True)
class RowSpec:
    """One line of the main table: a request against one server, and its yardstick."""

    key: str
    label: str
    server: str
    request: str  # "ping", "session" or "event"
    baseline: str | None
    target_ratio: float | None = None


SERVERS = {
    "ping": ServerSpec("ping", "/ping"),
    "gradio-bare": ServerSpec("gradio-bare", "/config"),
    "gradio-state": ServerSpec("gradio-state", "/config"),
    "prodio-memory": ServerSpec("prodio", "/readyz", "memory"),
    "prodio-redis": ServerSpec("prodio", "/readyz", "redis"),
}

ROWS = (
    RowSpec("fastapi-ping", "bare FastAPI GET /ping", "ping", "ping", None),
    RowSpec(
        "auth-memory",
        "prodio GET /api/session, memory store",
        "prodio-memory",
        "session",
        "fastapi-ping",
        0.80,
    ),
    RowSpec(
        "auth-redis",
        "prodio GET /api/session, Redis store",
        "prodio-redis",
        "session",
        "fastapi-ping",
        0.70,
    ),
    RowSpec("gradio-bare", "bare Gradio event, no state", "gradio-bare", "event", None),
    RowSpec("gradio-state", "bare Gradio event, gr.State", "gradio-state", "event", "gradio-bare"),
    RowSpec(
        "event-memory",
        "prodio Notepad save, memory store",
        "prodio-memory",
        "event",
        "gradio-bare",
    ),
    RowSpec(
        "event-redis",
        "prodio Notepad save, Redis store",
        "prodio-redis",
        "event",
        "gradio-bare",
        0.85,
    ),
)


@dataclass
class Context:
    """What every scenario of one run shares."""

    dirs: RunDirs
    settings: Settings
    redis: RedisServer | None
    profile_dir: Path
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.say(f"note: {message}")


def summarize(rounds: Sequence[Measurement]) -> dict[str, float]:
    """Medians over the rounds, metric by metric."""
    keys = ("requests_per_second", "p50_ms", "p99_ms", "cpu_us_per_request")
    summary = {key: median([getattr(m, key) for m in rounds]) for key in keys}
    summary["redis_cpu_us_per_request"] = median([m.redis_cpu_us_per_request for m in rounds])
    summary["redis_scripts_per_request"] = median([m.redis_scripts_per_request for m in rounds])
    summary["errors"] = sum(m.errors for m in rounds)
    summary["requests"] = sum(m.requests for m in rounds)
    return summary


# -- requests ---------------------------------------------------------------------------


def session_headers(cookie: str | None) -> dict[str, str]:
    return {"Cookie": f"prodio_session={cookie}"} if cookie else {}


def event_target(base_url: str, cookies: Sequence[str]) -> Target:
    """``POST /gradio_api/run/predict`` for the Notepad's save event.

    The event is looked up in the app's own ``/config`` (with the session cookie for
    prodio), as the browser does; its text input gets a short note, any state input None.
    With several ``cookies`` the requests take them in turn: each is a user saving their
    own note (per-user state is per session), not one user saving 32 times at once.
    """
    headers = session_headers(cookies[0] if cookies else None)
    answer = httpx.get(base_url + "/config", headers=headers, timeout=30.0)
    if answer.status_code != 200:
        raise BenchError(f"GET /config answered {answer.status_code}")
    config = answer.json()
    types = {component["id"]: component["type"] for component in config["components"]}
    event = next(
        (dep for dep in config["dependencies"] if dep.get("api_name") in SAVE_EVENT_NAMES), None
    )
    if event is None:
        raise BenchError(f"no event named {' or '.join(SAVE_EVENT_NAMES)} in the Gradio config")
    data = [NOTE_TEXT if types.get(i) == "textbox" else None for i in event["inputs"]]
    body = {
        "data": data,
        "fn_index": event["id"],
        "trigger_id": event["targets"][0][0] if event["targets"] else None,
        "session_hash": "benchsession0001",
        "event_data": None,
    }
    prefix = config.get("api_prefix", "/gradio_api")
    return Target(
        f"{prefix}/run/predict",
        method="POST",
        # What a browser sends with the fetch of a page of the same site.
        headers={**headers, "Content-Type": "application/json", **SAME_ORIGIN},
        body=json.dumps(body),
        header_turns=[session_headers(cookie) for cookie in cookies] if len(cookies) > 1 else [],
    )


def target_for(row: RowSpec, server: Server, cookies: Sequence[str]) -> Target:
    """The request of ``row``; ``cookies`` are the sessions of the bench user on ``server``
    (none for the baselines)."""
    if row.request == "ping":
        return Target("/ping")
    if row.request == "session":
        return Target("/api/session", headers=session_headers(cookies[0] if cookies else None))
    return event_target(server.base_url, cookies)


# -- servers ----------------------------------------------------------------------------


def make_server(ctx: Context, key: str, mode: Mode, *, suffix: str = "") -> Server:
    spec = SERVERS[key]
    env: dict[str, str] = {}
    if spec.prodio_store is not None:
        env["PRODIO_SESSION_BACKEND"] = spec.prodio_store
        if spec.prodio_store == "redis":
            if ctx.redis is None:
                raise BenchError("the Redis store needs the benchmark's redis-server")
            env["PRODIO_REDIS_URL"] = ctx.redis.url
    return Server(
        name=f"{key}-{mode.key}{suffix}",
        app=spec.app,
        loop=mode.loop,
        http=mode.http,
        dirs=ctx.dirs,
        env=env,
        ready_path=spec.ready_path,
    )


@contextmanager
def running(servers: Sequence[Server], cores: Sequence[int] | None = None) -> Iterator[None]:
    """Start the servers side by side (faster), then pin each to its core once ready."""
    try:
        for server in servers:
            server.start()
        for index, server in enumerate(servers):
            server.wait_ready()
            server.pin(cores[index] if cores else SERVER_CORE)
        yield
    finally:
        for server in servers:
            server.stop()


def run_rounds(
    ctx: Context,
    jobs: Sequence[tuple[str, Callable[[float], Measurement]]],
    *,
    no_warmup: Sequence[str] = (),
) -> dict[str, list[Measurement]]:
    """A warm-up of every job (but those named in ``no_warmup``), then the rounds,
    interleaved (and reversed every other round), so that drift in the machine's speed
    spreads over all rows alike."""
    settings = ctx.settings
    for name, job in jobs:
        if name in no_warmup:
            continue
        ctx.say(f"  warm-up {name}")
        job(settings.warmup)
    results: dict[str, list[Measurement]] = {name: [] for name, _ in jobs}
    for number in range(settings.rounds):
        order = list(jobs) if number % 2 == 0 else list(reversed(jobs))
        for name, job in order:
            measured = job(settings.seconds)
            results[name].append(measured)
            ctx.say(
                f"  round {number + 1}/{settings.rounds} {name}: "
                f"{measured.requests_per_second:,.0f} req/s, p99 {measured.p99_ms:.1f} ms, "
                f"{measured.cpu_us_per_request:,.0f} µs CPU/req"
                + (f", {measured.errors} errors" if measured.errors else "")
            )
    return results


# -- scenarios 1-3: the request table and the login storm ------------------------------


def run_mode(ctx: Context, mode: Mode, *, with_redis: bool) -> dict[str, Any]:
    """Scenarios 1 and 2 (and 3 if asked) for one loop/parser pair."""
    settings = ctx.settings
    rows = [row for row in ROWS if with_redis or "redis" not in row.server]
    if "requests" not in settings.scenarios:
        rows = []
    server_keys = list(dict.fromkeys(row.server for row in rows))
    if "storm" in settings.scenarios:
        server_keys = list(dict.fromkeys([*server_keys, storm_server_key(with_redis)]))
    servers = {key: make_server(ctx, key, mode) for key in server_keys}
    ctx.say(f"{mode.label}: starting {', '.join(servers)}")
    result: dict[str, Any] = {"label": mode.label, "rows": {}}
    with running(list(servers.values())):
        # The event rows are many users' saves. wrk hands the sessions out in turn, not
        # one per connection, so there are several times as many sessions as connections:
        # otherwise a session's next save is often sent before its last one is answered.
        cookies = {
            key: [
                login_cookie(server.base_url, BENCH_USER, BENCH_PASSWORD)
                for _ in range(SESSIONS_PER_CONNECTION * CONNECTIONS)
            ]
            for key, server in servers.items()
            if key.startswith("prodio")
        }
        if "requests" in settings.scenarios:
            result["rows"] = measure_rows(ctx, rows, servers, cookies)
        if "storm" in settings.scenarios:
            key = storm_server_key(with_redis)
            result["storm"] = run_storm(ctx, servers[key], cookies[key][0])
        if settings.profile:
            result["profiles"] = profile_rows(ctx, mode, rows, servers, cookies)
    return result


def measure_rows(
    ctx: Context,
    rows: Sequence[RowSpec],
    servers: dict[str, Server],
    cookies: dict[str, list[str]],
) -> dict[str, Any]:
    targets: dict[str, Target] = {}
    for row in rows:
        server = servers[row.server]
        targets[row.key] = target_for(row, server, cookies.get(row.server, []))
        targets[row.key].check(server.base_url)

    def job(row: RowSpec) -> Callable[[float], Measurement]:
        server = servers[row.server]
        redis = ctx.redis if "redis" in row.server else None
        return lambda seconds: measure(
            server.base_url,
            targets[row.key],
            [server.pid],
            seconds=seconds,
            connections=CONNECTIONS,
            script_dir=ctx.dirs.root,
            redis=redis,
        )

    rounds = run_rounds(ctx, [(row.key, job(row)) for row in rows])
    # Peak RSS of each server over the whole table (a server serving two rows: both).
    peaks = {key: peak_rss_bytes(server.pid) for key, server in servers.items()}
    return {
        row.key: {
            "label": row.label,
            "server": row.server,
            "baseline": row.baseline,
            "target_ratio": row.target_ratio,
            "rounds": [m.as_dict() for m in rounds[row.key]],
            "median": summarize(rounds[row.key]),
            "peak_rss_bytes": peaks[row.server],
        }
        for row in rows
    }


def storm_server_key(with_redis: bool) -> str:
    return "prodio-redis" if with_redis else "prodio-memory"


def thread_cpu(pid: int) -> dict[int, tuple[float, int]]:
    """CPU seconds (user + system) and nice value of each thread of ``pid``."""
    found: dict[int, tuple[float, int]] = {}
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir():
        try:
            stat = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 14, 15 (utime, stime) and 19 (nice) of proc(5), counted from the state (3).
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND
        found[int(task.name)] = (seconds, int(fields[16]))
    return found


def cpu_shares(
    pid: int, before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]], wall: float
) -> dict[str, float]:
    """The cores each kind of thread used between two :func:`thread_cpu` readings: the
    event loop (the main thread), threads nicer than it (the hashing threads), the rest."""
    shares = {"loop": 0.0, "niced": 0.0, "other": 0.0}
    loop_nice = after.get(pid, (0.0, 0))[1]
    for tid, (seconds, nice) in after.items():
        used = seconds - before.get(tid, (0.0, nice))[0]
        kind = "loop" if tid == pid else "niced" if nice > loop_nice else "other"
        shares[kind] += used / wall if wall else 0.0
    return shares


def run_storm(ctx: Context, server: Server, cookie: str) -> dict[str, Any]:
    """Scenario 3: other users' ``GET /api/session`` with and without a login storm."""
    settings = ctx.settings
    target = Target("/api/session", headers=session_headers(cookie))
    target.check(server.base_url)
    storms: list[dict[str, Any]] = []
    shares: list[dict[str, float]] = []
    ramp = 1.0

    def quiet(seconds: float) -> Measurement:
        return measure(
            server.base_url,
            target,
            [server.pid],
            seconds=seconds,
            connections=CONNECTIONS,
            script_dir=ctx.dirs.root,
        )

    def stormy(seconds: float) -> Measurement:
        command = [
            "taskset",
            "-c",
            str(LOAD_CORE),
            sys.executable,
            str(BENCH_DIR / "login_storm.py"),
            "--url",
            server.base_url,
            "--users",
            ",".join(storm_user_names()),
            "--password-env",
            "BENCH_STORM_PASSWORD",
            "--rate",
            str(settings.storm_rate),
            "--seconds",
            str(seconds + 2 * ramp),
            "--drain-seconds",
            str(settings.storm_drain),
        ]
        env = {**os.environ, "BENCH_STORM_PASSWORD": STORM_PASSWORD}
        driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert driver.stdout is not None
            if driver.stdout.readline().strip() != "READY":
                raise BenchError("the login storm driver did not start")
            time.sleep(ramp)
            threads_before, wall_before = thread_cpu(server.pid), time.monotonic()
            measured = quiet(seconds)
            wall = time.monotonic() - wall_before
            shares.append(cpu_shares(server.pid, threads_before, thread_cpu(server.pid), wall))
            output, _ = driver.communicate(timeout=seconds + 180)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        if driver.returncode != 0 or not output.strip():
            raise BenchError(f"the login storm driver failed ({driver.returncode})")
        storms.append(json.loads(output.strip().splitlines()[-1]))
        storms[-1]["cpu_shares"] = shares[-1]
        ctx.say(
            f"  {storms[-1]['logins_per_second']:.1f} logins/s done in time, "
            f"{storms[-1].get('shed', 0)} shed; cores used: "
            + ", ".join(f"{kind} {share:.2f}" for kind, share in shares[-1].items())
        )
        # Logins the driver gave up on are still queued in the server: let it finish them.
        settled = wait_until_idle(server.pid)
        storms[-1]["settle_seconds"] = settled
        ctx.say(f"  the server finished its queued logins {settled:.0f} s after the storm")
        return measured

    ctx.say(f"login storm ({settings.storm_rate:g} logins/s) against {server.name}")
    rounds = run_rounds(ctx, [("quiet", quiet), ("storm", stormy)], no_warmup=("storm",))
    return {
        "server": server.name,
        "rate": settings.storm_rate,
        "quiet": summarize(rounds["quiet"]),
        "storm": summarize(rounds["storm"]),
        "quiet_rounds": [m.as_dict() for m in rounds["quiet"]],
        "storm_rounds": [m.as_dict() for m in rounds["storm"]],
        "logins": storms,
        "logins_per_second": median([s["logins_per_second"] for s in storms]),
        "login_p99_ms": median([s["login_p99_ms"] for s in storms]),
        "login_failures": sum(s["failures"] for s in storms),
        "logins_not_sent": sum(s["skipped"] for s in storms),
        "logins_unfinished": sum(s["unfinished"] for s in storms),
        "logins_shed": sum(s.get("shed", 0) for s in storms),
        "logins_throttled": sum(s.get("throttled", 0) for s in storms),
        "shed_per_second": median([s.get("shed_per_second", 0.0) for s in storms]),
        "shed_p99_ms": median([s.get("shed_p99_ms", 0.0) for s in storms]),
        # Cores the server's threads used while wrk measured the storm rounds (medians).
        "storm_cpu_shares": {
            kind: median([round_shares[kind] for round_shares in shares])
            for kind in ("loop", "niced", "other")
        },
    }


def profile_rows(
    ctx: Context,
    mode: Mode,
    rows: Sequence[RowSpec],
    servers: dict[str, Server],
    cookies: dict[str, list[str]],
) -> dict[str, Any]:
    """Sample the prodio rows with py-spy while wrk drives them (not during the rounds)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        ctx.note("py-spy is not installed (pip install -e '.[bench]'): no profiles")
        return {}
    profiles: dict[str, Any] = {}
    for row in rows:
        if not row.server.startswith("prodio"):
            continue
        server = servers[row.server]
        target = target_for(row, server, cookies.get(row.server, []))
        out = ctx.profile_dir / f"{mode.key}-{row.key}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        seconds = max(3.0, ctx.settings.seconds)
        command = [
            "taskset",
            "-c",
            str(LOAD_CORE),
            str(spy),
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(round(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ]
        ctx.say(f"  profiling {row.key} ({mode.label}) with py-spy")
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        measure(
            server.base_url,
            target,
            [server.pid],
            seconds=seconds + 1,
            connections=CONNECTIONS,
            script_dir=ctx.dirs.root,
        )
        recorder.wait(timeout=60)
        if out.exists():
            profiles[row.key] = {"file": str(out), "top": fold_profile(out)}
    return profiles


def fold_profile(path: Path, limit: int = 25) -> dict[str, list[tuple[str, float]]]:
    """The frames with most samples: on their own ("self") and with callees ("total")."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return {"self": [], "total": []}
    return {
        "self": [(frame, 100 * n / samples) for frame, n in own.most_common(limit)],
        "total": [(frame, 100 * n / samples) for frame, n in total.most_common(limit * 2)],
    }


# -- scenario 4: the in-memory store at scale ------------------------------------------


def run_memstore(ctx: Context) -> dict[str, Any]:
    settings = ctx.settings
    command = [
        "taskset",
        "-c",
        str(SERVER_CORE),
        sys.executable,
        str(BENCH_DIR / "memstore.py"),
        "--sessions",
        str(settings.memstore_sessions),
        "--traced-sample",
        str(settings.memstore_traced_sample),
        "--budget",
        str(settings.memstore_budget),
    ]
    ctx.say(f"in-memory store with {settings.memstore_sessions:,} sessions")
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise BenchError(f"memstore.py failed: {done.stderr.strip()[-1000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- start-up ---------------------------------------------------------------------------


def run_startup(ctx: Context) -> dict[str, Any]:
    """Process start to the first 200 on /readyz (``prodio serve``) vs ``import gradio``."""
    settings = ctx.settings
    prodio = str(Path(sys.executable).with_name("prodio"))
    pin = ["taskset", "-c", str(SERVER_CORE)]
    env = ctx.dirs.base_env()

    def import_gradio() -> float:
        # Until the import is done, not until the interpreter has exited (its shutdown
        # takes most of a second more): the same end point as "ready" on the other side.
        code = "import gradio; print('imported', flush=True)"
        started = time.monotonic()
        process = subprocess.Popen(
            [*pin, sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        imported = time.monotonic()
        process.wait(timeout=300)
        if line.strip() != "imported" or process.returncode != 0:
            raise BenchError(f"python -c 'import gradio' failed ({process.returncode})")
        return imported - started

    def serve_until_ready() -> float:
        port = free_port()
        log = ctx.dirs.log(f"startup-{port}").open("wb")
        started = time.monotonic()
        process = subprocess.Popen(
            [*pin, prodio, "serve", "--port", str(port)],
            env=env,
            cwd=ctx.dirs.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = wait_for_status(f"http://127.0.0.1:{port}/readyz", timeout=300, process=process)
        finally:
            stop_process(process)
            log.close()
        return ready - started

    ctx.say("start-up: prodio serve to the first 200 on /readyz, vs import gradio")
    import_gradio()  # once for the page cache, as on any machine that ran it before
    imports: list[float] = []
    readies: list[float] = []
    for _ in range(settings.startup_samples):
        imports.append(import_gradio())
        readies.append(serve_until_ready())
    result = {
        "import_gradio_seconds": median(imports),
        "ready_seconds": median(readies),
        "import_samples": imports,
        "ready_samples": readies,
    }
    ctx.say(
        f"  import gradio {result['import_gradio_seconds']:.2f} s, "
        f"/readyz after {result['ready_seconds']:.2f} s"
    )
    return result


# -- scenario 5: 1 vs 2 instances behind nginx -----------------------------------------

NGINX_CONF = """worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream prodio {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://prodio;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""


@dataclass
class Nginx:
    """An nginx of our own (round-robin over ``upstreams``), config in the run folder."""

    root: Path
    upstreams: Sequence[int]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = require_binary("nginx")
        self.root.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{port};" for port in self.upstreams)
        conf = self.root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=self.root, servers=servers, port=self.port))
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.root), "-e", str(self.root / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_status(self.base_url + "/healthz", timeout=15, process=self.process)
        # Master and worker beside the load generator, away from the server core.
        for child in self.pids():
            pin_process(child, LOAD_CORE)

    def pids(self) -> list[int]:
        if self.process is None:
            return []
        found = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            found += [int(pid) for pid in children.read_text().split()]
        return found

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def run_nginx(ctx: Context, mode: Mode) -> dict[str, Any]:
    """Scenario 5: the Redis-backed app direct, behind nginx, and as two instances."""
    first = make_server(ctx, "prodio-redis", mode, suffix="-a")
    second = make_server(ctx, "prodio-redis", mode, suffix="-b")
    ctx.say("nginx: 1 vs 2 prodio instances (Redis store)")
    with running([first, second], cores=[SERVER_CORE, LOAD_CORE]):
        one = Nginx(ctx.dirs.root / "nginx-one", [first.port])
        two = Nginx(ctx.dirs.root / "nginx-two", [first.port, second.port])
        try:
            one.start()
            two.start()
            cookie = login_cookie(first.base_url, BENCH_USER, BENCH_PASSWORD)
            target = Target("/api/session", headers=session_headers(cookie))
            for url in (first.base_url, one.base_url, two.base_url):
                target.check(url)

            def job(url: str, pids: Sequence[int]) -> Callable[[float], Measurement]:
                return lambda seconds: measure(
                    url,
                    target,
                    pids,
                    seconds=seconds,
                    connections=CONNECTIONS,
                    script_dir=ctx.dirs.root,
                    redis=ctx.redis,
                )

            rounds = run_rounds(
                ctx,
                [
                    ("direct, 1 instance", job(first.base_url, [first.pid])),
                    ("nginx, 1 instance", job(one.base_url, [first.pid])),
                    ("nginx, 2 instances", job(two.base_url, [first.pid, second.pid])),
                ],
            )
        finally:
            one.stop()
            two.stop()
    return {
        "mode": mode.label,
        "rows": {name: summarize(measured) for name, measured in rounds.items()},
    }


# -- login refusals: one answer and one timing for every reason ------------------------

# The three refusals a sign-in can get, each by a name of the same length (the refusal page
# shows the name typed back, so the answers then have the same size too).
REFUSAL_KINDS = {
    "wrong_password": "timing-alice",  # an active account, a wrong password
    "unknown_user": "timing-ghost",  # no such account
    "disabled_account": "timing-carol",  # a disabled account (its own password unknown)
}
REFERENCE_KIND = "wrong_password"
REFUSAL_PASSWORD = "timing-password-1"
REFUSAL_LABELS = {
    "wrong_password": "wrong password",
    "unknown_user": "unknown user",
    "disabled_account": "disabled account",
}
# Limits no measurement reaches: every attempt takes the whole refusal path (throttle
# check, password check, failure counted, login page), none is refused by a lock.
NO_LOCK = {
    "PRODIO_LOGIN_MAX_FAILURES": "1000000000",
    "PRODIO_LOGIN_MAX_FAILURES_PER_IP": "1000000000",
}
# What differs from one answer to the next whatever the reason: replaced before comparing.
VOLATILE_HEADERS = {"date", "x-request-id"}
CSRF_VALUE = re.compile(r'(name="csrf_token"\s+value=")[^"]+(")')


def create_refusal_users(ctx: Context) -> None:
    """The accounts the refusals are for, made as an operator makes them (the CLI, with
    the default argon2id cost); the unknown name is never made."""
    add_user(ctx.dirs, REFUSAL_KINDS["wrong_password"], REFUSAL_PASSWORD)
    add_user(ctx.dirs, REFUSAL_KINDS["disabled_account"], REFUSAL_PASSWORD)
    users_command(ctx.dirs, "disable", REFUSAL_KINDS["disabled_account"])
    listing = {
        line.split()[0]: line.split()[1]
        for line in users_command(ctx.dirs, "list").splitlines()[1:]
        if line.strip()
    }
    expected = {
        REFUSAL_KINDS["wrong_password"]: "active",
        REFUSAL_KINDS["disabled_account"]: "disabled",
    }
    if any(listing.get(name) != status for name, status in expected.items()) or (
        REFUSAL_KINDS["unknown_user"] in listing
    ):
        raise BenchError(f"the refusal accounts are not as meant: {listing}")


def normalized_answer(answer: dict[str, Any], username: str) -> tuple[bytes, list[str]]:
    """The answer with what legitimately varies replaced: the CSRF token (new on every
    page), the name typed (shown back in the form), ``Date`` and ``X-Request-Id``."""
    body = CSRF_VALUE.sub(r"\1<csrf>\2", answer["body"]).replace(username, "<name>")
    lines = [f"status {answer['status']}"]
    for name, value in answer["headers"]:
        lowered = name.lower()
        if lowered in VOLATILE_HEADERS:
            value = "<varies>"
        lines.append(f"{lowered}: {value}")
    return body.encode(), lines


def compare_answers(raw: dict[str, Any]) -> dict[str, Any]:
    """Byte sizes of each kind's answer, and whether the answers are the same once the
    token, the name typed, the date and the request id are set aside."""
    answers: dict[str, Any] = {}
    normalized: dict[str, tuple[bytes, list[str]]] = {}
    for kind, answer in raw["answers"].items():
        username = raw["usernames"][kind]
        normalized[kind] = normalized_answer(answer, username)
        answers[kind] = {
            "status": answer["status"],
            "body_bytes": len(answer["body"].encode()),
            # As on the wire: "name: value\r\n" per header.
            "header_bytes": sum(len(name) + len(value) + 4 for name, value in answer["headers"]),
            "header_names": [name.lower() for name, _ in answer["headers"]],
        }
    reference_body, reference_headers = normalized[REFERENCE_KIND]
    differences: dict[str, list[str]] = {}
    for kind, (body, headers) in normalized.items():
        found = []
        if body != reference_body:
            found.append("body")
        if headers != reference_headers:
            found += sorted(set(headers) ^ set(reference_headers)) or ["header order"]
        differences[kind] = found
    return {
        "answers": answers,
        "differences": differences,
        "identical": not any(differences.values()),
        "set_aside": ["csrf_token value", "the name typed", *sorted(VOLATILE_HEADERS)],
    }


def run_refusals(ctx: Context, mode: Mode) -> dict[str, Any]:
    """Wrong password, unknown user and disabled account against a real prodio over HTTP:
    the same answer, and no timing gap a test can tell at this many samples?"""
    from prodio.users.passwords import (
        DEFAULT_MEMORY_COST_KIB,
        DEFAULT_PARALLELISM,
        DEFAULT_TIME_COST,
    )

    settings = ctx.settings
    ctx.say(
        f"login refusals: {settings.refusal_samples} per kind, interleaved at random "
        f"({mode.label}, default argon2id cost)"
    )
    create_refusal_users(ctx)
    server = Server(
        name=f"refusals-{mode.key}",
        app="prodio",
        loop=mode.loop,
        http=mode.http,
        dirs=ctx.dirs,
        env={"PRODIO_SESSION_BACKEND": "memory", **NO_LOCK},
        ready_path="/readyz",
    )
    command = [
        "taskset",
        "-c",
        str(LOAD_CORE),
        sys.executable,
        str(BENCH_DIR / "login_refusals.py"),
        "--samples",
        str(settings.refusal_samples),
        "--warmup",
        str(settings.refusal_warmup),
        "--seed",
        str(settings.refusal_seed),
    ]
    for kind, username in REFUSAL_KINDS.items():
        command += ["--kind", f"{kind}={username}"]
    with running([server]):
        requests = len(REFUSAL_KINDS) * (settings.refusal_samples + settings.refusal_warmup)
        cpu_before = thread_cpu(server.pid)
        done = subprocess.run(
            [*command, "--url", server.base_url],
            capture_output=True,
            text=True,
            timeout=60 + 5 * requests,
            check=False,
        )
        server_cpu = thread_cpu(server.pid)
    if done.returncode != 0:
        raise BenchError(f"login_refusals.py failed: {done.stderr.strip()[-1000:]}")
    raw: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    times: dict[str, list[float]] = raw["times_ms"]
    unexpected = {kind: codes for kind, codes in raw["statuses"].items() if set(codes) != {"401"}}
    if unexpected:
        # A 429 (lock, busy) or 503 (shed) is not the refusal this measures.
        raise BenchError(f"refusals answered other than 401: {unexpected}")
    kinds = {kind: timing_stats.describe(values) for kind, values in times.items()}
    comparisons = {
        kind: timing_stats.compare(values, times[REFERENCE_KIND], seed=settings.refusal_seed)
        for kind, values in times.items()
        if kind != REFERENCE_KIND
    }
    for kind, figures in kinds.items():
        line = (
            f"  {REFUSAL_LABELS[kind]}: median {figures['median_ms']:.2f} ms "
            f"(p10 {figures['p10_ms']:.2f}, p90 {figures['p90_ms']:.2f})"
        )
        if kind in comparisons:
            c = comparisons[kind]
            line += (
                f", {c.median_ratio:.3f} of wrong password, Mann-Whitney p {c.mann_whitney_p:.3f}, "
                f"permutation p {c.permutation_p:.3f}"
            )
        ctx.say(line)
    answers = compare_answers(raw)
    ctx.say(
        "  answers "
        + ("identical" if answers["identical"] else f"DIFFER: {answers['differences']}")
        + " once the CSRF token, the name typed, Date and X-Request-Id are set aside"
    )
    cpu_seconds = sum(
        seconds - cpu_before.get(tid, (0.0, 0))[0] for tid, (seconds, _) in server_cpu.items()
    )
    return {
        "mode": mode.label,
        "reference": REFERENCE_KIND,
        "labels": REFUSAL_LABELS,
        "usernames": raw["usernames"],
        "samples": settings.refusal_samples,
        "warmup": settings.refusal_warmup,
        "seed": raw["seed"],
        "seconds": raw["seconds"],
        "server_cpu_ms_per_request": cpu_seconds / requests * 1000,
        "argon2": {
            "time_cost": DEFAULT_TIME_COST,
            "memory_cost_kib": DEFAULT_MEMORY_COST_KIB,
            "parallelism": DEFAULT_PARALLELISM,
        },
        "alpha": timing_stats.ALPHA,
        "kinds": kinds,
        "comparisons": {kind: c.as_dict() for kind, c in comparisons.items()},
        "responses": answers,
        "times_ms": times,
        "order": raw["order"],
    }
