"""Gradio sessions and event outputs through the whole app, with real Gradio and two users.

Part one: a Gradio session hash belongs to the user who used it first. Bob, who learnt the
hash alice's browser made up for her tab, can neither read her queue's stream, join her
queue, run events against her ``gr.State``, snapshot her components in a deep link, keep
her heartbeat, cancel her events nor call a component's server function in her session:
each gets 404 and never reaches Gradio, at every mount and on every instance.
Part two: the files Gradio writes for an event's outputs belong to the user who ran it.

Each test asserts what the protection changes: without it, Gradio answers bob's request
(alice's data, a 200 stream, a handler run) or writes no ``access.denied`` record.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import anyio
import gradio as gr
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.routing import BaseRoute, Mount

import prodio.main
from prodio.audit import AUDIT_LOGGER
from prodio.config import Settings
from prodio.main import create_app
from prodio.middleware.uploads import (
    FORM_SESSION_ROUTES,
    NOT_FOUND_DETAIL,
    REASON_NOT_OWNER,
    REASON_NOT_SESSION_OWNER,
    SESSION_BODY_ROUTES,
    SESSION_NOT_FOUND_DETAIL,
    SESSION_PATH_ROUTES,
    SESSION_QUERY_ROUTES,
)
from prodio.pages.base import Page, Tab
from prodio.pages.home import HomePage
from prodio.routes.home import mount_home
from prodio.services import build_services
from prodio.session.base import SessionStore, SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from prodio.session.redis import RedisSessionStore
from prodio.ui.blocks import OUTPUTS_UNAVAILABLE_MESSAGE, ProdioBlocks
from prodio.ui.mount import mount_page
from prodio.ui.state import UserState
from prodio.uploads import RedisUploadRegistry
from prodio.uploads.base import UploadRegistry
from prodio.users.passwords import PasswordHasher
from prodio.users.sql import SqlUserStore
from tests.apptest import (
    BASE_URL,
    FAST_HASHER_ARGS,
    FETCH,
    ORIGIN,
    PASSWORD,
    AppUnderTest,
    make_settings,
    running_app,
    signed_in,
    signed_in_fixture,
)
from tests.redis_server import RedisServer, free_port

# Gradio 6.31's queue computes event statistics with pandas calls that pandas 3 deprecates:
# a third-party warning, raised for queued events (as in tests/test_log_secrets.py).
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

USERS = ("alice", "bob", "carol")
SAME_ORIGIN = {**ORIGIN, "sec-fetch-site": "same-origin"}
JSON = {**SAME_ORIGIN, "content-type": "application/json"}
# The page's default file: every user is shown it in the page's configuration.
TEMPLATE = Path(tempfile.mkdtemp(prefix="prodio-template-")) / "template.txt"
TEMPLATE.write_text("the same template for everybody\n")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


# What the handlers were given: shout's texts, read_file's file contents.
SHOUTED: list[str] = []
READ: list[bytes] = []


def keep(note: str) -> tuple[str, str]:
    return note, "kept"


def recall(kept: str) -> str:
    return kept


def shout(note: str) -> str:
    SHOUTED.append(note)
    return note.upper()


def write_report(note: str) -> str:
    """An output file: Gradio copies it into its cache, named after its bytes."""
    path = Path(tempfile.mkdtemp(prefix="prodio-report-")) / "report.txt"
    path.write_text(note)
    return str(path)


def the_template() -> str:
    return str(TEMPLATE)


def read_file(path: str | None) -> str:
    if path is None:
        return ""
    content = Path(path).read_bytes()
    READ.append(content)
    return content.decode()


class SessionTab(Tab):
    """What a Gradio app keeps per tab: a gr.State, a queued event, output files, a
    component with server functions (the file explorer)."""

    title = "Sessions"
    slug = "sessions"

    def build(self, state: UserState) -> None:
        note = gr.Textbox(label="Note")
        kept = gr.State("")
        shown = gr.Textbox(label="Shown")
        report = gr.File(label="Report")
        gr.File(value=str(TEMPLATE), label="Template")
        gr.FileExplorer(root_dir=str(TEMPLATE.parent), label="Files", elem_id="explorer")
        gr.Button("Keep").click(keep, [note], [kept, shown], **self.event(api_name="keep"))
        gr.Button("Recall").click(recall, [kept], [shown], **self.event(api_name="recall"))
        gr.Button("Shout").click(shout, [note], [shown], **self.event(api_name="shout", queue=True))
        gr.Button("Report").click(write_report, [note], [report], **self.event(api_name="report"))
        gr.Button("Report in turn").click(
            write_report, [note], [report], **self.event(api_name="report_queued", queue=True)
        )
        gr.Button("Template").click(the_template, None, [report], **self.event(api_name="template"))
        gr.Button("Read").click(read_file, [report], [shown], **self.event(api_name="read_file"))


class SessionsPage(Page):
    title = "Sessions"
    tab_classes: ClassVar[Sequence[type[Tab]]] = (SessionTab,)


@asynccontextmanager
async def app_with_sessions(
    data_dir: Path, *, extra_page: str | None = None, add_users: bool = True, **overrides: Any
) -> AsyncIterator[AppUnderTest]:
    """The app with :class:`SessionTab` on its home page (and on a second page at
    ``extra_page``, mounted as docs/extending.md does it), and :data:`USERS` in its user
    database (unless another instance on the same database added them)."""
    async with AsyncExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(HomePage, "tab_classes", [*HomePage.tab_classes, SessionTab])
            if extra_page is not None:
                page_path = extra_page

                def mount_pages(
                    app: FastAPI,
                    settings: Settings,
                    store: SessionStore,
                    *,
                    uploads: UploadRegistry | None = None,
                ) -> None:
                    mount_page(app, settings, store, SessionsPage(), page_path, uploads=uploads)
                    mount_home(app, settings, store, uploads=uploads)

                patch.setattr(prodio.main, "mount_home", mount_pages)
            app_env = await stack.enter_async_context(running_app(data_dir, **overrides))
        for user in USERS if add_users else ():
            app_env.add_user(user, PASSWORD)
        yield app_env


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AppUnderTest]:
    async with app_with_sessions(tmp_path_factory.mktemp("app")) as app_env:
        yield app_env


alice = signed_in_fixture("alice")
bob = signed_in_fixture("bob")
carol = signed_in_fixture("carol")


def new_tab() -> str:
    """A session hash, as a browser makes one up for each page load."""
    return uuid.uuid4().hex[:11]


def secret() -> str:
    return f"alice's secret {uuid.uuid4()}"


async def fn_index(client: httpx.AsyncClient, api_name: str, prefix: str = "") -> int:
    config = (await client.get(f"{prefix}/config", headers=FETCH)).json()
    [index] = [d["id"] for d in config["dependencies"] if d["api_name"] == api_name]
    return int(index)


async def component_id(client: httpx.AsyncClient, elem_id: str) -> int:
    config = (await client.get("/config", headers=FETCH)).json()
    [found] = [c["id"] for c in config["components"] if c["props"].get("elem_id") == elem_id]
    return int(found)


def event(tab: str, *data: object, fn: int | None = None) -> bytes:
    """An event's body as the browser writes it: the session hash last."""
    body: dict[str, object] = {"data": list(data), "event_data": None}
    if fn is not None:
        body["fn_index"] = fn
    body["session_hash"] = tab
    return json.dumps(body).encode()


