"""Redis + 2 prodio instances + nginx round-robin, all real processes on loopback.

The tests share one cluster (see conftest.py) and run in file order: the ones that kill
an instance or Redis come last, and leave the cluster working.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from prodio.cluster import NGINX_TEMPLATE, Cluster, NginxProcess, free_port, render_nginx_config
from prodio.pages.notepad import MAX_NOTE_CHARS
from tests.cluster.conftest import PASSWORD
from tests.cluster.support import (
    PAGE,
    SESSION_COOKIE,
    Browser,
    record_figure,
    request_log_entry,
    upstream_of,
    wait_for,
)
from tests.conftest import require_binary
from tests.redis_server import RedisServer

pytestmark = pytest.mark.cluster

# Another loopback address than nginx's (127.0.0.1), which the instances trust: a client
# there is "somebody else" to them.
UNTRUSTED_CLIENT = "127.0.0.2"
ROUNDS = 8
SAVED = re.compile(r"^Saved (\d+) times?\b")


def addresses(cluster: Cluster) -> set[str]:
    return {instance.address for instance in cluster.instances}


def logs(cluster: Cluster) -> list[Path]:
    return [instance.process.log_path for instance in cluster.instances]


def saves_counted(status: str) -> int:
    match = SAVED.match(status)
    assert match, status
    return int(match.group(1))


def wait_until_nginx_uses_every_instance(cluster: Cluster) -> None:
    """After a restart: nginx may still hold an instance as failed for a few seconds."""
    seen: set[str] = set()

    def both_seen() -> bool:
        try:
            response = httpx.get(cluster.url + "/healthz", timeout=5)
        except httpx.HTTPError:
            return False
        if response.status_code == 200:
            seen.add(upstream_of(response) or "")
        return seen >= addresses(cluster)

    wait_for(both_seen, timeout=60, interval=0.1, what="nginx to use both instances again")


# -- one app, two instances -------------------------------------------------------------


def test_instances_agree_on_the_gradio_app(cluster: Cluster) -> None:
    with Browser(cluster.url) as browser:
        browser.logged_in("alice", PASSWORD)
        through_nginx = browser.config()
        direct = []
        for instance in cluster.instances:
            with browser.on(instance.url) as on_instance:
                direct.append(on_instance.config())
    first, second = direct
    assert [(c["id"], c["type"]) for c in first["components"]] == [
        (c["id"], c["type"]) for c in second["components"]
    ]
    assert first["components"] == second["components"]
    assert first["dependencies"] == second["dependencies"]
    assert through_nginx["dependencies"] == first["dependencies"]
    # Gradio builds its public URL from X-Forwarded-Host: nginx must pass the port on.
    assert through_nginx["root"] == cluster.url
    assert [direct_config["root"] for direct_config in direct] == [
        instance.url for instance in cluster.instances
    ]


def test_every_event_works_round_robin_and_survives_a_reload(cluster: Cluster) -> None:
    served_by: dict[str, set[str]] = defaultdict(set)
    events_per_instance: Counter[str] = Counter()
    with Browser(cluster.url) as browser:
        browser.logged_in("alice", PASSWORD)
        for round_number in range(1, ROUNDS + 1):
            # The last rounds' note is longer than nginx's in-memory body buffer (16 KiB),
            # so nginx spools it to a temp file: its workers must be able to write there.
            note = f"note {round_number} " + ("x" * 19_000 if round_number > ROUNDS - 2 else "")
            assert len(note) < MAX_NOTE_CHARS
            calls = [
                ("notepad_save", (note,)),
                ("text_stats", ("One sentence here. Another one!",)),
                ("account_refresh", ()),
                ("header_user", ()),
                ("notepad_load", ()),
                ("account_summary", ()),
            ]
            for api_name, values in calls:
                response = browser.event(api_name, *values)
                assert response.status_code == 200, f"{api_name}: {response.text}"
                served_by[api_name].add(upstream_of(response) or "?")
                events_per_instance[upstream_of(response) or "?"] += 1
                outputs = response.json()["data"]
                if api_name == "notepad_save":
                    # One count across both instances: the session data is shared.
                    assert saves_counted(outputs[0]) == round_number
                elif api_name == "text_stats":
                    assert "| Words | 5 |" in outputs[0]
                elif api_name == "notepad_load":
                    assert outputs[0] == note
                else:
                    assert "alice" in outputs[0]
            # An odd number of requests per round, so each event alternates instances.
            session = browser.get("/api/session")
            assert session.status_code == 200
            assert session.json()["user"] == "alice"

        # A reload: the page, then the events that fill it on load.
        page = browser.request("GET", "/", headers=PAGE)
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        text, status = browser.output("notepad_load")
        assert text == note
        assert saves_counted(status) == ROUNDS
        assert "alice" in browser.output("header_user")[0]

    for api_name, upstreams in served_by.items():
        assert upstreams == addresses(cluster), f"{api_name} was served by {upstreams}"

    with Browser(cluster.url) as other:
        other.logged_in("bob", PASSWORD)
        assert other.output("notepad_load")[0] == ""
    record_figure("round_robin_events_per_instance", sorted(events_per_instance.values()))


def test_forwarded_headers_are_trusted_only_from_nginx(cluster: Cluster) -> None:
    instance = cluster.instances[0]

    def client_seen(base_url: str, local_address: str, forwarded_for: str | None) -> str:
        request_id = uuid.uuid4().hex
        headers = {"x-request-id": request_id}
        if forwarded_for:
            headers["x-forwarded-for"] = forwarded_for
        with Browser(base_url, local_address=local_address) as browser:
            response = browser.get("/healthz", headers=headers)
        assert response.status_code == 200
        # nginx passes the client's request id on, so both logs can be joined.
        assert response.headers["x-request-id"] == request_id
        client: str = request_log_entry(logs(cluster), request_id)["client"]
        return client

    # Straight to an instance from an address it does not trust: the header is ignored.
    assert client_seen(instance.url, UNTRUSTED_CLIENT, "203.0.113.7") == UNTRUSTED_CLIENT
    # Through nginx: the real client, not nginx's address, and not what the client claims.
    assert client_seen(cluster.url, UNTRUSTED_CLIENT, None) == UNTRUSTED_CLIENT
    assert client_seen(cluster.url, UNTRUSTED_CLIENT, "203.0.113.8") == UNTRUSTED_CLIENT
    # Trust goes by address: whatever connects from nginx's address is believed. That is
    # why PRODIO_TRUSTED_PROXIES must list the proxies and nothing else.
    assert client_seen(instance.url, "127.0.0.1", "203.0.113.9") == "203.0.113.9"


def test_sticky_option_keeps_each_session_on_one_instance(cluster: Cluster) -> None:
    nginx = require_binary("nginx")
    port = free_port()
    config = render_nginx_config(
        NGINX_TEMPLATE.read_text(),
        listen=f"127.0.0.1:{port}",
        upstreams=[instance.address for instance in cluster.instances],
        max_file_size=cluster.settings.max_file_size,
        sticky=True,
        upstream_header=True,
    )
    run_dir = Path(tempfile.mkdtemp(prefix="prodio-sticky-"))
    run_dir.chmod(0o711)
    sticky = NginxProcess(nginx, run_dir, config, port, env=os.environ)
    try:
        sticky.start()
        instances_used = []
        for name in ("dave", "erin", "frank", "grace"):
            with Browser(sticky.url) as browser:
                browser.logged_in(name, PASSWORD)
                upstreams = Counter(
                    upstream_of(browser.get("/api/session")) for _ in range(10)
                ) + Counter(upstream_of(browser.event("notepad_load")) for _ in range(5))
                assert len(upstreams) == 1, upstreams
                instances_used.append(next(iter(upstreams)))
        assert set(instances_used) <= addresses(cluster)

        def upstreams_for(cookie: str | None) -> set[str | None]:
            headers = {"cookie": cookie} if cookie else {}
            return {
                upstream_of(httpx.get(sticky.url + "/healthz", headers=headers, timeout=10))
                for _ in range(8)
            }

        # No session cookie (the login page): spread as before. The secure cookie's name
        # (PRODIO_COOKIE_SECURE=true) is hashed as well.
        assert upstreams_for(None) == addresses(cluster)
        assert upstreams_for("other_prodio_session=x") == addresses(cluster)
        assert len(upstreams_for("__Host-prodio_session=some.token")) == 1
    finally:
        sticky.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# -- revocation ------------------------------------------------------------------------


def test_logout_on_one_instance_is_refused_by_the_other_at_once(cluster: Cluster) -> None:
    first, second = cluster.instances
    with Browser(cluster.url) as browser:
        browser.logged_in("bob", PASSWORD)
        old_cookie = browser.session_cookie
        with browser.on(first.url) as on_first:
            csrf_token = on_first.get("/api/session").json()["csrf_token"]
            logout = on_first.request(
                "POST", "/logout", headers=PAGE, data={"csrf_token": csrf_token}
            )
            assert logout.status_code == 303
            assert SESSION_COOKIE not in on_first.cookies
        # The browser still sends the old cookie, to the other instance and through nginx.
        assert browser.session_cookie == old_cookie
        with browser.on(second.url) as on_second:
            refused = on_second.get("/api/session")
            assert refused.status_code == 401
            assert refused.json()["detail"] == "not authenticated"
        assert {browser.get("/api/session").status_code for _ in range(4)} == {401}


def test_disabling_a_user_ends_their_sessions_on_every_instance(
    cluster: Cluster, tmp_path: Path
) -> None:
    browsers = [Browser(cluster.url).logged_in("carol", PASSWORD) for _ in range(2)]
    try:
        disabled = subprocess.run(
            [sys.executable, "-m", "prodio", "users", "disable", "carol"],
            env=cluster.instance_environment(port=0),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert disabled.returncode == 0, disabled.stderr
        assert "ended 2 open session(s) of carol" in disabled.stdout
        for browser in browsers:
            for instance in cluster.instances:
                with browser.on(instance.url) as on_instance:
                    assert on_instance.get("/api/session").status_code == 401
        with Browser(cluster.url) as again:
            refused = again.login("carol", PASSWORD)
            assert refused.status_code != 303
            assert again.session_cookie is None
    finally:
        for browser in browsers:
            browser.close()


# -- an instance dies ------------------------------------------------------------------


@dataclass
class Outcome:
    method: str
    what: str
    status: int | None
    upstream: str | None
    started_after_kill: bool
    note: str | None = None

    @property
    def failed(self) -> bool:
        return self.status != 200


@dataclass
class WorkingClient:
    """A signed-in user who keeps saving notes and polling the session, in a thread."""

    browser: Browser
    killed: threading.Event
    stop: threading.Event
    outcomes: list[Outcome] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _call(self, method: str, what: str, note: str | None = None) -> None:
        after_kill = self.killed.is_set()
        try:
            if note is not None:
                response = self.browser.event("notepad_save", note)
            else:
                response = self.browser.get(what)
        except httpx.HTTPError:
            self.outcomes.append(Outcome(method, what, None, None, after_kill, note))
            return
        self.outcomes.append(
            Outcome(method, what, response.status_code, upstream_of(response), after_kill, note)
        )

    def _run(self) -> None:
        try:
            number = 0
            while not self.stop.is_set():
                number += 1
                self._call("POST", "notepad_save", note=f"note {number}")
                self._call("GET", "/api/session")
        except BaseException as error:
            self.error = error

    def last_saved_note(self) -> str | None:
        saved = [o.note for o in self.outcomes if o.what == "notepad_save" and not o.failed]
        return saved[-1] if saved else None

    def notes_that_may_have_landed(self) -> set[str | None]:
        """The last successful save, and failed saves after it (they may have run)."""
        possible: set[str | None] = {self.last_saved_note()}
        last_ok = max(
            (i for i, o in enumerate(self.outcomes) if o.what == "notepad_save" and not o.failed),
            default=-1,
        )
        possible.update(
            o.note for o in self.outcomes[last_ok + 1 :] if o.what == "notepad_save" and o.failed
        )
        return possible


@pytest.fixture
def working_clients(cluster: Cluster) -> Iterator[list[WorkingClient]]:
    killed, stop = threading.Event(), threading.Event()
    clients = [
        WorkingClient(Browser(cluster.url).logged_in(name, PASSWORD), killed, stop)
        for name in ("grace", "heidi", "judy", "mallory")
    ]
    yield clients
    stop.set()
    for client in clients:
        client.thread.join(timeout=60)
        client.browser.close()


def test_sigkill_of_an_instance_loses_no_session_and_no_data(
    cluster: Cluster, working_clients: list[WorkingClient]
) -> None:
    victim, survivor = cluster.instances
    killed = working_clients[0].killed
    for client in working_clients:
        client.thread.start()
    wait_for(
        lambda: all(len(c.outcomes) >= 30 for c in working_clients),
        timeout=120,
        what="the clients to get going",
    )
    cluster.kill_instance(victim.number)
    killed.set()
    at_kill = [len(c.outcomes) for c in working_clients]
    wait_for(
        lambda: all(
            len(c.outcomes) >= n + 60 for c, n in zip(working_clients, at_kill, strict=True)
        ),
        timeout=120,
        what="the clients to go on after the kill",
    )
    working_clients[0].stop.set()
    for client in working_clients:
        client.thread.join(timeout=60)
        assert client.error is None, repr(client.error)

    outcomes = [o for c in working_clients for o in c.outcomes]
    failed = [o for o in outcomes if o.failed]
    sessions_lost = 0
    data_lost = 0
    for client in working_clients:
        if any(o.status == 401 for o in client.outcomes):
            sessions_lost += 1
            continue
        session = client.browser.get("/api/session")
        if session.status_code != 200:
            sessions_lost += 1
            continue
        text, status = client.browser.output("notepad_load")
        successful_saves = sum(
            1 for o in client.outcomes if o.what == "notepad_save" and not o.failed
        )
        if text not in client.notes_that_may_have_landed() or (
            saves_counted(status) < successful_saves
        ):
            data_lost += 1
    failed_per_client = [sum(o.failed for o in c.outcomes) for c in working_clients]
    record_figure(
        "sigkill_one_of_two_instances",
        {
            "clients": len(working_clients),
            "requests": len(outcomes),
            "requests_after_kill": sum(o.started_after_kill for o in outcomes),
            "failed_requests": len(failed),
            "failed_posts": sum(o.method == "POST" for o in failed),
            "failed_gets": sum(o.method == "GET" for o in failed),
            "failed_statuses": sorted(str(o.status) for o in failed),
            "most_failures_of_one_client": max(failed_per_client),
            "sessions_lost": sessions_lost,
            "data_lost": data_lost,
        },
    )
    assert sessions_lost == 0
    assert data_lost == 0
    # A request the dead instance was handling when it died may fail (a POST cannot be
    # retried safely); after that every client carries on.
    assert max(failed_per_client) <= 1, failed
    served_after_kill = {o.upstream for o in outcomes if o.started_after_kill and not o.failed}
    assert served_after_kill == {survivor.address}

    # Restart both instances: nothing of a session lived in them.
    cluster.restart_instances()
    wait_until_nginx_uses_every_instance(cluster)
    for client in working_clients:
        before = client.browser.output("notepad_load")[0]
        assert client.browser.get("/api/session").status_code == 200
        assert before in client.notes_that_may_have_landed()
        for instance in cluster.instances:
            with client.browser.on(instance.url) as on_instance:
                assert on_instance.output("notepad_load")[0] == before


# -- Redis goes away -------------------------------------------------------------------


def assert_login_unavailable(cluster: Cluster) -> None:
    with Browser(cluster.url) as stranger:
        refused = stranger.login("ivan", PASSWORD)
        assert refused.status_code == 503
        assert stranger.session_cookie is None
        assert not any(
            header.startswith(SESSION_COOKIE) for header in refused.headers.get_list("set-cookie")
        )


def assert_fails_closed(cluster: Cluster, browser: Browser) -> float:
    """Protected requests get 503 on both instances; health stays up. Returns the seconds
    the slowest refusal took.

    An instance answers sessions it holds in its near cache until its invalidation channel
    has been silent for a few seconds (session/redis_cache.py: no change or revocation can
    happen while Redis is out anyway); then every protected request fails closed.
    """
    wait_for(
        lambda: all(browser.get("/api/session").status_code == 503 for _ in range(2)),
        timeout=20,
        interval=0.1,
        what="both instances to refuse while Redis is out",
    )
    slowest = 0.0
    seen: set[str | None] = set()
    for _ in range(2):
        started = time.monotonic()
        session = browser.get("/api/session")
        slowest = max(slowest, time.monotonic() - started)
        assert session.status_code == 503, session.text
        seen.add(upstream_of(session))
        event = browser.event("notepad_load")
        assert event.status_code == 503
        page = browser.request("GET", "/", headers=PAGE)
        assert page.status_code == 503
        assert "text/html" in page.headers["content-type"]
    assert httpx.get(cluster.url + "/healthz", timeout=10).status_code == 200
    for instance in cluster.instances:
        assert httpx.get(instance.url + "/readyz", timeout=10).status_code == 503
    assert_login_unavailable(cluster)
    return slowest


def test_redis_outage_fails_closed_and_recovers_by_itself(
    cluster: Cluster, cluster_redis: RedisServer
) -> None:
    with Browser(cluster.url) as browser:
        browser.logged_in("ivan", PASSWORD)
        browser.output("notepad_save", "kept through the outage")

        # Redis hangs (SIGSTOP): every request waits for the socket timeout, then 503.
        cluster_redis.pause()
        try:
            hung_refusal = assert_fails_closed(cluster, browser)
        finally:
            cluster_redis.resume()
        resumed = time.monotonic()
        wait_for(
            lambda: browser.get("/api/session").status_code == 200,
            timeout=30,
            interval=0.02,
            what="service after Redis resumed",
        )
        recovery_after_pause = time.monotonic() - resumed
        assert browser.output("notepad_load")[0] == "kept through the outage"

        # Redis dies (SIGKILL) and comes back empty: refusals are quick, then new logins
        # work by themselves; the old sessions were only in that Redis.
        cluster_redis.kill()
        try:
            down_refusal = assert_fails_closed(cluster, browser)
        finally:
            cluster_redis.start()
        restarted = time.monotonic()

        def login_works() -> bool:
            with Browser(cluster.url) as fresh:
                if fresh.login("ivan", PASSWORD).status_code != 303:
                    return False
                return fresh.get("/api/session").status_code == 200

        wait_for(login_works, timeout=30, interval=0.02, what="logins after Redis restarted")
        recovery_after_restart = time.monotonic() - restarted
        assert browser.get("/api/session").status_code == 401
        for instance in cluster.instances:
            assert httpx.get(instance.url + "/readyz", timeout=10).status_code == 200

    record_figure(
        "redis_outage",
        {
            "socket_timeout_s": cluster.settings.redis_socket_timeout,
            "slowest_503_while_redis_hangs_s": round(hung_refusal, 3),
            "slowest_503_while_redis_is_down_s": round(down_refusal, 3),
            "recovery_after_sigcont_s": round(recovery_after_pause, 3),
            "recovery_after_restart_s": round(recovery_after_restart, 3),
            "sessions_kept_after_restart_without_persistence": 0,
        },
    )
