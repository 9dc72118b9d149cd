"""The browser against Redis + two prodio instances + nginx round-robin, then one killed.

One page, signed in through nginx, saves its note and reloads a few times while nginx
spreads its requests over both instances: each request is put down to an instance by the
``X-Upstream`` header nginx adds, and checked against that instance's own log (by the
request id both carry). Then one instance is SIGKILLed and the page has to keep working.
What it measured goes to ``test-artifacts/e2e/cluster/figures.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Request, Response, expect

from prodio.cluster import Cluster
from tests.cluster.support import events_by_name, log_entries, wait_for
from tests.e2e.conftest import CLUSTER_LOG_DIR, ClusterSite
from tests.e2e.helpers import (
    ALICE,
    NewContext,
    TrafficRecorder,
    expect_home,
    gradio_errors_seen,
    log_in,
    note_box,
    path_of,
    watch_for_gradio_errors,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

ROUNDS = 4
RELOADS_AFTER_KILL = 2
SAVED = re.compile(r"^Saved (\d+) times?\b")
FIGURES_PATH = CLUSTER_LOG_DIR / "figures.json"


@dataclass(frozen=True)
class Served:
    """One response that came through nginx."""

    method: str
    path: str
    status: int
    # Every instance nginx tried, in order (more than one when it had to retry); the last
    # one answered.
    tried: tuple[str, ...]
    request_id: str | None
    after_kill: bool

    @property
    def upstream(self) -> str | None:
        return self.tried[-1] if self.tried else None


@dataclass
class UpstreamRecorder:
    """Which instance answered each response of a context that came through nginx."""

    nginx_url: str
    after_kill: bool = False
    served: list[Served] = field(default_factory=list)
    failed: list[tuple[bool, str]] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> UpstreamRecorder:
        context.on("response", self._on_response)
        context.on("requestfailed", self._on_request_failed)
        return self

    def _through_nginx(self, url: str) -> bool:
        return url.startswith(self.nginx_url + "/")

    def _on_response(self, response: Response) -> None:
        if not self._through_nginx(response.url):
            return
        header = response.headers.get("x-upstream", "")
        self.served.append(
            Served(
                method=response.request.method,
                path=urlsplit(response.url).path,
                status=response.status,
                tried=tuple(part.strip() for part in header.split(",") if part.strip()),
                request_id=response.headers.get("x-request-id"),
                after_kill=self.after_kill,
            )
        )

    def _on_request_failed(self, request: Request) -> None:
        self.failed.append(
            (self.after_kill, f"{request.failure} {request.method} {path_of(request.url)}")
        )


def disable_http_cache(page: Page) -> None:
    """Every request of ``page`` goes to nginx: a cached answer would repeat an old
    ``X-Upstream`` and be counted twice."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})


# Not frozen: Playwright keeps a note on the object of a bound method it is handed.
@dataclass
class EventMatcher:
    """Picks out the requests and answers of one Gradio event of the page."""

    fn_index: int

    def matches_request(self, request: Request) -> bool:
        if request.method != "POST" or not is_event(request.url):
            return False
        body = request.post_data_json
        return isinstance(body, dict) and body.get("fn_index") == self.fn_index

    def matches(self, response: Response) -> bool:
        return self.matches_request(response.request)


def is_event(url: str) -> bool:
    return urlsplit(url).path.endswith("/gradio_api/run/predict")


def saves_shown(page: Page) -> int:
    status = page.locator("#notepad-status").inner_text()
    match = SAVED.match(status)
    assert match, f"unexpected notepad status {status!r}"
    return int(match.group(1))


def logged_by(cluster: Cluster, served: list[Served]) -> list[list[str]]:
    """For each answer, the instances whose own log has its request (by request id)."""
    logged = {
        instance.address: {
            entry.get("request_id")
            for entry in log_entries(instance.process.log_path)
            if entry.get("message") == "request"
        }
        for instance in cluster.instances
    }
    return [[address for address, ids in logged.items() if s.request_id in ids] for s in served]


def click_save(page: Page, save_event: EventMatcher) -> Response | None:
    """Press Save; the answer to its event, or None when the request itself failed."""
    with page.expect_request(save_event.matches_request) as sent:
        page.get_by_role("button", name="Save").click()
    return sent.value.response()


