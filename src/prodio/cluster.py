"""A local cluster for trying prodio scaled out: Redis, N prodio instances and nginx.

Everything listens on 127.0.0.1 only. :class:`Cluster` starts, in order:

1. a ``redis-server`` of its own (a temp folder, a free port, no persistence), unless
   ``PRODIO_REDIS_URL`` names one;
2. N ``prodio serve`` processes on free ports, with the caller's settings (the same secret
   key, the same user database) plus ``PRODIO_SESSION_BACKEND=redis``, started side by
   side since each spends seconds importing Gradio;
3. nginx with ``deploy/nginx.conf`` rendered into the temp folder, round-robin over them.

Every child runs in its own process group, so that a Ctrl-C in the terminal reaches only
the ``prodio cluster`` process, which then stops the children in order: nginx first (no
new requests), then the instances, then Redis. Each gets SIGTERM, then SIGKILL if it has
not exited in time. The temp folder goes last; ``log_dir`` keeps a copy of the logs.

Used by ``prodio cluster`` and by the end-to-end tests in ``tests/cluster``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

import anyio
from pydantic import SecretStr

from prodio.config import Settings
from prodio.session import SessionStoreUnavailable, build_session_store
from prodio.users import build_user_store

LOOPBACK: Final = "127.0.0.1"
# The template lives in the source tree, beside the docs that explain it.
NGINX_TEMPLATE: Final = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
# Room for the multipart envelope (boundaries, part headers) around a file of the maximum
# size: nginx counts the whole request body.
MULTIPART_OVERHEAD_BYTES: Final = 1024 * 1024
MAX_INSTANCES: Final = 16
# One failed connection takes an instance out of the rotation for this long; then nginx
# tries it again with one request.
UPSTREAM_MAX_FAILS: Final = 1
UPSTREAM_FAIL_TIMEOUT_SECONDS: Final = 5
# Importing Gradio takes seconds, and CI machines are slow.
START_TIMEOUT_SECONDS: Final = 120.0
STOP_TIMEOUT_SECONDS: Final = 10.0
_POLL_SECONDS: Final = 0.1
_PROBE_TIMEOUT_SECONDS: Final = 2.0
_LOG_TAIL_LINES: Final = 20

STICKY_LINE: Final = "# hash $prodio_session_key consistent;"
UPSTREAM_HEADER_LINE: Final = "# add_header X-Upstream $upstream_addr always;"
_MARKER: Final = re.compile(r"@[A-Z_]+@")


class ClusterError(Exception):
    """The cluster could not be started or kept running; the message is one line.

    ``details`` holds supporting lines (the end of a log), to show before the message.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class MissingBinaryError(ClusterError):
    """A program the cluster needs (nginx, redis-server) is not installed."""


# -- the nginx configuration ------------------------------------------------------------


def client_max_body_size(max_file_size: int) -> int:
    """nginx's ``client_max_body_size`` for uploads of up to ``max_file_size`` bytes."""
    return max_file_size + MULTIPART_OVERHEAD_BYTES


def upstream_server_line(address: str) -> str:
    """The ``server`` line of one instance in the ``upstream`` block."""
    return (
        f"server {address} max_fails={UPSTREAM_MAX_FAILS} "
        f"fail_timeout={UPSTREAM_FAIL_TIMEOUT_SECONDS}s;"
    )


