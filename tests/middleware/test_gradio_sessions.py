"""UploadOwnershipMiddleware binds Gradio session hashes to users, on a small ASGI app.

Each route that carries a session hash (query, path, event body) is pinned on its own
here: the first user binds the hash, another user gets a 404 and never reaches the app,
every spelling Gradio's router reads is the same hash, a registry outage gives 503. The
whole app with real Gradio is in tests/test_security_gradio_sessions.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from redis.asyncio import Redis
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from prodio.audit import AUDIT_LOGGER
from prodio.middleware.uploads import (
    EVENT_ROUTES,
    REASON_NOT_SESSION_OWNER,
    SESSION_BODY_ROUTES,
    SESSION_NOT_FOUND_DETAIL,
    SESSION_PATH_ROUTES,
    SESSION_QUERY_ROUTES,
    UploadOwnershipMiddleware,
    _never_called,
)
from prodio.uploads import InMemoryUploadRegistry, Ownership, RedisUploadRegistry
from prodio.uploads.base import UploadRegistry
from tests.middleware.uploads_helpers import TwoChunkStream, signed_in
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

ALICE_TAB = "k3j5h2l1m9x"  # the hash alice's browser made up for her tab
BOB_TAB = "p0o9i8u7y6t"


class RecordingGradio:
    """Stands for Gradio: reads the whole request, answers 200 ``ran``."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ran"})


@dataclass
class Gradio:
    """The middleware in front of a :class:`RecordingGradio`, and a client for both."""

    registry: UploadRegistry
    inner: RecordingGradio = field(default_factory=RecordingGradio)

    def client(self) -> httpx.AsyncClient:
        app = signed_in(UploadOwnershipMiddleware(self.inner, registry=self.registry))
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )

    async def send(self, user: str | None, request: Request) -> httpx.Response:
        headers = {"x-test-user": user} if user else {}
        async with self.client() as http:
            return await http.request(
                request.method,
                request.url,
                content=request.body,
                headers={**headers, **request.headers},
            )


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def browser_event(session_hash: str, **fields: Any) -> bytes:
    """An event's body as Gradio's frontend writes it: ``session_hash`` last."""
    body = {"data": ["a note", None], "event_data": None, "fn_index": 3, "trigger_id": 7}
    return json.dumps({**body, **fields, "session_hash": session_hash}).encode()


JSON = {"content-type": "application/json"}

# One request per route that carries a session hash, for the hash it is given.
CARRIERS: dict[str, Any] = {
    "queue-data": lambda h: Request("GET", f"/gradio_api/queue/data?session_hash={quote(h)}"),
    "deep-link": lambda h: Request("GET", f"/gradio_api/deep_link?session_hash={quote(h)}"),
    "heartbeat": lambda h: Request("GET", f"/gradio_api/heartbeat/{quote(h)}"),
    "stream-playlist": lambda h: Request(
        "GET", f"/gradio_api/stream/{quote(h)}/0a1b/5/playlist.m3u8"
    ),
    "stream-segment": lambda h: Request("GET", f"/gradio_api/stream/{quote(h)}/0a1b/5/s1.aac"),
    "stream-playlist-file": lambda h: Request(
        "GET", f"/gradio_api/stream/{quote(h)}/0a1b/5/playlist-file"
    ),
    **{
        f"post-{path}": (lambda h, path=path: Request("POST", path, browser_event(h), JSON))
        for path in (
            "/gradio_api/run/predict",
            "/gradio_api/run/predict/",
            "/gradio_api/api/echo",
            "/gradio_api/api/echo/",
            "/gradio_api/call/echo",
            "/gradio_api/call/echo/",
            "/gradio_api/queue/join",
            "/gradio_api/queue/join%0A",  # Starlette's "$" matches before a final newline
            "/gradio_api/stream/3f2a9c",
        )
    },
    "component-server": lambda h: Request(
        "POST",
        "/gradio_api/component_server",
        json.dumps({"data": None, "component_id": 4, "fn_name": "ls", "session_hash": h}).encode(),
        JSON,
    ),
    "component-server-slash": lambda h: Request(
        "POST",
        "/gradio_api/component_server/",
        json.dumps({"data": None, "component_id": 4, "fn_name": "ls", "session_hash": h}).encode(),
        JSON,
    ),
    "cancel": lambda h: Request(
        "POST",
        "/gradio_api/cancel",
        # The frontend's order: the hash is not last.
        json.dumps({"event_id": "3f2a9c", "session_hash": h, "fn_index": 3}).encode(),
        JSON,
    ),
}