def test_one_page_on_two_instances_survives_losing_one(
    new_context: NewContext, cluster_site: ClusterSite, record_property: Any
) -> None:
    cluster = cluster_site.cluster
    victim, survivor = cluster.instances
    addresses = {victim.address, survivor.address}
    context = new_context(cluster_site)
    watch_for_gradio_errors(context)
    traffic = TrafficRecorder().attach(context)
    upstreams = UpstreamRecorder(cluster.url).attach(context)
    page = context.new_page()
    disable_http_cache(page)

    log_in(page, ALICE)
    events = events_by_name(page.context.request.get("/config").json())
    save_event = EventMatcher(events["notepad_save"].fn_index)
    load_event = EventMatcher(events["notepad_load"].fn_index)

    # -- both instances up: save, reload, round after round -------------------------------
    rounds = []
    note = ""
    for number in range(1, ROUNDS + 1):
        note = f"Round {number}: written through nginx."
        note_box(page).fill(note)
        with page.expect_response(save_event.matches) as saved:
            page.get_by_role("button", name="Save").click()
        assert saved.value.status == 200
        expect(page.locator("#notepad-status")).to_contain_text(f"Saved {number} time")

        with page.expect_response(load_event.matches) as loaded:
            page.reload()
        assert loaded.value.status == 200
        expect_home(page, ALICE)
        expect(note_box(page)).to_have_value(note)
        assert saves_shown(page) == number
        rounds.append(
            {
                "saved_by": saved.value.headers.get("x-upstream"),
                "loaded_by": loaded.value.headers.get("x-upstream"),
            }
        )
    page.wait_for_load_state("networkidle")

    before = [s for s in upstreams.served if not s.after_kill]
    # Every answer came from one of the two instances, and each instance did its share:
    # pages, assets and Gradio events.
    assert [s for s in before if s.upstream not in addresses] == []
    assert {s.upstream for s in before} == addresses
    assert {s.upstream for s in before if is_event(s.path)} == addresses
    assert {s.upstream for s in before if s.path == "/"} == addresses
    # The instance X-Upstream names is the one, the only one, whose log has the request.
    # (An instance writes its log line as the answer goes out: give it a moment.)
    wait_for(
        lambda: all(logged_by(cluster, before)),
        timeout=10,
        what="a log line for every request",
    )
    misattributed = [
        (s.method, s.path, s.upstream, found)
        for s, found in zip(before, logged_by(cluster, before), strict=True)
        if found != [s.upstream]
    ]
    assert misattributed == []
    # Every answer came fresh from an instance, none from the browser's cache: the counts
    # are of real requests.
    assert len({s.request_id for s in before}) == len(before)

    # Each instance on its own shows the note (the cookie, like every cookie, ignores the
    # port): whichever one a request lands on, it reads the same session from Redis.
    direct = context.new_page()
    for instance in cluster.instances:
        direct.goto(instance.url + "/")
        expect_home(direct, ALICE)
        expect(note_box(direct)).to_have_value(note)
    direct.close()

    assert traffic.failures == []
    assert upstreams.failed == []
    assert traffic.console_errors == []
    assert gradio_errors_seen(page) == []
    failures_mark, console_mark = len(traffic.failures), len(traffic.console_errors)

    # -- one instance dies ------------------------------------------------------------------
    upstreams.after_kill = True
    cluster.kill_instance(victim.number)
    wait_for(lambda: not victim.process.running, timeout=10, what="the instance to die")

    final_note = "Written after one instance died."
    note_box(page).fill(final_note)
    # A save the dead instance was handling may fail (nginx does not resend a POST that
    # may have run); one more press must work.
    failed_saves = 0
    answer = click_save(page, save_event)
    if answer is None or answer.status != 200:
        failed_saves += 1
        answer = click_save(page, save_event)
    assert answer is not None
    assert answer.status == 200
    expect(page.locator("#notepad-status")).not_to_contain_text(f"Saved {ROUNDS} time")
    # A failed save may still have run before its instance died.
    saves = saves_shown(page)
    assert ROUNDS + 1 <= saves <= ROUNDS + 1 + failed_saves

    for _ in range(RELOADS_AFTER_KILL):
        with page.expect_response(load_event.matches) as loaded:
            page.reload()
        assert loaded.value.status == 200
        expect_home(page, ALICE)
        expect(note_box(page)).to_have_value(final_note)
        assert saves_shown(page) == saves
    session = page.context.request.get("/api/session")
    assert session.status == 200
    assert session.json()["user"] == ALICE.name
    page.wait_for_load_state("networkidle")

    after = [s for s in upstreams.served if s.after_kill]
    failed_events = [
        f"{s.status} {s.method} {s.path}" for s in after if is_event(s.path) and s.status != 200
    ] + [text for late, text in upstreams.failed if late and is_event(text.split()[-1])]
    other_failures = [
        text for text in traffic.failures[failures_mark:] if not is_event(text.split()[-1])
    ]
    console_errors_after = traffic.console_errors[console_mark:]
    figures = {
        "rounds_before_kill": rounds,
        "responses_per_instance_before_kill": dict(Counter(s.upstream for s in before)),
        "events_per_instance_before_kill": dict(
            Counter(s.upstream for s in before if is_event(s.path))
        ),
        "responses_per_instance_after_kill": dict(Counter(s.upstream for s in after)),
        "retried_by_nginx_after_kill": [
            f"{s.method} {s.path} tried {', '.join(s.tried)}" for s in after if len(s.tried) > 1
        ],
        "failed_saves_after_kill": failed_saves,
        "failed_events_after_kill": failed_events,
        "other_failed_requests_after_kill": other_failures,
        "console_errors_after_kill": console_errors_after,
        "gradio_errors_shown_after_kill": gradio_errors_seen(page),
    }
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_PATH.write_text(json.dumps(figures, indent=2, sort_keys=True))
    for name, value in figures.items():
        record_property(name, value)

    assert {s.upstream for s in after} == {survivor.address}
    assert len(failed_events) <= 1, failed_events
    assert other_failures == []
    if not failed_events:
        assert console_errors_after == []
        assert gradio_errors_seen(page) == []
    assert traffic.foreign_requests() == []