async def run(
    client: httpx.AsyncClient, api_name: str, tab: str, *data: object, prefix: str = ""
) -> httpx.Response:
    return await client.post(
        f"{prefix}/gradio_api/run/{api_name}", content=event(tab, *data), headers=JSON
    )


async def keep_a_secret(client: httpx.AsyncClient, tab: str, prefix: str = "") -> str:
    """Alice's tab keeps a secret in its gr.State and shows it in its textbox."""
    note = secret()
    response = await run(client, "keep", tab, note, prefix=prefix)
    assert response.status_code == 200, response.text
    return note


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def join(client: httpx.AsyncClient, api_name: str, tab: str, *data: object) -> str:
    fn = await fn_index(client, api_name)
    response = await client.post(
        "/gradio_api/queue/join", content=event(tab, *data, fn=fn), headers=JSON
    )
    assert response.status_code == 200, response.text
    return str(response.json()["event_id"])


async def results(client: httpx.AsyncClient, tab: str) -> list[Any]:
    """The outputs of the tab's completed events, read from its queue's stream."""
    with anyio.fail_after(20):
        response = await client.get(f"/gradio_api/queue/data?session_hash={tab}")
    assert response.status_code == 200
    return [
        message["output"]["data"]
        for message in sse_messages(response.text)
        if message.get("msg") == "process_completed" and message.get("success")
    ]