def test_every_route_that_carries_a_session_hash_is_tried_here() -> None:
    routes = [
        Route(template, _never_called)
        for template in (*SESSION_QUERY_ROUTES, *SESSION_PATH_ROUTES, *SESSION_BODY_ROUTES)
    ]
    paths = [carrier("x").url.split("?")[0].replace("%0A", "\n") for carrier in CARRIERS.values()]
    tried = {
        route.path
        for path in paths
        for route in routes
        if route.matches({"type": "http", "method": "GET", "path": path})[0] is not Match.NONE
    }
    assert tried == {route.path for route in routes}


@pytest.fixture
def gradio(registry: InMemoryUploadRegistry) -> Gradio:
    return Gradio(registry)


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
async def test_a_session_hash_is_its_first_users_and_refused_to_others(
    gradio: Gradio, caplog: pytest.LogCaptureFixture, carrier: Any
) -> None:
    request = carrier(ALICE_TAB)
    mine = await gradio.send("alice", request)
    assert (mine.status_code, gradio.inner.calls) == (200, 1)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    theirs = await gradio.send("bob", request)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": SESSION_NOT_FOUND_DETAIL}
    assert gradio.inner.calls == 1  # bob's request never reached Gradio
    [record] = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    fields = vars(record)
    assert (fields["event"], fields["user"], fields["status"], fields["reason"]) == (
        "access.denied",
        "bob",
        404,
        REASON_NOT_SESSION_OWNER,
    )
    again = await gradio.send("alice", request)
    assert (again.status_code, gradio.inner.calls) == (200, 2)
    assert await gradio.registry.bind_session("bob", ALICE_TAB) is Ownership.OTHERS


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
async def test_a_hash_bound_through_any_route_is_bound_for_every_route(
    gradio: Gradio, carrier: Any
) -> None:
    """One binding per hash: a tab's heartbeat binds it for its events, and so on."""
    assert (await gradio.send("alice", carrier(ALICE_TAB))).status_code == 200
    for name, other in CARRIERS.items():
        assert (await gradio.send("bob", other(ALICE_TAB))).status_code == 404, name


async def test_requests_of_the_app_itself_are_left_alone(gradio: Gradio) -> None:
    """Routes that carry no session hash pass, whatever their body or query says."""
    await gradio.registry.bind_session("alice", ALICE_TAB)
    for request in (
        Request("GET", f"/gradio_api/queue/status?session_hash={ALICE_TAB}"),
        Request("GET", f"/gradio_api/upload_progress?upload_id=u1&session_hash={ALICE_TAB}"),
        Request("POST", "/gradio_api/reset", json.dumps({"event_id": "3f2a9c"}).encode(), JSON),
        Request("POST", "/gradio_api/stream/3f2a9c/close"),
        # /call/v2 takes the body as the endpoint's parameters; Gradio drops a session hash.
        Request("POST", "/gradio_api/call/v2/echo", browser_event(ALICE_TAB), JSON),
        Request("GET", f"/gradio_api/heartbeat/{ALICE_TAB}/more"),
        Request("GET", f"/config?session_hash={ALICE_TAB}"),
    ):
        response = await gradio.send("bob", request)
        assert response.status_code == 200, request
    assert gradio.registry.session_count == 1


# --- every spelling Gradio's router reads is the same hash ----------------------------


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        pytest.param(
            "/gradio_api/queue/data?session_hash=" + quote(ALICE_TAB, safe=""), True, id="plain"
        ),
        pytest.param(
            "/gradio_api/queue/data?session_hash="
            + "".join(f"%{b:02X}" for b in ALICE_TAB.encode()),
            True,
            id="percent-encoded",
        ),
        pytest.param(
            f"/gradio_api/queue/data?session_hash={BOB_TAB}&session_hash={ALICE_TAB}",
            True,
            id="repeated-last-is-read",
        ),
        pytest.param(
            f"/gradio_api/queue/data?session_hash={ALICE_TAB}&session_hash={BOB_TAB}",
            False,
            id="repeated-first-is-not",
        ),
        pytest.param(f"/gradio_api/queue/data%0A?session_hash={ALICE_TAB}", True, id="newline"),
        pytest.param(f"/tools/gradio_api/queue/data?session_hash={ALICE_TAB}", True, id="mount"),
        pytest.param(f"/gradio_api/deep_link?x=1&session_hash={ALICE_TAB}#f", True, id="deep"),
        pytest.param(
            "/gradio_api/heartbeat/" + "".join(f"%{b:02X}" for b in ALICE_TAB.encode()),
            True,
            id="path-percent-encoded",
        ),
        pytest.param(f"/a/b/gradio_api/heartbeat/{ALICE_TAB}", True, id="path-at-a-mount"),
        pytest.param(f"/gradio_api/heartbeat/{ALICE_TAB}%0A", False, id="path-another-hash"),
        pytest.param(
            f"/gradio_api/stream/{ALICE_TAB}/r/1/seg.ts?session_hash={BOB_TAB}",
            True,
            id="path-wins-over-query",
        ),
    ],
)
async def test_the_hash_is_read_as_gradios_router_reads_it(
    gradio: Gradio, url: str, refused: bool
) -> None:
    await gradio.registry.bind_session("alice", ALICE_TAB)
    response = await gradio.send("bob", Request("GET", url))
    assert response.status_code == (404 if refused else 200)


