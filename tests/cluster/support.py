"""Driving a prodio cluster over real HTTP, as a browser's page would, for the cluster tests."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx

from prodio.config import Settings
from prodio.users.passwords import PasswordHasher
from prodio.users.sql import SqlUserStore

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = ROOT / "test-artifacts" / "cluster"
SECRET_KEY = "cluster-test-secret-" + "c" * 40
PAGE = {"sec-fetch-mode": "navigate", "accept": "text/html"}
FETCH = {"sec-fetch-mode": "cors", "accept": "application/json"}
SESSION_COOKIE = "prodio_session"
# Cheap hashes: these tests are about the cluster, tests/users covers the real cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
REQUEST_TIMEOUT = 30.0

# Figures measured by the tests, printed at the end of the run and written to
# test-artifacts/cluster/figures.json.
FIGURES: dict[str, Any] = {}


def cluster_settings(data_dir: Path, redis_url: str, **overrides: Any) -> Settings:
    """What every instance of a test cluster runs with: JSON logs, quick Redis timeouts."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "secret_key": SECRET_KEY,
        "session_backend": "redis",
        "redis_url": redis_url,
        "redis_socket_timeout": 1.0,
        "redis_connect_timeout": 1.0,
        "log_format": "json",
        "session_cleanup_interval": 3600,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def add_users(settings: Settings, accounts: dict[str, str]) -> None:
    """Create the accounts in the cluster's user database (before or while it runs)."""
    store = SqlUserStore(settings.effective_database_url)
    try:
        store.migrate()
        for name, password in accounts.items():
            store.add(name, FAST_HASHER.hash(password))
    finally:
        store.close()


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "input" and attributes.get("name"):
            self.values[attributes["name"] or ""] = attributes.get("value") or ""


def form_fields(html: str) -> dict[str, str]:
    parser = _Inputs()
    parser.feed(html)
    return parser.values


def upstream_of(response: httpx.Response) -> str | None:
    """The instance that finally answered, from nginx's ``X-Upstream`` (after retries, the
    header lists every instance tried; the last one answered)."""
    value = response.headers.get("x-upstream")
    return value.split(",")[-1].strip() if value else None


@dataclass
class Event:
    """A Gradio event of the page, as ``/config`` describes it."""

    fn_index: int
    trigger_id: int | None
    input_types: list[str]


def events_by_name(config: dict[str, Any]) -> dict[str, Event]:
    """Every event with a Python handler, by its ``api_name``."""
    types = {component["id"]: component["type"] for component in config["components"]}
    events = {}
    for dependency in config["dependencies"]:
        if not dependency.get("backend_fn"):
            continue
        targets = dependency["targets"]
        events[dependency["api_name"]] = Event(
            fn_index=int(dependency["id"]),
            trigger_id=int(targets[0][0]) if targets else None,
            input_types=[types.get(i, "?") for i in dependency["inputs"]],
        )
    return events


@dataclass
class Browser:
    """One browser tab against ``base_url``: its own cookies, sent by hand.

    Cookies are kept here rather than in httpx's jar because cookies ignore ports: the
    tests hand one session cookie to nginx and to each instance on purpose.
    """

    base_url: str
    local_address: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    session_hash: str = field(default_factory=lambda: secrets.token_hex(6))

    def __post_init__(self) -> None:
        transport = httpx.HTTPTransport(local_address=self.local_address)
        self.client = httpx.Client(
            base_url=self.base_url, transport=transport, timeout=REQUEST_TIMEOUT
        )
        self._events: dict[str, Event] | None = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def on(self, base_url: str, local_address: str | None = None) -> Browser:
        """The same cookies, sent to another address (an instance, another nginx)."""
        other = Browser(base_url, local_address=local_address, cookies=dict(self.cookies))
        other._events = self._events
        return other

    @property
    def session_cookie(self) -> str | None:
        return self.cookies.get(SESSION_COOKIE)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if method != "GET":
            sent.setdefault("origin", self.base_url)
        response = self.client.request(method, path, headers=sent, **kwargs)
        self.client.cookies.clear()
        self._remember_cookies(response)
        return response

    def _remember_cookies(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if re.search(r"(?i)max-age=0\b", header):
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, headers=headers or FETCH)

    def login(self, username: str, password: str) -> httpx.Response:
        """Fetch the login form and post it, as a browser does."""
        self.cookies.pop(SESSION_COOKIE, None)
        page = self.request("GET", "/login", headers=PAGE)
        assert page.status_code == 200, page.text
        fields = form_fields(page.text)
        data = {"username": username, "password": password, "csrf_token": fields["csrf_token"]}
        return self.request("POST", "/login", headers=PAGE, data=data)

    def logged_in(self, username: str, password: str) -> Browser:
        response = self.login(username, password)
        assert response.status_code == 303, response.text
        assert self.session_cookie, response.headers
        return self

    def config(self) -> dict[str, Any]:
        response = self.get("/config")
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()
        return config

    def events(self) -> dict[str, Event]:
        if self._events is None:
            self._events = events_by_name(self.config())
        return self._events

    def event(self, api_name: str, *values: Any) -> httpx.Response:
        """``POST /gradio_api/run/predict`` for one event, as Gradio's page sends it."""
        event = self.events()[api_name]
        body = {
            "data": list(values),
            "fn_index": event.fn_index,
            "trigger_id": event.trigger_id,
            "session_hash": self.session_hash,
            "event_data": None,
        }
        return self.request("POST", "/gradio_api/run/predict", headers=FETCH, json=body)

    def output(self, api_name: str, *values: Any) -> list[Any]:
        """The outputs of an event that must succeed."""
        response = self.event(api_name, *values)
        assert response.status_code == 200, f"{api_name}: {response.status_code} {response.text}"
        data: list[Any] = response.json()["data"]
        return data


# -- the instances' JSON logs ----------------------------------------------------------


def log_entries(path: Path) -> Iterator[dict[str, Any]]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def request_log_entry(paths: list[Path], request_id: str) -> dict[str, Any]:
    """The request log line with ``request_id``, from whichever instance wrote it."""

    def find() -> dict[str, Any] | None:
        for path in paths:
            for entry in log_entries(path):
                if entry.get("message") == "request" and entry.get("request_id") == request_id:
                    return entry
        return None

    entry: dict[str, Any] = wait_for(find, timeout=10, what=f"log line of {request_id}")
    return entry


def record_figure(name: str, value: Any) -> None:
    FIGURES[name] = value
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS_DIR / "figures.json").write_text(json.dumps(FIGURES, indent=2, sort_keys=True))
