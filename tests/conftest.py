"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# Importing schemathesis (its pytest plugin does, at start-up, for every test run of this
# repository) replaces Hypothesis' RepresentationPrinter with one that prints nothing, to
# save time in schemathesis' own runner: a failing @given test anywhere in the suite would
# report every value blank. Putting the original printer back costs nothing until a test
# fails (tests/fuzz/test_harness.py checks it).
import schemathesis  # noqa: F401  (its import-time patch must have happened before it is undone)
from hypothesis import core
from hypothesis.vendor.pretty import RepresentationPrinter

if TYPE_CHECKING:
    # Imported lazily below: tests.redis_server imports require_binary from here.
    from tests.redis_server import RedisServer

core.RepresentationPrinter = RepresentationPrinter

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides its settings: the developer's PRODIO_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("PRODIO_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def require_binary(name: str) -> str:
    """Path of an executable the test needs: skip locally without it, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One test Redis for the whole run; tests that break a server start their own."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The shared test Redis, emptied for this test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server
