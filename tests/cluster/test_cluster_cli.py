"""``prodio cluster``: its errors, and a real run stopped by Ctrl-C and by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from prodio.cli import main
from tests.cluster.support import Browser, upstream_of, wait_for
from tests.conftest import require_binary


def one_error_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("prodio: error: "), text
    return lines[0]


@pytest.fixture
def in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRODIO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_missing_binaries_are_one_line_and_exit_2(
    in_empty_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = in_empty_folder / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["cluster"]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert "nginx and redis-server are not installed" in error
    assert "apt-get install nginx redis-server" in error


def test_with_a_redis_url_only_nginx_is_needed(
    in_empty_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = in_empty_folder / "no-binaries"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PRODIO_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["cluster", "--instances", "3"]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert "nginx is not installed" in error
    assert "redis-server" not in error


@pytest.mark.parametrize("count", ["0", "17", "two"])
def test_instance_count_out_of_range_is_a_usage_error(
    in_empty_folder: Path, capsys: pytest.CaptureFixture[str], count: str
) -> None:
    assert main(["cluster", "--instances", count]) == 2
    assert "--instances" in capsys.readouterr().err


def test_a_busy_port_is_refused_before_anything_starts(
    in_empty_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_binary("nginx")
    require_binary("redis-server")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["cluster", "--port", str(port)]) == 1
    error = one_error_line(capsys.readouterr().err)
    assert f"port {port} on 127.0.0.1 is in use" in error


# -- a real run ------------------------------------------------------------------------


@dataclass
class RunningCommand:
    """``prodio cluster`` in a subprocess, its output in files."""

    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def stdout(self) -> str:
        return (self.folder / "stdout.txt").read_text()

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text()

    def field(self, pattern: str, text: str) -> str:
        match = re.search(pattern, text, re.MULTILINE)
        assert match, f"{pattern!r} not in:\n{text}"
        return match.group(1)


def launch(folder: Path) -> RunningCommand:
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODIO_")}
    env["PRODIO_DATA_DIR"] = str(folder / "data")
    with (folder / "stdout.txt").open("wb") as out, (folder / "stderr.txt").open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prodio",
                "cluster",
                "--port",
                "0",
                "--log-dir",
                str(folder / "logs"),
            ],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    return RunningCommand(folder, process)


def refuses_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except OSError:
        return True


def processes_inside(folder: str) -> list[int]:
    """Processes whose working directory is in ``folder`` (the cluster's children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(folder):
            found.append(int(proc.name))
    return found


@pytest.mark.cluster
def test_cluster_command_serves_and_stops_cleanly(tmp_path: Path) -> None:
    require_binary("nginx")
    require_binary("redis-server")
    # Started side by side: each spends seconds importing Gradio.
    runs = {
        signal.SIGINT: launch(tmp_path / "stopped-by-ctrl-c"),
        signal.SIGTERM: launch(tmp_path / "stopped-by-sigterm"),
    }
    try:
        for stop_signal, run in runs.items():
            wait_for(
                lambda run=run: "Press Ctrl-C" in run.stdout or run.process.poll() is not None,
                timeout=240,
                interval=0.2,
                what="prodio cluster to start",
            )
            assert run.process.poll() is None, run.stderr
            url = run.field(r"^prodio cluster: (http://\S+)/$", run.stdout)
            instances = run.field(r"prodio instance\(s\): (.+)$", run.stdout).split()
            run_dir = run.field(r"logs in (\S+)", run.stdout)
            password = run.field(r"password:\s+(\S+)", run.stderr)
            assert len(instances) == 2
            assert "its own Redis" in run.stdout

            # The first user made for the cluster can sign in through nginx.
            with Browser(url) as browser:
                browser.logged_in("admin", password)
                answered = {upstream_of(browser.get("/api/session")) for _ in range(4)}
            assert answered == set(instances)

            run.process.send_signal(stop_signal)
            assert run.process.wait(timeout=90) == 0, run.stderr
            assert "stopping the cluster" in run.stderr
            assert not Path(run_dir).exists()
            assert processes_inside(run_dir) == []
            for address in [url.removeprefix("http://"), *instances]:
                assert refuses_connections(address), address
            kept = {path.name for path in (run.folder / "logs").iterdir()}
            assert {"prodio-1.log", "prodio-2.log", "redis.log", "access.log"} <= kept
            assert "POST /login" in (run.folder / "logs" / "access.log").read_text()
    finally:
        for run in runs.values():
            if run.process.poll() is None:
                run.process.send_signal(signal.SIGTERM)
                try:
                    run.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    run.process.kill()
                    run.process.wait()