async def test_a_query_hash_with_spaces_and_symbols_is_one_hash(gradio: Gradio) -> None:
    odd = "a tab+/?&=#%é"
    await gradio.registry.bind_session("alice", odd)
    for spelled in (quote(odd, safe=""), quote(odd, safe="").replace("%20", "+")):
        url = f"/gradio_api/queue/data?session_hash={spelled}"
        assert (await gradio.send("bob", Request("GET", url))).status_code == 404, url


def _utf(text: str, codec: str) -> bytes:
    return text.encode(codec)


# Bodies that name alice's tab at their top level, in every spelling json.loads reads.
ALICE_BODIES: dict[str, bytes] = {
    "browser": browser_event(ALICE_TAB),
    "compact": json.dumps({"data": [], "session_hash": ALICE_TAB}, separators=(",", ":")).encode(),
    "whitespace": b'{"data": []\n,\t"session_hash"\r\n :\n "' + ALICE_TAB.encode() + b'" \n}\n ',
    "client-order": json.dumps({"session_hash": ALICE_TAB, "data": [], "fn_index": 3}).encode(),
    "escaped-key-last": b'{"data": [], "session\\u005fhash": "' + ALICE_TAB.encode() + b'"}',
    "escaped-value": b'{"data": [], "session_hash": "\\u006b3j5h2l1m9x"}',
    "escaped-key-wins": (
        b'{"data": [], "session_hash": "' + BOB_TAB.encode() + b'", '
        b'"session\\u005fhash": "' + ALICE_TAB.encode() + b'"}'
    ),
    "duplicate-last-wins": (
        b'{"session_hash": "' + BOB_TAB.encode() + b'", "data": [], '
        b'"session_hash": "' + ALICE_TAB.encode() + b'"}'
    ),
    "with-a-file": browser_event(ALICE_TAB, data=[{"path": "/tmp/no-such-file"}]),
    "with-a-file-client-order": json.dumps(
        {"session_hash": ALICE_TAB, "data": [{"path": "/tmp/no-such-file"}]}
    ).encode(),
    "utf-8-bom": b"\xef\xbb\xbf" + browser_event(ALICE_TAB),
    "utf-16": _utf(browser_event(ALICE_TAB).decode(), "utf-16"),
    "utf-16-be": _utf(browser_event(ALICE_TAB).decode(), "utf-16-be"),
    "utf-32-le": _utf(browser_event(ALICE_TAB).decode(), "utf-32-le"),
}


# Bodies whose top-level hash is bob's own, with alice's somewhere Gradio does not read it.
BOB_BODIES: dict[str, bytes] = {
    "nested": browser_event(BOB_TAB, data=[{"session_hash": ALICE_TAB}]),
    "nested-last": (
        b'{"session_hash": "' + BOB_TAB.encode() + b'", "data": '
        b'{"session_hash": "' + ALICE_TAB.encode() + b'"}}'
    ),
    "in-a-string": browser_event(BOB_TAB, data=[f'"session_hash": "{ALICE_TAB}"}}']),
    "in-a-string-last": json.dumps(
        {"session_hash": BOB_TAB, "data": f'x", "session_hash": "{ALICE_TAB}"}}'}
    ).encode(),
    "escaped-key-loses": (
        b'{"data": [], "session\\u005fhash": "' + ALICE_TAB.encode() + b'", '
        b'"session_hash": "' + BOB_TAB.encode() + b'"}'
    ),
    "duplicate-first-loses": (
        b'{"session_hash": "' + ALICE_TAB.encode() + b'", "data": [], '
        b'"session_hash": "' + BOB_TAB.encode() + b'"}'
    ),
}


