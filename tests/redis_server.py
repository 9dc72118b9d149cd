"""A throwaway ``redis-server`` for tests: our own process, on a free port, in a temp dir.

Never the shared Redis on 6379. Tests may kill, pause and restart it at will::

    server = RedisServer(tmp_path)
    server.start()
    ...  # server.url, server.unix_url, server.client()
    server.kill()      # SIGKILL: the server is gone, connections break
    server.start()     # back on the same port, empty
    server.pause()     # SIGSTOP: connections stay open, nothing answers
    server.resume()
    server.stop()

Redis Sentinel too: a replica is a ``RedisServer`` with ``extra_args=["--replicaof",
"127.0.0.1", str(master.port)]``, and a :class:`SentinelServer` monitors a master::

    sentinel = SentinelServer(tmp_path / "sentinel", master_port=master.port)
    sentinel.start()   # sentinel.address, sentinel.client(), sentinel.master_address()
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from tests.conftest import require_binary

START_TIMEOUT = 10.0


def make_test_certificates(directory: Path) -> None:
    """A throwaway CA (ca.crt) and a server certificate for 127.0.0.1 (server.crt/.key)."""
    openssl = require_binary("openssl")

    def run(command: str, *quoted: str) -> None:
        arguments = [openssl, *command.split(), *quoted]
        subprocess.run(arguments, cwd=directory, check=True, capture_output=True, timeout=60)

    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    run(f"req -x509 {key} -days 1 -keyout ca.key -out ca.crt -subj", "/CN=ca")
    run(f"req {key} -keyout server.key -out server.csr -subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1"
        " -out server.crt -extfile server.ext"
    )


def free_port() -> int:
    """A TCP port nobody listens on right now (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process without persistence, started from the binary."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        tls: bool = False,
    ) -> None:
        self.binary = require_binary("redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.socket_path = directory / "redis.sock"
        self.log_path = directory / "redis.log"
        self.extra_args = list(extra_args)
        self.tls = tls
        self.ca_path = directory / "ca.crt"
        if tls:
            make_test_certificates(directory)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://``, or ``rediss://`` trusting the test CA for a TLS server."""
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the test Redis server is not running")
        return self._process.pid

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("the test Redis server is already running")
        options = {
            "bind": "127.0.0.1",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.directory),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "protected-mode": "yes",
            "loglevel": "warning",
            "logfile": str(self.log_path),
        }
        if self.tls:
            options |= {
                "port": "0",
                "tls-port": str(self.port),
                "tls-cert-file": str(self.directory / "server.crt"),
                "tls-key-file": str(self.directory / "server.key"),
                "tls-ca-cert-file": str(self.ca_path),
                "tls-auth-clients": "no",
            }
        else:
            options["port"] = str(self.port)
        self._process = subprocess.Popen(
            self._command(options),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready()

    def _command(self, options: dict[str, str]) -> list[str]:
        arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
        return [self.binary, *arguments, *self.extra_args]

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.binary} exited at start:\n{self._log_tail()}")
            try:
                if self._answers_ping():
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT} s")

    def _answers_ping(self) -> bool:
        with contextlib.ExitStack() as stack:
            probe = stack.enter_context(
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            )
            if self.tls:
                probe = stack.enter_context(self._tls_context().wrap_socket(probe))
            probe.sendall(b"PING\r\n")
            # +PONG, or -NOAUTH from a server with a password: either way it answers.
            return probe.recv(64)[:1] in (b"+", b"-")

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.check_hostname = False
        return context

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the test Redis server is not running")
        self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the server and wait until it is gone."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.kill()
        self._process.wait(timeout=START_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, the server answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (resuming it first if it was paused) and wait for it."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGCONT)
        self._process.terminate()
        try:
            self._process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def client(self, password: str | None = None) -> redis.Redis:
        """A plain synchronous client to inspect or reset the server from a test."""
        return redis.Redis(
            port=self.port,
            password=password,
            decode_responses=True,
            socket_timeout=5,
            ssl=self.tls,
            ssl_ca_certs=str(self.ca_path) if self.tls else None,
            ssl_check_hostname=False,
        )

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class SentinelServer(RedisServer):
    """One Redis Sentinel (``redis-server <conf> --sentinel``) monitoring one master.

    ``quorum`` 1 and a short ``down_after_ms`` so that this Sentinel alone declares the
    master down and promotes a replica within a few seconds of the master dying.
    """

    def __init__(
        self,
        directory: Path,
        *,
        master_port: int,
        service: str = "mymaster",
        down_after_ms: int = 500,
        failover_timeout_ms: int = 5000,
        master_password: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(directory)
        self.master_port = master_port
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master_password = master_password
        self.password = password
        self.config_path = directory / "sentinel.conf"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _command(self, options: dict[str, str]) -> list[str]:
        # Sentinel rewrites its configuration file (with what it learns: replicas, the new
        # master after a failover), so it must be a file of its own, written afresh at each
        # start. It has no unix socket.
        del options["unixsocket"], options["unixsocketperm"], options["save"]
        del options["appendonly"]
        lines = [f"{name} {value}" for name, value in options.items() if value]
        service = self.service
        lines += [
            f"sentinel monitor {service} 127.0.0.1 {self.master_port} 1",
            f"sentinel down-after-milliseconds {service} {self.down_after_ms}",
            f"sentinel failover-timeout {service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if self.master_password is not None:
            lines.append(f"sentinel auth-pass {service} {self.master_password}")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        self.config_path.write_text("\n".join(lines) + "\n")
        return [self.binary, str(self.config_path), "--sentinel"]

    def client(self, password: str | None = None) -> redis.Redis:
        """A synchronous client to this Sentinel (its own password unless one is given)."""
        return redis.Redis(
            port=self.port,
            password=self.password if password is None else password,
            decode_responses=True,
            socket_timeout=5,
        )

    def master_address(self) -> tuple[str, int]:
        """Where this Sentinel says the master is now."""
        with self.client() as client:
            host, port = client.sentinel_get_master_addr_by_name(self.service)
        return str(host), int(port)

    def known_replicas(self) -> list[int]:
        """The ports of the replicas this Sentinel could promote right now.

        Up, linked to the master, and already answered this Sentinel's own INFO (a replica
        it has only heard of from the master is no candidate: NOGOODSLAVE).
        """
        with self.client() as client:
            replicas = client.sentinel_slaves(self.service)
        return [
            int(replica["port"])
            for replica in replicas
            if not replica["is_sdown"]
            and not replica["is_odown"]
            and replica.get("master-link-status") == "ok"
            and replica.get("role-reported") == "slave"
            and replica["info-refresh"] < 5000
        ]
