"""Support for the browser tests: real prodio server processes, logging in, watching a page."""

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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response, expect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = ROOT / "test-artifacts" / "e2e"
# The README's screenshots are rewritten only when asked for (`make screenshots`): a test
# run leaves the work tree as it found it.
SCREENSHOTS_DIR = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("PRODIO_DOCS_SCREENSHOTS") == "1"
    else ARTIFACTS_DIR / "screenshots"
)

HOST = "127.0.0.1"
SECRET_KEY = "e2e-only-secret-key-" + "e" * 40
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
# How long a page may take to show what a test waits for. Generous: CI machines are slow
# and the first Gradio page of a fresh server takes a few seconds.
UI_TIMEOUT_MS = 20_000
SERVER_START_TIMEOUT = 90.0
SERVER_STOP_TIMEOUT = 10.0

SESSION_COOKIES = {"prodio_session", "__Host-prodio_session"}
# How Gradio shows a failed event: a toast, or "Error" in the output's status tracker.
ERROR_UI_SELECTOR = '[data-testid="toast-body"], [data-testid="status-tracker"] .error'
ERROR_UI_KEY = "prodio-e2e-error-ui"


@dataclass(frozen=True)
class Account:
    """A user the server is started with."""

    name: str
    password: str


ALICE = Account("alice", "alice-e2e-password")
BOB = Account("bob", "bob-e2e-password")
CAROL = Account("carol", "carol-e2e-password")
# The idle timeout of the "short" server, in seconds.
SHORT_IDLE_TIMEOUT = 10  # long enough for a page to load on a busy 2-core CI machine

# The ``new_context`` fixture: ``new_context(server, **playwright_context_options)``.
NewContext = Callable[..., BrowserContext]


# -- the server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    """What a server is started with: its accounts and extra ``PRODIO_*`` settings."""

    name: str
    accounts: tuple[Account, ...]
    settings: Mapping[str, str] = field(default_factory=dict)


class ServerError(RuntimeError):
    """The server did not start; the message ends with its log."""


class ProdioServer:
    """A ``prodio serve`` process in its own data folder, on a free port of 127.0.0.1.

    Users are added with ``prodio users add NAME --password-stdin`` before it starts. Its
    standard output and error go to :attr:`log_path`.
    """

    def __init__(self, spec: ServerSpec, workdir: Path, log_path: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("PRODIO_")}
        env.update(
            {
                "PRODIO_ENV": "dev",
                "PRODIO_DATA_DIR": str(self.workdir / "data"),
                "PRODIO_SECRET_KEY": SECRET_KEY,
                "PRODIO_HOST": HOST,
                "PRODIO_PORT": str(self.port),
                "PRODIO_LOG_LEVEL": "INFO",
            }
        )
        env.update(self.spec.settings)
        return env

    def _prodio(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "prodio", *args]

    def add_user(self, account: Account) -> subprocess.CompletedProcess[bytes]:
        """Run ``prodio users add`` for ``account`` on this server's database, before the
        server starts or while it runs; the finished command, whether it worked or not."""
        return subprocess.run(
            self._prodio("users", "add", account.name, "--password-stdin"),
            input=(account.password + "\n").encode(),
            capture_output=True,
            cwd=self.workdir,
            env=self.environment,
            timeout=60,
            check=False,
        )

    def launch(self) -> None:
        """Add the users, then start the server without waiting for it to be ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for account in self.spec.accounts:
            added = self.add_user(account)
            if added.returncode != 0:
                raise ServerError(
                    f"prodio users add {account.name} failed ({added.returncode}): "
                    f"{added.stderr.decode(errors='replace')}"
                )
        with self.log_path.open("wb") as log:
            # The working directory is the temp folder, so no developer's .env is read.
            self.process = subprocess.Popen(
                self._prodio("serve"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.environment,
            )

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Poll ``/readyz`` until it answers 200; raise :class:`ServerError` if it never does."""
        if self.process is None:
            raise ServerError(f"server {self.name} was never launched")
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"server {self.name} exited with status {self.process.returncode} "
                    f"before it was ready\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
                    last_error = f"status {answer.status}"
            except (OSError, urllib.error.URLError) as error:
                last_error = str(error)
            time.sleep(0.2)
        raise ServerError(
            f"server {self.name} not ready after {timeout:.0f} s ({last_error})\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SERVER_STOP_TIMEOUT)

    def log_tail(self, lines: int = 150) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)


class ServerPool:
    """Servers started once for the whole session, booted side by side."""

    def __init__(self, workdir: Path, specs: Mapping[str, ServerSpec]) -> None:
        self.workdir = workdir
        self.specs = specs
        self.servers: dict[str, ProdioServer] = {}

    def launch(self, name: str) -> ProdioServer:
        if name not in self.servers:
            folder = self.workdir / name
            server = ProdioServer(self.specs[name], folder, folder / "server.log")
            self.servers[name] = server
            server.launch()
        return self.servers[name]

    def ready(self, name: str) -> ProdioServer:
        server = self.launch(name)
        server.wait_ready()
        return server

    def stop_all(self) -> None:
        """Stop every server and copy its log to ``test-artifacts/e2e/server-NAME.log``."""
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        for server in self.servers.values():
            server.stop()
            with contextlib.suppress(OSError):
                shutil.copyfile(server.log_path, ARTIFACTS_DIR / f"server-{server.name}.log")


