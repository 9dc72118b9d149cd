"""Fixtures of the browser tests: prodio server processes, headless Chromium, screenshots.

Two servers are started once for this package (in parallel, as soon as a test needs one): the
``main`` one with the default session timeouts, and a ``short`` one whose sessions end
after a few idle seconds. A failed test saves a screenshot of each of its pages to
``test-artifacts/e2e/`` and gets the tail of its server's log in its report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import require_binary
from tests.e2e.helpers import (
    ALICE,
    ARTIFACTS_DIR,
    BOB,
    CAROL,
    CHROMIUM_ARGS,
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
