"""deploy/nginx.conf and the pieces of prodio.cluster that need no running cluster."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from prodio.cluster import (
    MULTIPART_OVERHEAD_BYTES,
    NGINX_TEMPLATE,
    STICKY_LINE,
    UPSTREAM_HEADER_LINE,
    Cluster,
    ClusterError,
    ManagedProcess,
    free_port,
    render_nginx_config,
    settings_environment,
)
from prodio.config import Environment, Settings
from tests.cluster.support import cluster_settings, wait_for
from tests.conftest import require_binary

UPSTREAMS = ["127.0.0.1:8001", "127.0.0.1:8002"]


def render(template: str | None = None, **options: bool) -> str:
    return render_nginx_config(
        NGINX_TEMPLATE.read_text() if template is None else template,
        listen="127.0.0.1:8080",
        upstreams=UPSTREAMS,
        max_file_size=10 * 1024 * 1024,
        **options,
    )


def directives(config: str) -> list[str]:
    """The configuration without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in config.splitlines())
    return [line for line in lines if line]


def block(config: str, opening: str) -> str:
    """The text of the ``{ ... }`` block that starts with ``opening``."""
    text = "\n".join(directives(config))
    start = text.index(opening)
    depth = 0
    for index in range(text.index("{", start), len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start : index + 1]
    raise AssertionError(f"unclosed block {opening}")


def test_markers_are_filled_in() -> None:
    config = render()
    assert "@" not in "\n".join(directives(config))
    upstream = block(config, "upstream prodio")
    for address in UPSTREAMS:
        assert re.search(rf"server {re.escape(address)} max_fails=\d+ fail_timeout=\d+s;", upstream)
    assert "listen 127.0.0.1:8080;" in directives(config)
    body_limit = 10 * 1024 * 1024 + MULTIPART_OVERHEAD_BYTES
    assert f"client_max_body_size {body_limit};" in directives(config)


def test_round_robin_without_upstream_header_by_default() -> None:
    config = "\n".join(directives(render()))
    assert "hash " not in config
    assert "X-Upstream" not in config


def test_the_sticky_option_hashes_the_session_cookie_before_keepalive() -> None:
    upstream = block(render(sticky=True), "upstream prodio")
    assert "hash $prodio_session_key consistent;" in upstream
    assert upstream.index("hash ") < upstream.index("keepalive")
    cookie_map = block(render(), "map $http_cookie $prodio_session_key")
    assert "(?:__Host-)?prodio_session=" in cookie_map


def test_the_upstream_header_option() -> None:
    assert "add_header X-Upstream $upstream_addr always;" in directives(
        render(upstream_header=True)
    )


def test_forwarded_headers_and_retries() -> None:
    server = block(render(), "server {")
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in server
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in server
    # With the port: prodio's Origin check and Gradio's public URL both need it.
    assert "proxy_set_header Host $http_host;" in server
    assert "proxy_set_header X-Forwarded-Host $http_host;" in server
    assert "proxy_next_upstream error timeout;" in server
    # A POST that reached an instance must never be sent to another one.
    assert "non_idempotent" not in server


def test_streaming_routes_are_unbuffered_and_inherit_the_headers() -> None:
    streaming = block(render(), "location ~ /gradio_api/")
    for route in ("queue/data", "heartbeat/", "stream/", "call/", "upload_progress"):
        assert route in streaming
    assert "proxy_buffering off;" in streaming
    assert re.search(r"proxy_read_timeout \d+h;", streaming)
    # One proxy_set_header here would drop every header set at the server level.
    assert "proxy_set_header" not in streaming
    assert "proxy_set_header" not in block(render(), "location / {")
    # No Connection header towards the instances for a request without Upgrade.
    connection_map = block(render(), "map $http_upgrade $connection_upgrade")
    assert '"" "";' in connection_map


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda t: t.replace("listen @LISTEN@;", "listen 80;"), id="no marker"),
        pytest.param(lambda t: t.replace(STICKY_LINE, ""), id="no sticky line"),
        pytest.param(lambda t: t.replace(UPSTREAM_HEADER_LINE, ""), id="no header line"),
        pytest.param(lambda t: t + "\nserver_name @HOST@;\n", id="unknown marker"),
    ],
)
def test_a_template_that_drifted_is_refused(broken: object) -> None:
    template = broken(NGINX_TEMPLATE.read_text())  # type: ignore[operator]
    with pytest.raises(ValueError, match="nginx template"):
        render(template)