def render_nginx_config(
    template: str,
    *,
    listen: str,
    upstreams: Sequence[str],
    max_file_size: int,
    sticky: bool = False,
    upstream_header: bool = False,
) -> str:
    """Fill in the markers of ``deploy/nginx.conf``.

    ``upstreams`` are the instances' ``host:port``. ``sticky`` turns on the session-cookie
    hash; ``upstream_header`` adds ``X-Upstream`` (which instance answered) to responses.
    Raises :class:`ValueError` when the template lacks a marker or an option line.
    """
    if not upstreams:
        raise ValueError("an nginx upstream needs at least one server")
    replacements = {
        "@LISTEN@": listen,
        "@UPSTREAM_SERVERS@": "\n        ".join(upstream_server_line(a) for a in upstreams),
        "@CLIENT_MAX_BODY_SIZE@": str(client_max_body_size(max_file_size)),
    }
    options = {STICKY_LINE: sticky, UPSTREAM_HEADER_LINE: upstream_header}
    lines = template.splitlines(keepends=True)
    # Markers are filled in directives only: the comments explain them by name.
    directives = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#")]
    for marker, value in replacements.items():
        found = [i for i in directives if marker in lines[i]]
        if len(found) != 1 or lines[found[0]].count(marker) != 1:
            raise ValueError(f"the nginx template must use {marker} exactly once")
        lines[found[0]] = lines[found[0]].replace(marker, value)
    for option, enabled in options.items():
        found = [i for i, line in enumerate(lines) if line.strip() == option]
        if len(found) != 1:
            raise ValueError(f"the nginx template must hold the line {option!r} exactly once")
        if enabled:
            lines[found[0]] = lines[found[0]].replace(option, option.removeprefix("# "))
    leftover = sorted({m for i in directives for m in _MARKER.findall(lines[i])})
    if leftover:
        raise ValueError(f"the nginx template has markers nothing fills: {leftover}")
    return "".join(lines)


# -- settings handed to the instances ---------------------------------------------------


def settings_environment(settings: Settings) -> dict[str, str]:
    """``PRODIO_*`` variables that make ``prodio serve`` read exactly ``settings``.

    The secret key is among them: each instance gets it in its own environment, never on
    a command line (which any local user can read).
    """
    environment: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Enum):
            text = str(value.value)
        elif isinstance(value, Path):
            text = str(value.resolve())
        elif isinstance(value, list | dict):
            text = json.dumps(value)
        else:
            text = str(value)
        environment[f"PRODIO_{name.upper()}"] = text
    return environment


