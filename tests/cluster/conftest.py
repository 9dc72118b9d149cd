"""Fixtures of the cluster tests: a test Redis, a Cluster of 2 instances behind nginx.

The cluster is started once per module (its instances take seconds each to import Gradio)
and shared by the tests that leave it working; tests that break something put it back.
The figures they measure are printed at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from prodio.cluster import Cluster, ClusterError
from tests.cluster.support import ARTIFACTS_DIR, FIGURES, add_users, cluster_settings
from tests.conftest import require_binary
from tests.redis_server import RedisServer

PASSWORD = "cluster-test-password"
ACCOUNTS = {
    name: PASSWORD
    for name in (
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "frank",
        "grace",
        "heidi",
        "ivan",
        "judy",
        "mallory",
    )
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "cluster figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
    terminalreporter.write_line(f"(also in {ARTIFACTS_DIR / 'figures.json'})")


@pytest.fixture(scope="module")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: the tests stop and pause it."""
    server = RedisServer(tmp_path_factory.mktemp("cluster-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(
    cluster_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two instances behind nginx (round-robin, ``X-Upstream`` on), users in ACCOUNTS."""
    require_binary("nginx")
    settings = cluster_settings(tmp_path_factory.mktemp("cluster-data"), cluster_redis.url)
    add_users(settings, ACCOUNTS)
    cluster = Cluster(settings, instances=2, port=0, log_dir=ARTIFACTS_DIR / "logs")
    try:
        cluster.start()
    except ClusterError as error:
        pytest.fail(f"the cluster did not start: {error}\n{error.details}")
    try:
        yield cluster
    finally:
        cluster.stop()
