"""Fixtures of the browser tests: prodio server processes, headless Chromium, screenshots.

Two servers are started once for this package (in parallel, as soon as a test needs one): the
``main`` one with the default session timeouts, and a ``short`` one whose sessions end
after a few idle seconds. A failed test saves a screenshot of each of its pages to
``test-artifacts/e2e/`` and gets the tail of its server's log in its report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from prodio.cluster import Cluster, ClusterError
from prodio.config import Settings
from tests.cluster.support import add_users
from tests.conftest import require_binary
from tests.e2e.helpers import (
    ALICE,
    ARTIFACTS_DIR,
    BOB,
    CAROL,
    CHROMIUM_ARGS,
    SECRET_KEY,
    SHORT_IDLE_TIMEOUT,
    UI_TIMEOUT_MS,
    VIEWPORT,
    NewContext,
    ProdioServer,
    ServerPool,
    ServerSpec,
    clean_file_name,
)

SERVER_SPECS = {
    "main": ServerSpec("main", accounts=(ALICE, BOB)),
    "short": ServerSpec(
        "short",
        accounts=(CAROL,),
        settings={
            "PRODIO_SESSION_IDLE_TIMEOUT": str(SHORT_IDLE_TIMEOUT),
            "PRODIO_SESSION_ABSOLUTE_TIMEOUT": "60",
        },
    ),
}
# Which fixture needs which server.
SERVER_FIXTURES = {"prodio_server": "main", "short_session_server": "short"}

# Playwright's assertions wait 5 s by default: too short for a loaded CI machine.
expect.set_options(timeout=UI_TIMEOUT_MS)

PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
saved_screenshots: list[Path] = []
e2e_ran: list[bool] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    funcargs = getattr(item, "funcargs", {})
    if report.failed:
        for value in funcargs.values():
            if isinstance(value, ProdioServer):
                report.sections.append((f"prodio server {value.name!r} log", value.log_tail()))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not e2e_ran:
        return
    terminalreporter.write_sep("-", "browser tests")
    terminalreporter.write_line(
        f"e2e artifacts (server logs, failure screenshots): {ARTIFACTS_DIR}"
    )
    for path in saved_screenshots:
        terminalreporter.write_line(f"  failure screenshot: {path}")


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(PHASE_REPORTS, {})
    return any(report.failed for report in reports.values())


@pytest.fixture(scope="package")
def server_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    require_binary("chromium")
    e2e_ran.append(True)
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS_DIR.glob("*.png"):
        stale.unlink()
    pool = ServerPool(tmp_path_factory.mktemp("prodio-e2e"), SERVER_SPECS)
    wanted = [
        name
        for fixture, name in SERVER_FIXTURES.items()
        if any(fixture in getattr(item, "fixturenames", ()) for item in request.session.items)
    ]
    try:
        # Launch all at once: each spends seconds importing Gradio, and they can overlap.
        for name in wanted:
            pool.launch(name)
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="package")
def prodio_server(server_pool: ServerPool) -> ProdioServer:
    """The server with default timeouts; users alice and bob."""
    return server_pool.ready("main")


@pytest.fixture(scope="package")
def short_session_server(server_pool: ServerPool) -> ProdioServer:
    """A server whose sessions end after SHORT_IDLE_TIMEOUT idle seconds; user carol."""
    return server_pool.ready("short")


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the tests of this package.

    Package scope, not session: the sync Playwright API runs an asyncio loop in this thread
    while it is started, and the async tests that run after this package need it gone.
    """
    executable = require_binary("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[NewContext]:
    """Make browser contexts (separate cookie jars) for a server; closed after the test.

    On failure every open page of them is saved as a screenshot.
    """
    contexts: list[BrowserContext] = []

    def make(server: ProdioServer, **options: Any) -> BrowserContext:
        settings: dict[str, Any] = {
            "base_url": server.base_url,
            "viewport": VIEWPORT,
            "locale": "en-US",
            "timezone_id": "UTC",
            **options,
        }
        context = browser.new_context(**settings)
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make

    if _failed(request.node):
        for context_number, context in enumerate(contexts, start=1):
            for page_number, page in enumerate(context.pages, start=1):
                name = clean_file_name(request.node.nodeid.split("::", 1)[-1])
                path = ARTIFACTS_DIR / f"{name}-{context_number}-{page_number}.png"
                # Best effort: a crashed or closed page must not hide the real failure.
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(path), full_page=True)
                    saved_screenshots.append(path)
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context: NewContext, prodio_server: ProdioServer) -> Page:
    """A page in a fresh context (no cookies) on the main server."""
    return new_context(prodio_server).new_page()


# -- the multi-instance case: Redis, two prodio instances, nginx ------------------------

CLUSTER_ACCOUNTS = (ALICE,)
CLUSTER_LOG_DIR = ARTIFACTS_DIR / "cluster"


@dataclass(frozen=True)
class ClusterSite:
    """A running :class:`~prodio.cluster.Cluster`, as the site a browser opens: nginx.

    ``new_context(site)`` makes contexts whose relative URLs go to nginx.
    """

    cluster: Cluster
    name: str = "cluster"

    @property
    def base_url(self) -> str:
        return self.cluster.url


@pytest.fixture
def cluster_site(
    server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterSite]:
    """Redis + two ``prodio serve`` instances + nginx round-robin (``X-Upstream`` on), all
    on 127.0.0.1; user alice. One per test: a test may kill an instance.

    It asks for ``server_pool`` so that the pool's clean-up of old screenshots runs before
    this test can save one, not after. The logs of every process are copied to
    ``test-artifacts/e2e/cluster/`` when it stops.
    """
    require_binary("redis-server")
    require_binary("nginx")
    # Let the pool's servers finish starting first. Four processes importing Gradio at once
    # starve a small CI machine: an instance whose event loop stalls past the Redis socket
    # timeout answers 503 to a request that was fine.
    for name in list(server_pool.servers):
        server_pool.ready(name)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path_factory.mktemp("prodio-e2e-cluster"),
        secret_key=SECRET_KEY,
        # The test finds each request in the log of the instance that served it.
        log_format="json",
    )
    add_users(settings, {account.name: account.password for account in CLUSTER_ACCOUNTS})
    cluster = Cluster(settings, instances=2, port=0, upstream_header=True, log_dir=CLUSTER_LOG_DIR)
    try:
        # In a thread of its own: start() checks Redis with anyio.run, and this thread may
        # be running the sync Playwright API's event loop already.
        with ThreadPoolExecutor(max_workers=1) as starter:
            starter.submit(cluster.start).result()
    except ClusterError as error:
        pytest.fail(f"the cluster did not start: {error}\n{error.details}")
    try:
        yield ClusterSite(cluster)
    finally:
        cluster.stop()