def test_no_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        render_nginx_config(NGINX_TEMPLATE.read_text(), listen="80", upstreams=[], max_file_size=1)


@pytest.mark.parametrize("sticky", [False, True])
@pytest.mark.parametrize("upstream_header", [False, True])
def test_nginx_accepts_the_rendered_config(sticky: bool, upstream_header: bool) -> None:
    nginx = require_binary("nginx")
    with tempfile.TemporaryDirectory(prefix="prodio-nginx-test-") as folder:
        config = Path(folder) / "nginx.conf"
        config.write_text(render(sticky=sticky, upstream_header=upstream_header))
        checked = subprocess.run(
            [nginx, "-t", "-p", f"{folder}/", "-c", str(config), "-e", f"{folder}/error.log"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


# -- settings handed down to the instances ---------------------------------------------


def test_the_instances_read_back_exactly_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env=Environment.PROD,
        secret_key="s" * 40,
        cookie_secure=True,
        data_dir=tmp_path,
        trusted_proxies=["10.0.0.1", "10.0.0.2"],
        mount_path="/app",
        log_level="DEBUG",
        max_file_size=12345,
        redis_socket_timeout=0.5,
        session_backend="redis",
        redis_url="redis://127.0.0.1:1/0",
    )
    environment = settings_environment(settings)
    assert environment["PRODIO_SECRET_KEY"] == "s" * 40
    assert environment["PRODIO_TRUSTED_PROXIES"] == '["10.0.0.1", "10.0.0.2"]'
    assert "PRODIO_DATABASE_URL" not in environment  # None: left to its default
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == settings  # type: ignore[call-arg]


def test_a_cluster_instance_gets_redis_and_trusts_only_nginx(tmp_path: Path) -> None:
    cluster = Cluster(
        cluster_settings(tmp_path, "redis://127.0.0.1:6390/0", session_backend="memory"),
        environ={"PATH": "/usr/bin", "PRODIO_SECRET_KEY": "from the caller's environment"},
    )
    environment = cluster.instance_environment(port=9001)
    assert environment["PRODIO_SESSION_BACKEND"] == "redis"
    assert environment["PRODIO_REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert environment["PRODIO_TRUSTED_PROXIES"] == '["127.0.0.1"]'
    assert environment["PRODIO_HOST"] == "127.0.0.1"
    assert environment["PRODIO_PORT"] == "9001"
    assert environment["PRODIO_SECRET_KEY"] == cluster.settings.secret().decode()
    assert environment["PRODIO_DATABASE_URL"] == f"sqlite:///{tmp_path.resolve()}/users.db"
    assert environment["PATH"] == "/usr/bin"


def test_a_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    require_binary("nginx")
    closed_port = free_port()
    cluster = Cluster(cluster_settings(tmp_path, f"redis://127.0.0.1:{closed_port}/0"), port=0)
    with pytest.raises(ClusterError, match="cannot reach Redis"):
        cluster.start()
    assert cluster.run_dir is None
    assert cluster.instances == []


# -- child processes -------------------------------------------------------------------

STUBBORN_CHILD = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(["sleep", "300"])
print(grandchild.pid, flush=True)
time.sleep(300)
"""


def is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_stop_kills_what_ignores_sigterm_and_its_whole_group(tmp_path: Path) -> None:
    process = ManagedProcess(
        "stubborn",
        [sys.executable, "-c", STUBBORN_CHILD],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        log_path=tmp_path / "stubborn.log",
    )
    process.start()
    grandchild = int(
        wait_for(lambda: process.log_path.read_text().strip(), timeout=30, what="the grandchild")
    )
    process.stop(timeout=0.5)
    assert process.returncode == -signal.SIGKILL
    assert process.exit_description == "was killed by SIGKILL"
    wait_for(lambda: is_gone(grandchild), timeout=10, what="the grandchild to go")