# -- processes -------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on ``host:port`` now (as nginx binds: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def read_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A child process in its own process group, its output appended to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    @property
    def exit_description(self) -> str:
        """How it ended, in words: "exited with status 1", "was killed by SIGKILL"."""
        code = self.returncode
        if code is None:
            return "is running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def start(self) -> None:
        """Start it (again); the log file keeps what earlier runs wrote."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                # Its own process group: a terminal's Ctrl-C reaches only the cluster
                # process, which stops the children in order.
                start_new_session=True,
            )

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._process is None:
            return
        # The group outlives its leader while other members (nginx workers) remain.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its process group) without waiting."""
        if self.running:
            self._signal_group(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for it to exit until ``deadline`` (``time.monotonic``), then SIGKILL."""
        if self._process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
        # Also sweeps members of the group its leader left behind.
        self._signal_group(signal.SIGKILL)
        self._process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        self.terminate()
        self.wait_or_kill(time.monotonic() + timeout)

    def kill(self) -> None:
        """SIGKILL its process group at once and reap it."""
        self._signal_group(signal.SIGKILL)
        if self._process is not None:
            self._process.wait()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return read_tail(self.log_path, lines)


def stop_all(processes: Sequence[ManagedProcess], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop several processes at once: SIGTERM to all, one shared deadline, then SIGKILL."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_or_kill(deadline)


# Straight to 127.0.0.1, whatever http_proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    """The status of a GET to ``url``, or None when nothing answered."""
    try:
        with _DIRECT.open(url, timeout=_PROBE_TIMEOUT_SECONDS) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def _answers_redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=_PROBE_TIMEOUT_SECONDS) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
    except OSError:
        return False


SERVICE_START_TIMEOUT_SECONDS: Final = 30.0


def wait_until_up(
    condition: Callable[[], bool],
    process: ManagedProcess,
    *,
    what: str,
    timeout: float = SERVICE_START_TIMEOUT_SECONDS,
    log: Path | None = None,
) -> None:
    """Poll ``condition`` until it holds; raise :class:`ClusterError` (with the end of the
    log) if ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not process.running:
            raise ClusterError(
                f"{process.name} {process.exit_description} while starting",
                read_tail(log or process.log_path),
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"gave up waiting {timeout:.0f} s for {what}", read_tail(log or process.log_path)
            )
        time.sleep(_POLL_SECONDS)


class NginxProcess:
    """nginx in the foreground, with a rendered configuration, in a folder of its own.

    The folder is nginx's prefix: its pid file, logs (``error.log``, ``access.log``) and
    temp files go there. When started as root, nginx's workers run as ``nobody`` and need
    to pass through that folder: make it ``0o711`` (``Cluster`` does).
    """

    def __init__(
        self, binary: str, run_dir: Path, config: str, port: int, *, env: Mapping[str, str]
    ) -> None:
        self.run_dir = run_dir
        self.port = port
        self.config_path = run_dir / "nginx.conf"
        self.error_log = run_dir / "error.log"
        self.config_path.write_text(config)
        self.process = ManagedProcess(
            "nginx",
            [
                binary,
                "-p",
                f"{run_dir}/",
                "-c",
                str(self.config_path),
                "-e",
                str(self.error_log),
                "-g",
                "daemon off;",
            ],
            env=env,
            cwd=run_dir,
            log_path=run_dir / "nginx.log",
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start nginx and wait until ``/healthz`` answers 200 through it."""
        self.process.start()
        wait_until_up(
            lambda: _http_status(self.url + "/healthz") == 200,
            self.process,
            what=f"nginx to answer on port {self.port}",
            log=self.error_log,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        self.process.stop(timeout)


# -- the cluster -----------------------------------------------------------------------


@dataclass
class Instance:
    """One ``prodio serve`` of the cluster."""

    number: int
    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class Cluster:
    """Redis, ``instances`` prodio servers and nginx on 127.0.0.1; see the module doc.

    ``settings`` are what every instance runs with (the backend becomes Redis). With
    ``settings.redis_url`` set, that Redis is used; otherwise the cluster starts its own.
    ``port`` is nginx's (0: a free one). ``environ`` is the environment the children
    inherit (default: this process's; its ``PRODIO_*`` variables are replaced by
    ``settings``). ``log_dir``, when given, receives a copy of every log at :meth:`stop`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        instances: int = 2,
        port: int = 8080,
        sticky: bool = False,
        upstream_header: bool = True,
        log_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        nginx_template: Path = NGINX_TEMPLATE,
        start_timeout: float = START_TIMEOUT_SECONDS,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        if not 1 <= instances <= MAX_INSTANCES:
            raise ValueError(f"a cluster has 1 to {MAX_INSTANCES} instances, not {instances}")
        self.settings = settings
        self.instance_count = instances
        self.port = port if port else free_port()
        self.sticky = sticky
        self.upstream_header = upstream_header
        self.log_dir = log_dir
        self.environ = dict(os.environ if environ is None else environ)
        self.nginx_template = nginx_template
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.run_dir: Path | None = None
        self.redis: ManagedProcess | None = None
        self.redis_url = settings.redis_url
        self.instances: list[Instance] = []
        self.nginx: NginxProcess | None = None
        self._reported_dead: set[int] = set()

    # -- what it needs ------------------------------------------------------------------

    @property
    def owns_redis(self) -> bool:
        """Whether the cluster runs a Redis of its own (neither a URL nor Sentinels given)."""
        return self.settings.redis_url is None and not self.settings.redis_sentinels

    @property
    def url(self) -> str:
        """Where nginx listens: the address to open in a browser."""
        return f"http://{LOOPBACK}:{self.port}"

    def required_binaries(self) -> list[str]:
        return ["nginx", *(["redis-server"] if self.owns_redis else [])]

    def _which(self, name: str) -> str | None:
        return shutil.which(name, path=self.environ.get("PATH"))

    def _binary(self, name: str) -> str:
        path = self._which(name)
        if path is None:
            raise MissingBinaryError(
                f"{name} is not installed, and prodio cluster needs it "
                f"(Debian/Ubuntu: apt-get install {name})"
            )
        return path

    def check_prerequisites(self) -> None:
        """Fail early, before anything starts: binaries, the nginx template, the port.

        Raises :class:`MissingBinaryError` or :class:`ClusterError`.
        """
        missing = [name for name in self.required_binaries() if self._which(name) is None]
        if missing:
            listed = " and ".join(missing)
            raise MissingBinaryError(
                f"{listed} {'is' if len(missing) == 1 else 'are'} not installed, and "
                f"prodio cluster needs {'it' if len(missing) == 1 else 'them'} "
                f"(Debian/Ubuntu: apt-get install {' '.join(missing)})"
            )
        if not self.nginx_template.is_file():
            raise ClusterError(
                f"cannot find the nginx template {self.nginx_template}: prodio cluster runs "
                "from a source checkout of prodio"
            )
        if not port_is_free(self.port):
            raise ClusterError(
                f"port {self.port} on {LOOPBACK} is in use: pick another with --port"
            )

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Start Redis (if its own), the instances and nginx; wait until nginx serves.

        On any failure everything started so far is stopped again before the error
        (:class:`ClusterError`) propagates.
        """
        if self.run_dir is not None:
            raise RuntimeError("the cluster is already started")
        self.check_prerequisites()
        self.run_dir = Path(tempfile.mkdtemp(prefix="prodio-cluster-"))
        if os.geteuid() == 0:
            # nginx's workers drop root for `nobody` and must reach their temp folders.
            self.run_dir.chmod(0o711)
        try:
            if self.owns_redis:
                self._start_redis()
            self._check_redis()
            self._prepare_user_store()
            self._launch_instances()
            self.wait_instances_ready(self.instances)
            self._start_nginx()
        except BaseException:
            self.stop()
            raise

    def _start_redis(self) -> None:
        assert self.run_dir is not None
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(mode=0o700)
        port = free_port()
        options = {
            "port": str(port),
            "bind": LOOPBACK,
            "dir": str(data_dir),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "protected-mode": "yes",
            "loglevel": "warning",
        }
        argv = [self._binary("redis-server")]
        argv += [item for name, value in options.items() for item in (f"--{name}", value)]
        self.redis = ManagedProcess(
            "redis-server",
            argv,
            env=self._base_environment(),
            cwd=self.run_dir,
            log_path=self.run_dir / "redis.log",
        )
        self.redis.start()
        self.redis_url = f"redis://{LOOPBACK}:{port}/0"
        wait_until_up(
            lambda: _answers_redis_ping(port), self.redis, what="redis-server to answer PING"
        )

    def instance_settings(self) -> Settings:
        """The settings every instance runs with."""
        return self.settings.model_copy(
            update={
                "session_backend": "redis",
                "redis_url": self.redis_url,
                "host": LOOPBACK,
                "trusted_proxies": [LOOPBACK],
                "data_dir": self.settings.data_dir.resolve(),
                "database_url": self.settings.effective_database_url,
            }
        )

    def _check_redis(self) -> None:
        store = build_session_store(self.instance_settings())

        async def ping() -> None:
            try:
                await store.ping()
            finally:
                await store.aclose()

        try:
            anyio.run(ping)
        except SessionStoreUnavailable as error:
            raise ClusterError(f"cannot reach Redis: {error}") from None

    def _prepare_user_store(self) -> None:
        # Once, before the instances start: they would otherwise all migrate at once.
        store = build_user_store(self.instance_settings())
        try:
            store.migrate()
        finally:
            store.close()

    def _base_environment(self) -> dict[str, str]:
        return {k: v for k, v in self.environ.items() if not k.startswith("PRODIO_")}

    def instance_environment(self, port: int) -> dict[str, str]:
        """The environment of the instance listening on ``port``."""
        environment = self._base_environment()
        environment.update(settings_environment(self.instance_settings()))
        environment["PRODIO_PORT"] = str(port)
        # Log lines reach the log file as they are written.
        environment["PYTHONUNBUFFERED"] = "1"
        return environment

    def _launch_instances(self) -> None:
        assert self.run_dir is not None
        for number in range(1, self.instance_count + 1):
            port = free_port()
            process = ManagedProcess(
                f"prodio instance {number}",
                [sys.executable, "-m", "prodio", "serve"],
                env=self.instance_environment(port),
                # No .env is read from here: the instances get their settings above.
                cwd=self.run_dir,
                log_path=self.run_dir / f"prodio-{number}.log",
            )
            self.instances.append(Instance(number, port, process))
            process.start()

    def wait_instances_ready(self, instances: Sequence[Instance]) -> None:
        """Wait until each of ``instances`` answers ``/readyz`` with 200."""
        waiting = list(instances)
        deadline = time.monotonic() + self.start_timeout
        while waiting:
            for instance in list(waiting):
                if _http_status(instance.url + "/readyz") == 200:
                    waiting.remove(instance)
                elif not instance.process.running:
                    raise ClusterError(
                        f"{instance.process.name} {instance.process.exit_description} "
                        "while starting",
                        instance.process.log_tail(),
                    )
            if waiting and time.monotonic() > deadline:
                first = waiting[0]
                raise ClusterError(
                    f"{first.process.name} was not ready after {self.start_timeout:.0f} s",
                    first.process.log_tail(),
                )
            if waiting:
                time.sleep(_POLL_SECONDS)

    def nginx_config(self) -> str:
        """The rendered nginx configuration for the current instances."""
        return render_nginx_config(
            self.nginx_template.read_text(),
            listen=f"{LOOPBACK}:{self.port}",
            upstreams=[instance.address for instance in self.instances],
            max_file_size=self.settings.max_file_size,
            sticky=self.sticky,
            upstream_header=self.upstream_header,
        )

    def _start_nginx(self) -> None:
        assert self.run_dir is not None
        self.nginx = NginxProcess(
            self._binary("nginx"),
            self.run_dir,
            self.nginx_config(),
            self.port,
            env=self._base_environment(),
        )
        self.nginx.start()

    # -- while it runs ------------------------------------------------------------------

    def fatal_problem(self) -> str | None:
        """Why the cluster cannot go on (nginx or its own Redis died), or None."""
        for process in (self.nginx.process if self.nginx else None, self.redis):
            if process is not None and not process.running:
                return f"{process.name} {process.exit_description}"
        return None

    def newly_dead_instances(self) -> list[Instance]:
        """Instances that exited since the last call (nginx routes around them)."""
        dead = [
            i
            for i in self.instances
            if not i.process.running and i.number not in self._reported_dead
        ]
        self._reported_dead.update(i.number for i in dead)
        return dead

    def kill_instance(self, number: int) -> None:
        """SIGKILL instance ``number`` (1-based), as a crash would."""
        self.instance(number).process.kill()

    def start_instance(self, number: int) -> None:
        """Start instance ``number`` again on its port and wait until it is ready."""
        instance = self.instance(number)
        instance.process.start()
        self._reported_dead.discard(number)
        self.wait_instances_ready([instance])

    def restart_instances(self) -> None:
        """Stop every instance (SIGTERM), start them all again, wait until ready."""
        stop_all([i.process for i in self.instances], self.stop_timeout)
        for instance in self.instances:
            instance.process.start()
        self._reported_dead.clear()
        self.wait_instances_ready(self.instances)

    def instance(self, number: int) -> Instance:
        for instance in self.instances:
            if instance.number == number:
                return instance
        raise KeyError(f"no instance {number}")

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop nginx, then the instances, then Redis; remove the temp folder.

        Safe to call more than once, and after a start that failed half-way; the cluster
        can be started again afterwards.
        """
        if self.nginx is not None:
            self.nginx.stop(self.stop_timeout)
        stop_all([i.process for i in self.instances], self.stop_timeout)
        if self.redis is not None:
            self.redis.stop(self.stop_timeout)
        if self.run_dir is not None:
            self._keep_logs(self.run_dir)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.nginx = None
        self.instances = []
        self.redis = None
        self.redis_url = self.settings.redis_url
        self.run_dir = None
        self._reported_dead.clear()

    def _keep_logs(self, run_dir: Path) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for log in sorted(run_dir.glob("*.log")):
            with contextlib.suppress(OSError):
                shutil.copyfile(log, self.log_dir / log.name)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