# -- the browser -----------------------------------------------------------------------


def axe_script() -> str:
    """axe-core's ``axe.min.js``, as shipped inside the axe-playwright-python wheel."""
    return (files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


def session_cookies(context: BrowserContext) -> list[Any]:
    return [cookie for cookie in context.cookies() if cookie["name"] in SESSION_COOKIES]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def fill_login_form(page: Page, account: Account) -> None:
    page.get_by_label("User name").fill(account.name)
    page.get_by_label("Password").fill(account.password)


def submit_login(page: Page, account: Account) -> None:
    """Fill and send the login form of the current page (no check of the outcome)."""
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    fill_login_form(page, account)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def expect_login_page(page: Page) -> None:
    expect(page).to_have_url(re.compile(r"/login(\?.*)?$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("User name")).to_be_editable()


def expect_home(page: Page, account: Account) -> None:
    """The HomePage is up: its load events ran and the header names the user."""
    expect(page.locator("#prodio-header-user")).to_have_text(f"Signed in as {account.name}")
    expect(page.get_by_role("tab", name="Notepad")).to_be_visible()


def log_in(page: Page, account: Account, path: str = "/") -> None:
    """Open ``path`` (logged out: it leads to the login page), log in, wait for the HomePage."""
    page.goto(path)
    submit_login(page, account)
    expect_home(page, account)


def open_tab(page: Page, title: str) -> None:
    tab = page.get_by_role("tab", name=title)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")


def note_box(page: Page) -> Any:
    return page.locator("#notepad-text textarea")


def computed_rgb(page: Page, selector: str, css_property: str) -> tuple[int, int, int]:
    """A computed colour of the first element matching ``selector``, as opaque RGB."""
    value = page.eval_on_selector(
        selector, "(el, name) => getComputedStyle(el)[name]", css_property
    )
    match = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", value)
    assert match, f"unexpected {css_property} {value!r} on {selector}"
    assert match.group(4) in (None, "1"), f"{selector} has a see-through {css_property} {value}"
    red, green, blue = (int(match.group(index)) for index in (1, 2, 3))
    return red, green, blue


def relative_luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance: 0 for black, 1 for white."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(value) for value in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


# Reports any Gradio error display to sessionStorage, where it outlives a navigation to the
# login page in the same tab.
ERROR_UI_WATCHER = """
(() => {
  const selector = __SELECTOR__;
  const key = __KEY__;
  const remember = (element) => {
    try {
      const seen = JSON.parse(sessionStorage.getItem(key) || "[]");
      seen.push((element.innerText || element.textContent || "").trim().slice(0, 200));
      sessionStorage.setItem(key, JSON.stringify(seen));
    } catch (error) {}
  };
  const inspect = (node) => {
    if (node.nodeType !== 1) return;
    if (node.matches(selector)) remember(node);
    node.querySelectorAll(selector).forEach(remember);
  };
  new MutationObserver((records) => {
    for (const record of records) record.addedNodes.forEach(inspect);
  }).observe(document, { childList: true, subtree: true });
})();
""".replace("__SELECTOR__", json.dumps(ERROR_UI_SELECTOR)).replace(
    "__KEY__", json.dumps(ERROR_UI_KEY)
)


def watch_for_gradio_errors(context: BrowserContext) -> None:
    """From now on, every page of ``context`` notes each Gradio error it shows."""
    context.add_init_script(ERROR_UI_WATCHER)


def gradio_errors_seen(page: Page) -> list[str]:
    """The texts of the Gradio errors this tab has shown, across its navigations."""
    raw = page.evaluate("key => sessionStorage.getItem(key)", ERROR_UI_KEY)
    return list(json.loads(raw)) if raw else []


@dataclass
class TrafficRecorder:
    """Every request, failed request and console error of a browser context."""

    requests: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> TrafficRecorder:
        context.on("request", self._on_request)
        context.on("response", self._on_response)
        context.on("requestfailed", self._on_request_failed)
        context.on("console", self._on_console)
        context.on("weberror", lambda error: self.console_errors.append(f"uncaught: {error.error}"))
        return self

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.failures.append(
                f"{response.status} {response.request.method} {path_of(response.url)}"
            )

    def _on_request_failed(self, request: Request) -> None:
        self.failures.append(f"failed ({request.failure}) {request.method} {request.url}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} at {message.location}")

    def foreign_requests(self) -> list[str]:
        """Requests to anything but 127.0.0.1 (``data:`` and ``blob:`` never leave the page)."""
        foreign = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob"):
                continue
            if parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname != HOST:
                foreign.append(url)
        return foreign


def clean_file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120]


def report_lines(violations: list[dict[str, Any]]) -> str:
    """axe violations as readable lines: rule, impact, help and where."""
    lines = []
    for violation in violations:
        targets = ", ".join(
            " ".join(str(part) for part in node["target"]) for node in violation["nodes"][:5]
        )
        lines.append(
            f"{violation['id']} ({violation['impact']}): {violation['help']} "
            f"[{len(violation['nodes'])} node(s): {targets}]"
        )
    return "\n".join(lines) or "none"


def run_axe(page: Page) -> list[dict[str, Any]]:
    """Run axe-core in the page; return its violations (all rule sets it runs by default)."""
    page.evaluate(axe_script())
    results = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return list(results["violations"])


def serious_violations(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v.get("impact") in ("serious", "critical")]