@pytest.mark.parametrize("body", ALICE_BODIES.values(), ids=ALICE_BODIES.keys())
async def test_every_spelling_of_the_body_hash_is_the_hash(gradio: Gradio, body: bytes) -> None:
    assert json.loads(body)["session_hash"] == ALICE_TAB  # what Gradio reads
    await gradio.registry.bind_session("alice", ALICE_TAB)
    for path in ("/gradio_api/queue/join", "/gradio_api/run/predict"):
        theirs = await gradio.send("bob", Request("POST", path, body, JSON))
        assert theirs.status_code == 404, path
        assert gradio.inner.calls == 0
    mine = await gradio.send("alice", Request("POST", "/gradio_api/queue/join", body, JSON))
    assert (mine.status_code, gradio.inner.bodies) == (200, [body])


@pytest.mark.parametrize("body", BOB_BODIES.values(), ids=BOB_BODIES.keys())
async def test_only_the_top_level_hash_is_the_sessions(gradio: Gradio, body: bytes) -> None:
    assert json.loads(body)["session_hash"] == BOB_TAB  # what Gradio reads
    await gradio.registry.bind_session("alice", ALICE_TAB)
    response = await gradio.send("bob", Request("POST", "/gradio_api/queue/join", body, JSON))
    assert (response.status_code, gradio.inner.bodies) == (200, [body])
    assert await gradio.registry.bind_session("alice", BOB_TAB) is Ownership.OTHERS


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"data": [], "session_hash": null}', id="null"),
        pytest.param(b'{"data": [], "session_hash": 12}', id="number"),
        pytest.param(b'{"data": [], "session_hash": ["' + ALICE_TAB.encode() + b'"]}', id="list"),
        pytest.param(b'{"data": []}', id="none"),
        pytest.param(b'["session_hash", "' + ALICE_TAB.encode() + b'"]', id="not-an-object"),
        pytest.param(b'{"data": [], "session_hash": "' + ALICE_TAB.encode() + b'"', id="cut"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_a_body_without_a_string_hash_binds_nothing(gradio: Gradio, body: bytes) -> None:
    """Gradio reads no session from these, or refuses them (a 4xx): they pass untouched,
    and nothing is bound (tests/test_security_gradio_sessions.py pins Gradio's answers)."""
    await gradio.registry.bind_session("alice", ALICE_TAB)
    response = await gradio.send("bob", Request("POST", "/gradio_api/queue/join", body, JSON))
    assert (response.status_code, gradio.inner.bodies) == (200, [body])
    assert gradio.registry.session_count == 1


async def test_a_browsers_event_is_not_parsed(
    gradio: Gradio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash a browser puts last is read from the end of the body, without json.loads
    (an event's body may be a long chat history)."""
    parsed: list[object] = []
    real_loads = json.loads

    def spy(document: str | bytes, **kwargs: Any) -> Any:
        parsed.append(document)
        return real_loads(document, **kwargs)

    history = [[f"question {n}", f"answer {n} " * 50] for n in range(200)]
    body = browser_event(ALICE_TAB, data=[history])
    with monkeypatch.context() as patched:
        patched.setattr(json, "loads", spy)
        mine = await gradio.send("alice", Request("POST", "/gradio_api/queue/join", body, JSON))
        theirs = await gradio.send("bob", Request("POST", "/gradio_api/queue/join", body, JSON))
    assert (mine.status_code, theirs.status_code) == (200, 404)
    assert parsed == []


async def test_a_body_too_deep_to_parse_gets_400(gradio: Gradio) -> None:
    body = b'{"session_hash": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await gradio.send("bob", Request("POST", "/gradio_api/cancel", body, JSON))
    assert (response.status_code, gradio.inner.calls) == (400, 0)


# --- a multipart component_server body -----------------------------------------------------


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "b0undary") -> bytes:
    """A multipart/form-data body of (name, file name or None, content) parts."""
    lines = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        lines += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        lines += content + b"\r\n"
    return lines + f"--{boundary}--\r\n".encode()


FORM = {"content-type": "multipart/form-data; boundary=b0undary"}


@pytest.mark.parametrize(
    ("parts", "refused"),
    [
        pytest.param(
            [
                ("data", None, b"{}"),
                ("component_id", None, b"4"),
                ("fn_name", None, b"x"),
                ("session_hash", None, ALICE_TAB.encode()),
            ],
            True,
            id="browser",
        ),
        pytest.param(
            [("session_hash", None, BOB_TAB.encode()), ("session_hash", None, ALICE_TAB.encode())],
            True,
            id="last-field-wins",
        ),
        pytest.param(
            [("session_hash", None, ALICE_TAB.encode()), ("session_hash", None, BOB_TAB.encode())],
            False,
            id="first-field-loses",
        ),
        pytest.param(
            [
                ("session_hash", None, BOB_TAB.encode()),
                ("session_hash", "a.png", ALICE_TAB.encode()),
            ],
            False,
            id="a-file-is-no-field",
        ),
        pytest.param(
            [
                ("file", "layer.png", b"\x89PNG" + bytes(range(256)) * 64),
                ("session_hash", None, ALICE_TAB.encode()),
            ],
            True,
            id="after-a-file",
        ),
    ],
)
async def test_a_multipart_component_server_body_is_checked(
    gradio: Gradio, parts: list[tuple[str, str | None, bytes]], refused: bool
) -> None:
    """The image editor posts its layers as multipart, with the session hash a form field."""
    await gradio.registry.bind_session("alice", ALICE_TAB)
    body = multipart(*parts)
    request = Request("POST", "/gradio_api/component_server", body, FORM)
    response = await gradio.send("bob", request)
    assert response.status_code == (404 if refused else 200)
    assert gradio.inner.bodies == ([] if refused else [body])
    if refused:
        mine = await gradio.send("alice", request)
        assert (mine.status_code, gradio.inner.bodies) == (200, [body])


async def test_a_multipart_body_gradio_cannot_read_is_left_to_gradio(gradio: Gradio) -> None:
    """No boundary, or a malformed body: Gradio's parser refuses it (400); so it binds
    nothing here."""
    await gradio.registry.bind_session("alice", ALICE_TAB)
    for headers, body in (
        ({"content-type": "multipart/form-data"}, multipart(("session_hash", None, b"x"))),
        (FORM, b"--b0undary\r\nnot a header line\r\n\r\nx\r\n--b0undary--\r\n"),
    ):
        request = Request("POST", "/gradio_api/component_server", body, headers)
        assert (await gradio.send("bob", request)).status_code == 200
    assert gradio.registry.session_count == 1


# --- streams, outages, instances ---------------------------------------------------------


async def test_an_allowed_stream_is_never_held_back(registry: InMemoryUploadRegistry) -> None:
    """Server-Sent Events (queue/data, heartbeat) reach the client chunk by chunk."""
    stream = TwoChunkStream()
    middleware = UploadOwnershipMiddleware(stream, registry=registry)
    for path, query in (
        ("/gradio_api/queue/data", f"session_hash={ALICE_TAB}".encode()),
        (f"/gradio_api/heartbeat/{ALICE_TAB}", b""),
    ):
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query,
            "headers": [],
            "state": {"user": "alice"},
        }
        delivered = await stream.serve(middleware, scope)
        assert [m.get("body") for m in delivered[1:]] == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_nobody_signed_in_binds_nothing(gradio: Gradio) -> None:
    """Unreachable behind the auth middleware; Gradio refuses such a request itself."""
    request = CARRIERS["heartbeat"](ALICE_TAB)
    assert (await gradio.send(None, request)).status_code == 200
    assert gradio.registry.session_count == 0
    assert (await gradio.send("alice", request)).status_code == 200
    assert (await gradio.send(None, request)).status_code == 404


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
async def test_a_registry_that_does_not_answer_fails_closed(
    unreachable: UploadRegistry, carrier: Any
) -> None:
    gradio = Gradio(unreachable)
    response = await gradio.send("alice", carrier(ALICE_TAB))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert gradio.inner.calls == 0


async def test_instances_sharing_redis_share_the_bindings(clean_redis: RedisServer) -> None:
    """A tab's requests reach whichever instance the load balancer picks."""
    registries = [
        RedisUploadRegistry(
            Redis.from_url(clean_redis.url, decode_responses=True), 60, owns_client=True
        )
        for _ in range(2)
    ]
    one, two = (Gradio(registry) for registry in registries)
    try:
        join = CARRIERS["post-/gradio_api/queue/join"](ALICE_TAB)
        assert (await one.send("alice", join)).status_code == 200
        for name, carrier in CARRIERS.items():
            assert (await two.send("bob", carrier(ALICE_TAB))).status_code == 404, name
            assert (await two.send("alice", carrier(ALICE_TAB))).status_code == 200, name
    finally:
        for registry in registries:
            await registry.aclose()


def test_event_routes_and_session_routes_agree() -> None:
    """Every event route but /call/v2/ reads a session hash from its body."""
    assert set(SESSION_BODY_ROUTES) == {
        *(route for route in EVENT_ROUTES if "/call/v2/" not in route),
        "/gradio_api/cancel",
    }