def refusals(caplog: pytest.LogCaptureFixture, reason: str = REASON_NOT_SESSION_OWNER) -> int:
    return sum(
        1
        for record in caplog.records
        if record.name == AUDIT_LOGGER
        and vars(record).get("event") == "access.denied"
        and vars(record).get("reason") == reason
    )


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": SESSION_NOT_FOUND_DETAIL}


# --- part one: a Gradio session is its user's ---------------------------------------------


async def test_another_user_cannot_read_a_tabs_queue_stream(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream carries the results of alice's queued events: bob must not take them."""
    tab = new_tab()
    note = secret()
    await join(alice, "shout", tab, note)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    with anyio.fail_after(20):
        theirs = await bob.get(f"/gradio_api/queue/data?session_hash={tab}")
    assert_refused(theirs)
    assert note.upper() not in theirs.text
    assert refusals(caplog) == 1
    # Alice's own stream still holds her result: bob took nothing from it.
    assert await results(alice, tab) == [[note.upper()]]


async def test_another_user_cannot_join_a_tabs_queue(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    tab = new_tab()
    await run(alice, "recall", tab, None)  # alice's tab is in use
    fn = await fn_index(bob, "shout")
    note = f"bob's intrusion {uuid.uuid4()}"
    for route in ("/gradio_api/queue/join", "/gradio_api/queue/join%0A"):
        theirs = await bob.post(route, content=event(tab, note, fn=fn), headers=JSON)
        assert_refused(theirs)
    await anyio.sleep(0.3)  # a queued handler would have run by now
    assert note not in SHOUTED
    # Alice's own queued event, end to end: joined, run, its result in her stream.
    mine = secret()
    await join(alice, "shout", tab, mine)
    assert await results(alice, tab) == [[mine.upper()]]
    assert SHOUTED.count(mine) == 1


async def test_another_user_cannot_run_events_against_a_tabs_state(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    tab = new_tab()
    note = await keep_a_secret(alice, tab)
    for route in ("run/recall", "api/recall", "run/recall/", "call/recall"):
        theirs = await bob.post(f"/gradio_api/{route}", content=event(tab, None), headers=JSON)
        assert_refused(theirs)
        assert note not in theirs.text
    # Alice's tab keeps working, its state hers, again and again.
    for _ in range(3):
        mine = await run(alice, "recall", tab, None)
        assert (mine.status_code, mine.json()["data"]) == (200, [note])


async def test_another_user_cannot_snapshot_a_tab_in_a_deep_link(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """``deep_link`` writes the session's component values (alice's note among them) to a
    file under the upload folder and hands out its name."""
    tab = new_tab()
    await keep_a_secret(alice, tab)
    theirs = await bob.get(f"/gradio_api/deep_link?session_hash={tab}")
    assert_refused(theirs)
    mine = await alice.get(f"/gradio_api/deep_link?session_hash={tab}")
    assert mine.status_code == 200
    assert mine.json()  # a link to her snapshot


async def test_another_user_cannot_keep_a_tabs_heartbeat(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat is an endless stream; when it closes, Gradio ends the tab's streams,
    cancels its events and marks its state closed. Bob's must not start."""
    tab = new_tab()
    await keep_a_secret(alice, tab)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    with anyio.fail_after(10):  # Gradio's own answer would stream until the app stops
        theirs = await bob.get(f"/gradio_api/heartbeat/{tab}")
    assert_refused(theirs)
    assert refusals(caplog) == 1


async def test_another_user_cannot_reach_a_tabs_media_streams(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    tab = new_tab()
    await keep_a_secret(alice, tab)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    for tail in ("playlist.m3u8", "segment1.aac", "playlist-file"):
        theirs = await bob.get(f"/gradio_api/stream/{tab}/0a1b2c/3/{tail}")
        assert_refused(theirs)
    assert refusals(caplog) == 3
    mine = await alice.get(f"/gradio_api/stream/{tab}/0a1b2c/3/playlist.m3u8")
    assert mine.status_code == 404  # Gradio's own: her tab has no such stream
    assert refusals(caplog) == 3


async def test_another_user_cannot_cancel_a_tabs_events(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    tab = new_tab()
    event_id = await join(alice, "shout", tab, secret())
    fn = await fn_index(bob, "shout")
    body = {"event_id": event_id, "session_hash": tab, "fn_index": fn}
    theirs = await bob.post("/gradio_api/cancel", content=json.dumps(body), headers=JSON)
    assert_refused(theirs)
    mine = await alice.post("/gradio_api/cancel", content=json.dumps(body), headers=JSON)
    assert (mine.status_code, mine.json()) == (200, {"success": True})
    with anyio.fail_after(20):  # her stream ends with her cancelled (so completed) event
        stream = await alice.get(f"/gradio_api/queue/data?session_hash={tab}")
    assert stream.status_code == 200
    assert event_id in stream.text


async def test_another_user_cannot_call_a_component_server_in_a_tab(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    tab = new_tab()
    await keep_a_secret(alice, tab)
    explorer = await component_id(alice, "explorer")
    body = {"data": None, "component_id": explorer, "fn_name": "ls", "session_hash": tab}
    for route in ("/gradio_api/component_server", "/gradio_api/component_server/"):
        theirs = await bob.post(route, content=json.dumps(body), headers=JSON)
        assert_refused(theirs)
        mine = await alice.post(route, content=json.dumps(body), headers=JSON)
        assert mine.status_code == 200
        assert {"name": TEMPLATE.name, "type": "file", "valid": True} in mine.json()
    form = {key: str(value) for key, value in body.items() if key != "data"}
    files = {"file": ("layer.png", b"\x89PNG", "image/png")}
    headers = SAME_ORIGIN
    theirs = await bob.post("/gradio_api/component_server", data=form, files=files, headers=headers)
    assert_refused(theirs)


# Each spelling of alice's hash that Gradio's router reads as her hash, on some route.
SPELLINGS: list[tuple[str, Any]] = [
    ("query-encoded", lambda t: ("GET", "/gradio_api/deep_link?session_hash=" + _pct(t), None)),
    (
        "query-repeated",
        lambda t: ("GET", f"/gradio_api/deep_link?session_hash=x&session_hash={t}", None),
    ),
    ("query-newline-route", lambda t: ("GET", f"/gradio_api/deep_link%0A?session_hash={t}", None)),
    ("path-encoded", lambda t: ("GET", "/gradio_api/heartbeat/" + _pct(t), None)),
    ("body-escaped-value", lambda t: ("POST", "/gradio_api/run/recall", _escaped(t))),
    (
        "body-escaped-key",
        lambda t: (
            "POST",
            "/gradio_api/run/recall",
            event(t, None).replace(b'"session_hash"', b'"session\\u005fhash"'),
        ),
    ),
    (
        "body-utf-16",
        lambda t: ("POST", "/gradio_api/run/recall", event(t, None).decode().encode("utf-16")),
    ),
    (
        "body-duplicate-key",
        lambda t: (
            "POST",
            "/gradio_api/run/recall",
            b'{"session_hash": "mine", ' + event(t, None)[1:],
        ),
    ),
]


def _pct(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


def _escaped(tab: str) -> bytes:
    escaped = "".join(f"\\u{ord(char):04x}" for char in tab)
    return b'{"data": [null], "event_data": null, "session_hash": "' + escaped.encode() + b'"}'


@pytest.mark.parametrize("spell", [pytest.param(s, id=name) for name, s in SPELLINGS])
async def test_no_spelling_of_the_hash_reaches_another_users_tab(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, spell: Any
) -> None:
    tab = new_tab()
    note = await keep_a_secret(alice, tab)
    method, url, body = spell(tab)
    headers = JSON if body is not None else {}
    with anyio.fail_after(10):
        theirs = await bob.request(method, url, content=body, headers=headers)
    assert_refused(theirs)
    assert note not in theirs.text
    if method == "POST":  # the spelling is her tab's: through it, alice reads her state
        mine = await alice.request(method, url, content=body, headers=headers)
        assert (mine.status_code, mine.json()["data"]) == (200, [note])


async def test_a_hash_that_is_no_string_is_refused_by_gradio(bob: httpx.AsyncClient) -> None:
    """The middleware binds only string hashes, and leaves others to Gradio: it refuses
    them all (its models want a string), so no session is reached through them."""
    fn = await fn_index(bob, "shout")
    for value in (12, ["x"], {"a": 1}, True):
        body = {"data": ["x"], "fn_index": fn, "session_hash": value}
        for route in ("/gradio_api/queue/join", "/gradio_api/run/recall", "/gradio_api/cancel"):
            response = await bob.post(route, content=json.dumps(body), headers=JSON)
            assert 400 <= response.status_code < 500, (route, value, response.status_code)


async def test_sessions_are_bound_at_every_mount(tmp_path: Path) -> None:
    async with (
        app_with_sessions(tmp_path, extra_page="/tools") as app_env,
        signed_in(app_env, "alice") as alice,
        signed_in(app_env, "bob") as bob,
    ):
        tab = new_tab()
        note = await keep_a_secret(alice, tab, prefix="/tools")
        for prefix in ("/tools", ""):
            assert_refused(await run(bob, "recall", tab, None, prefix=prefix))
            assert_refused(await bob.get(f"{prefix}/gradio_api/deep_link?session_hash={tab}"))
        mine = await run(alice, "recall", tab, None, prefix="/tools")
        assert (mine.status_code, mine.json()["data"]) == (200, [note])
        home_tab = new_tab()
        await keep_a_secret(alice, home_tab)
        assert_refused(await run(bob, "recall", home_tab, None, prefix="/tools"))


async def test_instances_sharing_redis_share_the_bindings(tmp_path: Path) -> None:
    """Behind a load balancer a tab's requests reach any instance: a hash bound through
    one is refused to another user on the other."""
    with RedisServer(tmp_path / "redis") as server:
        timeouts = SessionTimeouts(idle=600, absolute=3600)
        stores = [RedisSessionStore.from_url(server.url, timeouts) for _ in range(2)]
        data = tmp_path / "data"
        async with (
            app_with_sessions(
                data, sessions=stores[0], session_backend="redis", redis_url=server.url
            ) as one,
            app_with_sessions(
                data,
                add_users=False,
                sessions=stores[1],
                session_backend="redis",
                redis_url=server.url,
            ) as two,
        ):
            async with signed_in(one, "alice") as alice_on_one:
                tab = new_tab()
                await keep_a_secret(alice_on_one, tab)
                alice_cookies = alice_on_one.cookies
            async with signed_in(one, "bob") as bob_on_one:
                bob_cookies = bob_on_one.cookies
            async with two.new_client() as alice_on_two, two.new_client() as bob_on_two:
                alice_on_two.cookies = alice_cookies
                bob_on_two.cookies = bob_cookies
                assert_refused(await run(bob_on_two, "recall", tab, None))
                assert_refused(await bob_on_two.get(f"/gradio_api/deep_link?session_hash={tab}"))
                assert (await run(alice_on_two, "recall", tab, None)).status_code == 200
            with server.client() as client:
                bindings = list(client.scan_iter(match="prodio:g:*"))
                assert len(bindings) == 1
                assert client.get(bindings[0]) == "alice"
                assert client.pttl(bindings[0]) > 0


@asynccontextmanager
async def app_with_registry_down(data_dir: Path) -> AsyncIterator[AppUnderTest]:
    """The app with sessions in memory and its upload registry on a Redis that is not
    there: every binding, look-up and record fails for real."""
    settings = make_settings(data_dir)
    sessions = InMemorySessionStore(SessionTimeouts(600, 3600))
    users = SqlUserStore(settings.effective_database_url)
    hasher = PasswordHasher(**FAST_HASHER_ARGS)
    dead = Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    registry = RedisUploadRegistry(dead, 60, owns_client=True)
    services = build_services(
        settings, sessions=sessions, users=users, hasher=hasher, uploads=registry
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HomePage, "tab_classes", [*HomePage.tab_classes, SessionTab])
        app = create_app(settings, services=services)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c,
        ):
            app_env = AppUnderTest(app, services, sessions, users, hasher, c)
            app_env.add_user("alice", PASSWORD)
            yield app_env
    finally:
        await registry.aclose()


async def test_a_registry_that_does_not_answer_gives_503(tmp_path: Path) -> None:
    async with app_with_registry_down(tmp_path) as app_env, signed_in(app_env, "alice") as alice:
        tab = new_tab()
        fn = await fn_index(alice, "shout")
        for method, url, body in (
            ("POST", "/gradio_api/run/recall", event(tab, None)),
            ("POST", "/gradio_api/queue/join", event(tab, "x", fn=fn)),
            ("GET", f"/gradio_api/queue/data?session_hash={tab}", None),
            ("GET", f"/gradio_api/heartbeat/{tab}", None),
            ("GET", f"/gradio_api/deep_link?session_hash={tab}", None),
        ):
            with anyio.fail_after(10):
                response = await alice.request(
                    method, url, content=body, headers=JSON if body else {}
                )
            assert response.status_code == 503, (url, response.status_code)
            assert response.headers["retry-after"] == "5"
        # An event whose output file cannot be recorded does not hand its path out.
        note = secret()
        response = await alice.post(
            "/gradio_api/run/report", content=json.dumps({"data": [note]}), headers=JSON
        )
        assert response.status_code != 200
        assert OUTPUTS_UNAVAILABLE_MESSAGE in response.text
        assert "report.txt" not in response.text


def _walk(routes: Sequence[BaseRoute], prefix: str = "") -> list[tuple[str, BaseRoute]]:
    found: list[tuple[str, BaseRoute]] = []
    for route in routes:
        if hasattr(route, "original_router") and hasattr(route, "include_context"):
            found += _walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            found += _walk(list(route.routes), prefix + route.path)
        elif hasattr(route, "path"):
            found.append((prefix + route.path, route))
    return found


def _takes_a_session_hash(route: Any) -> bool:
    """Whether FastAPI hands the route's handler a ``session_hash`` (a path or query
    parameter, or a field of its body model)."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return False
    params = [*dependant.path_params, *dependant.query_params, *dependant.header_params]
    if any(param.name == "session_hash" for param in params):
        return True
    for body in dependant.body_params:
        fields = getattr(body.field_info.annotation, "model_fields", {})
        if "session_hash" in fields:
            return True
    return False


# Gradio routes that read a session hash FastAPI does not declare, and routes that declare
# one the middleware does not check, with the reason.
READ_BY_HAND = set(FORM_SESSION_ROUTES)  # component_server reads its JSON or form itself
NOT_A_SESSION = {
    # (None yet: every declared session hash is checked.)
}


async def test_every_gradio_route_that_takes_a_session_hash_is_checked(env: AppUnderTest) -> None:
    """A route that a Gradio upgrade adds, and that takes a session hash, fails here until
    the middleware checks it or it is listed above with the reason."""
    gradio = next(
        route.app  # type: ignore[attr-defined]
        for route in env.app.routes
        if hasattr(getattr(route, "app", None), "get_blocks")
    )
    declared = {path for path, route in _walk(list(gradio.routes)) if _takes_a_session_hash(route)}
    checked = {*SESSION_QUERY_ROUTES, *SESSION_PATH_ROUTES, *SESSION_BODY_ROUTES}
    assert declared | READ_BY_HAND == checked | set(NOT_A_SESSION)


# --- part two: the files of an event's outputs are its user's -----------------------------


def output_path(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    path = response.json()["data"][0]["path"]
    assert isinstance(path, str)
    return path


async def test_an_output_file_is_its_users(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    note = secret()
    path = output_path(await run(alice, "report", new_tab(), note))
    mine = await alice.get(f"/gradio_api/file={path}")
    assert (mine.status_code, mine.text) == (200, note)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    theirs = await bob.get(f"/gradio_api/file={path}")
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": NOT_FOUND_DETAIL}
    assert refusals(caplog, REASON_NOT_OWNER) == 1
    # Nor is it bob's event's input; it is alice's.
    as_input = {"path": path, "meta": {"_type": "gradio.FileData"}}
    theirs = await run(bob, "read_file", new_tab(), as_input)
    assert theirs.status_code == 404
    assert note.encode() not in READ
    mine = await run(alice, "read_file", new_tab(), as_input)
    assert (mine.status_code, mine.json()["data"]) == (200, [note])


async def test_a_queued_events_output_file_is_its_users(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Recorded before the result goes out on the queue's stream."""
    tab = new_tab()
    note = secret()
    await join(alice, "report_queued", tab, note)
    [[output]] = await results(alice, tab)
    path = output["path"]
    assert (await bob.get(f"/gradio_api/file={path}")).status_code == 404
    mine = await alice.get(f"/gradio_api/file={path}")
    assert (mine.status_code, mine.text) == (200, note)


async def test_an_output_two_users_get_is_both_users(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, carol: httpx.AsyncClient
) -> None:
    """The same bytes under the same name are one file in Gradio's cache."""
    note = secret()
    path = output_path(await run(alice, "report", new_tab(), note))
    assert output_path(await run(bob, "report", new_tab(), note)) == path
    for owner in (alice, bob):
        response = await owner.get(f"/gradio_api/file={path}")
        assert (response.status_code, response.text) == (200, note)
    assert (await carol.get(f"/gradio_api/file={path}")).status_code == 404


async def test_a_file_the_page_shows_everybody_stays_everybodys(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """The page's default file is in the configuration every user loads: an event that
    returns it to alice does not make it hers."""
    path = output_path(await run(alice, "template", new_tab()))
    config = (await bob.get("/config", headers=FETCH)).text
    assert json.dumps(path)[1:-1] in config
    for user in (alice, bob):
        response = await user.get(f"/gradio_api/file={quote(path)}")
        assert (response.status_code, response.text) == (200, TEMPLATE.read_text())


def test_every_page_is_built_on_prodio_blocks(env: AppUnderTest) -> None:
    gradio = next(
        route.app  # type: ignore[attr-defined]
        for route in env.app.routes
        if hasattr(getattr(route, "app", None), "get_blocks")
    )
    blocks = gradio.get_blocks()
    assert isinstance(blocks, ProdioBlocks)
    assert blocks.output_registry is env.services.uploads
