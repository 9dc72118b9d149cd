"""UploadOwnershipMiddleware on a small ASGI app that answers like Gradio's routes.

The whole app with real Gradio is in tests/test_security_uploads.py; here each behaviour of
the middleware is pinned on its own: what it holds back, what it records, what it refuses.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.audit import AUDIT_LOGGER
from prodio.middleware.uploads import (
    EVENT_ROUTES,
    INVALID_JSON_DETAIL,
    MAX_EVENT_FILES,
    MAX_UPLOAD_ANSWER_BYTES,
    NOT_FOUND_DETAIL,
    REASON_NOT_OWNER,
    TOO_LARGE_DETAIL,
    TOO_MANY_FILES_DETAIL,
    UPLOAD_NOT_FOUND,
    UploadOwnershipMiddleware,
    _may_name_a_file,
    _never_called,
    any_route_pattern,
)
from prodio.uploads import (
    InMemoryUploadRegistry,
    Ownership,
    file_key,
    progress_key,
)
from prodio.uploads.base import UploadRegistry
from tests.middleware.uploads_helpers import TwoChunkStream, signed_in

pytestmark = pytest.mark.anyio

ALICE_FILE = "/tmp/gradio/aaaa/alice.txt"
UPLOAD_ANSWER = json.dumps([ALICE_FILE]).encode()


class FakeGradio:
    """Answers like Gradio: the upload with a JSON list of paths (in ``chunks``), a file
    route with the file or a 403, anything else with a streamed body."""

    def __init__(
        self,
        *,
        status: int = 200,
        chunks: Sequence[bytes] = (UPLOAD_ANSWER,),
        headers: Sequence[tuple[bytes, bytes]] = ((b"content-type", b"application/json"),),
    ) -> None:
        self.status = status
        self.chunks = list(chunks)
        self.headers = list(headers)
        self.seen: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        path = scope["path"]
        if "upload" in path and "progress" not in path:
            await send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
            for index, chunk in enumerate(self.chunks):
                more = index < len(self.chunks) - 1
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            return
        if "file" in path and "missing" in path:
            body = b'{"detail":"File not allowed: missing."}'
            await send({"type": "http.response.start", "status": 403, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served " + path.encode()})


def client_for(
    inner: ASGIApp, registry: UploadRegistry, mount_path: str = "/"
) -> httpx.AsyncClient:
    app = signed_in(UploadOwnershipMiddleware(inner, registry=registry, mount_path=mount_path))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(registry: InMemoryUploadRegistry) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(FakeGradio(), registry) as http:
        yield http


async def receive() -> Message:
    return {"type": "http.request", "body": b""}


def as_user(name: str) -> dict[str, str]:
    return {"x-test-user": name}


async def owner_of(registry: UploadRegistry, path: str) -> Ownership:
    key = file_key(path)
    assert key is not None
    return await registry.ownership("alice", key)


# --- recording ---------------------------------------------------------------------------


async def test_an_upload_is_recorded_before_its_answer_goes_out(
    registry: InMemoryUploadRegistry,
) -> None:
    delivered: list[tuple[str, object]] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            delivered.append(("start", await owner_of(registry, ALICE_FILE)))
        else:
            delivered.append(("body", message.get("body")))

    middleware = UploadOwnershipMiddleware(FakeGradio(), registry=registry)
    await middleware(http_scope("/gradio_api/upload", user="alice", method="POST"), receive, send)
    assert delivered == [("start", Ownership.OWNER), ("body", UPLOAD_ANSWER)]
    assert await registry.ownership("bob", file_key(ALICE_FILE) or "") is Ownership.OTHERS


async def test_an_answer_in_pieces_is_recorded_whole(registry: InMemoryUploadRegistry) -> None:
    paths = [f"/tmp/gradio/{n:04}/file{n}.txt" for n in range(50)]
    body = json.dumps(paths).encode()
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    async with client_for(FakeGradio(chunks=pieces), registry) as http:
        response = await http.post("/gradio_api/upload", headers=as_user("alice"))
    assert response.json() == paths
    for path in paths:
        assert await owner_of(registry, path) is Ownership.OWNER


@pytest.mark.parametrize(
    ("status", "body"),
    [(413, b"File size exceeded maximum allowed size of 10 bytes."), (400, b"Invalid content")],
)
async def test_an_error_answer_passes_untouched_and_records_nothing(
    registry: InMemoryUploadRegistry, status: int, body: bytes
) -> None:
    inner = FakeGradio(status=status, chunks=[body], headers=[(b"content-type", b"text/plain")])
    async with client_for(inner, registry) as http:
        response = await http.post("/gradio_api/upload", headers=as_user("alice"))
    assert response.status_code == status
    assert response.content == body
    assert len(registry) == 0


@pytest.mark.parametrize(
    ("chunks", "headers"),
    [
        pytest.param([b"<html>"], [], id="not-json"),
        pytest.param([b'{"path": "/tmp/x"}'], [], id="not-a-list"),
        pytest.param([b'["/tmp/x", 3]'], [], id="not-all-strings"),
        pytest.param([UPLOAD_ANSWER], [(b"content-encoding", b"br")], id="encoded"),
        pytest.param(
            [b"[" + b" " * (MAX_UPLOAD_ANSWER_BYTES // 2)] * 2 + [b'"/tmp/x"]'],
            [],
            id="too-large",
        ),
    ],
)
async def test_an_answer_that_cannot_be_read_hands_out_nothing(
    registry: InMemoryUploadRegistry, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> None:
    """A path that could not be recorded would be anybody's: it must not reach the user."""
    async with client_for(FakeGradio(chunks=chunks, headers=headers), registry) as http:
        response = await http.post("/gradio_api/upload", headers=as_user("alice"))
    assert response.status_code == 500
    assert "/tmp/" not in response.text
    assert len(registry) == 0


async def test_the_upload_reaches_gradio_without_accept_encoding(
    registry: InMemoryUploadRegistry,
) -> None:
    inner = FakeGradio()
    async with client_for(inner, registry) as http:
        headers = {**as_user("alice"), "accept-encoding": "br, gzip"}
        await http.post("/gradio_api/upload", headers=headers)
        await http.get("/gradio_api/queue/data", headers=headers)
    upload, other = inner.seen
    assert b"accept-encoding" not in dict(upload["headers"])
    assert dict(other["headers"])[b"accept-encoding"] == b"br, gzip"


async def test_an_upload_without_a_user_is_left_to_gradio(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    response = await client.post("/gradio_api/upload")
    assert response.status_code == 200  # the fake does not refuse; Gradio answers 401
    assert len(registry) == 0


async def test_a_route_that_only_looks_like_the_upload_is_not_held(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    for path in ("/gradio_api/upload_files", "/gradio_api/upload/x", "/gradio_api_upload"):
        await client.post(path, headers=as_user("alice"))
    assert len(registry) == 0


async def test_an_upload_through_any_page_is_recorded(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    """Every page is a Gradio app of its own, mounted at its own path, and all of them
    write to the one temp folder: an upload through any of them is recorded."""
    await client.post("/tools/gradio_api/upload", headers=as_user("alice"))
    assert await owner_of(registry, ALICE_FILE) is Ownership.OWNER


async def test_the_upload_route_is_matched_as_starlette_matches_it(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    """Starlette's route patterns end in ``$``, which also matches before a final newline:
    Gradio runs its upload for ``/gradio_api/upload%0A``, so it must be recorded too."""
    response = await client.post("/gradio_api/upload%0A", headers=as_user("alice"))
    assert response.status_code == 200
    assert await owner_of(registry, ALICE_FILE) is Ownership.OWNER


# --- serving -----------------------------------------------------------------------------


async def test_the_owner_gets_the_file_and_another_user_a_404(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    await registry.record("alice", [file_key(ALICE_FILE) or ""])
    mine = await client.get(f"/gradio_api/file={ALICE_FILE}", headers=as_user("alice"))
    assert mine.status_code == 200
    assert mine.text == f"served /gradio_api/file={ALICE_FILE}"
    theirs = await client.get(f"/gradio_api/file={ALICE_FILE}", headers=as_user("bob"))
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": NOT_FOUND_DETAIL}
    anonymous = await client.get(f"/gradio_api/file={ALICE_FILE}")
    assert anonymous.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        f"/gradio_api/file/{ALICE_FILE}",
        f"/gradio_api/file={ALICE_FILE}%0A",
        "/gradio_api/file=/tmp/gradio/aaaa/../aaaa/alice.txt",
        "/gradio_api/file=/proc/self/root/tmp/gradio/aaaa/alice.txt",
    ],
)
async def test_every_spelling_of_a_file_route_is_checked(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient, path: str
) -> None:
    await registry.record("alice", [file_key(ALICE_FILE) or ""])
    for method in ("GET", "HEAD", "POST"):
        response = await client.request(method, path, headers=as_user("bob"))
        assert response.status_code == 404, (method, path)


async def test_a_gradio_refusal_looks_like_another_users_file(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    """Gradio answers 403 for a file that does not exist: left alone, that would tell a
    missing file from another user's."""
    await registry.record("alice", [file_key(ALICE_FILE) or ""])
    theirs = await client.get(f"/gradio_api/file={ALICE_FILE}", headers=as_user("bob"))
    missing = await client.get("/gradio_api/file=/tmp/missing.txt", headers=as_user("bob"))
    assert (missing.status_code, missing.content) == (theirs.status_code, theirs.content)
    page = {**as_user("bob"), "sec-fetch-mode": "navigate", "accept": "text/html"}
    theirs_page = await client.get(f"/gradio_api/file={ALICE_FILE}", headers=page)
    missing_page = await client.get("/gradio_api/file=/tmp/missing.txt", headers=page)
    assert theirs_page.status_code == missing_page.status_code == 404
    assert theirs_page.content == missing_page.content
    assert "text/html" in theirs_page.headers["content-type"]


async def test_files_nobody_recorded_are_left_to_gradio(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/gradio_api/file={ALICE_FILE}", headers=as_user("bob"))
    assert response.status_code == 200


async def test_the_file_routes_of_every_page_are_checked(
    registry: InMemoryUploadRegistry,
) -> None:
    """A page mounted at /tools (docs/extending.md) serves the same temp folder."""
    await registry.record("alice", [file_key(ALICE_FILE) or ""])
    async with client_for(FakeGradio(), registry, mount_path="/app") as http:
        for mount in ("/app", "", "/tools", "/a/b"):
            url = f"{mount}/gradio_api/file={ALICE_FILE}"
            assert (await http.get(url, headers=as_user("bob"))).status_code == 404, url
            assert (await http.get(url, headers=as_user("alice"))).status_code == 200, url
        unrelated = await http.get(f"/gradio_apis/file={ALICE_FILE}", headers=as_user("bob"))
    assert unrelated.status_code == 200  # no Gradio route: left alone


async def test_other_answers_are_never_held_back(registry: InMemoryUploadRegistry) -> None:
    """A Server-Sent Events stream must reach the client chunk by chunk."""
    stream = TwoChunkStream()
    middleware = UploadOwnershipMiddleware(stream, registry=registry)
    for path in ("/gradio_api/queue/data", "/gradio_api/upload_progress"):
        delivered = await stream.serve(middleware, http_scope(path, user="alice"))
        assert [m.get("body") for m in delivered[1:]] == [b"data: 1\n\n", b"data: 2\n\n"]


def http_scope(path: str, *, user: str | None, method: str = "GET") -> Scope:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "state": {"user": user} if user else {},
    }
    return scope


async def test_websockets_pass(registry: InMemoryUploadRegistry) -> None:
    inner = FakeGradio()
    middleware = UploadOwnershipMiddleware(inner, registry=registry)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def connect() -> Message:
        return {"type": "websocket.connect"}

    scope = {**http_scope("/gradio_api/file=x", user=None), "type": "websocket"}
    await middleware(scope, connect, send)
    assert sent[0]["type"] == "websocket.accept"


# --- upload progress ---------------------------------------------------------------------


async def test_the_upload_id_is_recorded_as_the_upload_starts(
    registry: InMemoryUploadRegistry, client: httpx.AsyncClient
) -> None:
    await client.post("/gradio_api/upload?upload_id=a1&upload_id=b2", headers=as_user("alice"))
    # FastAPI hands Gradio the last value: that one is the upload's.
    assert await registry.ownership("bob", progress_key("b2")) is Ownership.OTHERS
    assert await registry.ownership("bob", progress_key("a1")) is Ownership.UNRECORDED


@pytest.mark.parametrize(
    ("query", "user", "status"),
    [
        ("upload_id=b2", "alice", 200),
        ("upload_id=b2", "bob", 404),
        ("upload_id=zz&upload_id=b2", "bob", 404),
        ("upload_id=b2&upload_id=zz", "bob", 200),  # Gradio looks at zz
        ("upload_id=zz", "bob", 200),
    ],
)
async def test_another_users_upload_progress_is_not_found(
    registry: InMemoryUploadRegistry,
    client: httpx.AsyncClient,
    query: str,
    user: str,
    status: int,
) -> None:
    await registry.record("alice", [progress_key("b2")])
    response = await client.get(f"/gradio_api/upload_progress?{query}", headers=as_user(user))
    assert response.status_code == status
    if status == 404:
        assert response.content == UPLOAD_NOT_FOUND


# --- the registry is down ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/gradio_api/upload"),
        ("POST", "/gradio_api/upload?upload_id=x1"),
        ("GET", f"/gradio_api/file={ALICE_FILE}"),
        ("GET", "/gradio_api/upload_progress?upload_id=x1"),
    ],
)
async def test_a_registry_that_does_not_answer_fails_closed(
    unreachable: UploadRegistry, method: str, path: str
) -> None:
    inner = FakeGradio()
    async with client_for(inner, unreachable) as http:
        response = await http.request(method, path, headers=as_user("alice"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "/tmp/" not in response.text
    if "file=" in path or "progress" in path or "upload_id" in path:
        assert inner.seen == []


# --- event inputs ------------------------------------------------------------------------


class RecordingGradio:
    """An event route: keeps every message its ``receive`` gave, answers 200."""

    def __init__(self) -> None:
        self.calls = 0
        self.messages: list[Message] = []

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ran"})


@dataclass
class Files:
    alice: Path  # recorded for alice
    bob: Path  # recorded for bob
    nobodys: Path  # on disk, recorded for nobody (an output, an example)


@pytest.fixture
async def files(tmp_path: Path, registry: InMemoryUploadRegistry) -> Files:
    made = []
    for name in ("alice", "bob", "nobody"):
        path = tmp_path / "gradio" / f"{name:0>64}" / f"{name}.txt"
        path.parent.mkdir(parents=True)
        path.write_text(name)
        made.append(path)
    await registry.record("alice", [file_key(str(made[0])) or ""])
    await registry.record("bob", [file_key(str(made[1])) or ""])
    return Files(*made)


def file_data(path: object, **extra: object) -> dict[str, object]:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}, **extra}


def event(*data: object, session_hash: str | None = None) -> bytes:
    """The body of an event as the browser sends it (``session_hash`` last, where a
    browser puts it). Without a session hash, as an API client may send it: such a body
    suits every user, where a hash belongs to the first user who sends it."""
    body: dict[str, object] = {"data": list(data), "event_data": None, "fn_index": 5}
    if session_hash is not None:
        body["session_hash"] = session_hash
    return json.dumps(body).encode()


NOTEPAD_EVENT = event("A note of a few words.", None, session_hash="k3j5h2l1m9x")

# One request path per event route (EVENT_ROUTES), at the home page's mount and another.
EVENT_PATHS = [
    "/gradio_api/run/predict",
    "/gradio_api/run/predict/",
    "/gradio_api/api/file_echo",
    "/gradio_api/api/file_echo/",
    "/gradio_api/call/file_echo",
    "/gradio_api/call/file_echo/",
    "/gradio_api/call/v2/file_echo",
    "/gradio_api/call/v2/file_echo/",
    "/gradio_api/queue/join",
    "/gradio_api/queue/join%0A",  # Starlette's "$" matches before a final newline
    "/gradio_api/stream/0123abcd",
    "/gradio_api/component_server",
    "/gradio_api/component_server/",
    "/tools/gradio_api/run/predict",
    "/tools/gradio_api/queue/join",
]


async def post_event(
    registry: UploadRegistry,
    body: bytes,
    *,
    user: str = "bob",
    path: str = "/gradio_api/run/predict",
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, RecordingGradio]:
    inner = RecordingGradio()
    async with client_for(inner, registry) as http:
        response = await http.post(
            path,
            content=body,
            headers={**as_user(user), "content-type": "application/json", **(headers or {})},
        )
    return response, inner


def test_the_event_routes_are_gradios_in_every_spelling() -> None:
    """The one pattern that finds an event route agrees with Starlette's own routes."""
    pattern = any_route_pattern(EVENT_ROUTES)
    routes = [Route(template, _never_called, methods=["POST"]) for template in EVENT_ROUTES]
    candidates = [
        *(p.replace("%0A", "\n") for p in EVENT_PATHS if p.startswith("/gradio_api/")),
        "/gradio_api/run/a/b",
        "/gradio_api/run/",
        "/gradio_api/run",
        "/gradio_api/queue/join/",
        "/gradio_api/queue/joined",
        "/gradio_api/queue/join\n\n",
        "/gradio_api/queue/data",
        "/gradio_api/stream/x/close",
        "/gradio_api/call/v2/x/y",
        "/gradio_api/upload",
        "/gradio_api/file=/tmp/x",
        "/gradio_api/component_serverx",
    ]
    for path in candidates:
        scope = {"type": "http", "path": path, "method": "POST"}
        expected = any(route.matches(scope)[0] is Match.FULL for route in routes)
        assert bool(pattern.match(path)) is expected, path


def test_a_body_left_unparsed_is_one_json_reads_as_utf_8() -> None:
    """The pre-check may skip parsing only a body that json.loads decodes as UTF-8, where
    a key "path" is the bytes '"path"' or holds a \\u escape."""
    first_bytes = [b"\x00", b"\x01", b"{", b'"', b"\xef", b"\xbb", b"\xbf", b"\xfe", b"\xff"]
    for length in range(5):
        for start in itertools.product(first_bytes, repeat=length):
            for tail in (b"", b'["no file"]'):
                body = b"".join(start) + tail
                if not _may_name_a_file(body):
                    assert json.detect_encoding(body) in ("utf-8", "utf-8-sig"), body
    assert _may_name_a_file(b'{"p\\u0061th": 1}')
    assert not _may_name_a_file(b'{"data": ["paths", "a\\nb"]}')


@pytest.mark.parametrize("path", EVENT_PATHS)
async def test_another_users_upload_as_an_input_is_not_found(
    registry: InMemoryUploadRegistry,
    files: Files,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    response, inner = await post_event(registry, event(file_data(files.alice)), path=path)
    assert response.status_code == 404
    assert response.json() == {"detail": NOT_FOUND_DETAIL}
    assert inner.calls == 0
    [record] = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert (vars(record)["event"], vars(record)["reason"]) == ("access.denied", REASON_NOT_OWNER)
    mine, inner = await post_event(registry, event(file_data(files.alice)), user="alice", path=path)
    assert (mine.status_code, inner.calls) == (200, 1)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda f: file_data(f.bob), id="own-upload"),
        pytest.param(lambda f: file_data(f.nobodys), id="gradios-own-file"),
        pytest.param(lambda f: [file_data(f.bob), file_data(f.nobodys)], id="several"),
        pytest.param(lambda f: file_data("/tmp/no-such-dir/alice.txt"), id="missing-file"),
        pytest.param(lambda f: 'a text that mentions "path" and /etc/passwd', id="text"),
    ],
)
async def test_an_event_with_files_of_ones_own_runs(
    registry: InMemoryUploadRegistry, files: Files, data: Callable[[Files], object]
) -> None:
    body = event(data(files))
    response, inner = await post_event(registry, body)
    assert (response.status_code, inner.calls) == (200, 1)
    assert inner.body == body


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


# Ways to name alice's file inside an event: each builds the event's body from the file.
SPELLINGS: list[tuple[str, Callable[[Path], bytes]]] = [
    ("dot-dot", lambda p: event(file_data(f"{p.parent}/../{p.parent.name}/{p.name}"))),
    ("dot-segments", lambda p: event(file_data(str(p).replace("/", "/./")))),
    ("double-slashes", lambda p: event(file_data(str(p).replace("/", "//")))),
    ("proc-self-root", lambda p: event(file_data(f"/proc/self/root{p}"))),
    ("relative", lambda p: event(file_data(_relative(p)))),
    ("without-meta", lambda p: event({"path": str(p)})),
    ("gallery", lambda p: event([{"image": file_data(p), "caption": None}])),
    ("chat-history", lambda p: event([{"role": "user", "content": [{"file": file_data(p)}]}])),
    ("deep", lambda p: event(json.loads("[" * 200 + json.dumps(file_data(p)) + "]" * 200))),
    ("event-data", lambda p: json.dumps({"data": [], "event_data": file_data(p)}).encode()),
    ("call-v2-parameter", lambda p: json.dumps({"path": str(p)}).encode()),
    ("after-own-file", lambda p: event(file_data(p.parent.parent / "x"), file_data(p))),
    ("url", lambda p: event(file_data("/tmp/x", url=f"/gradio_api/file={p}"))),
    ("url-absolute", lambda p: event(file_data("/tmp/x", url=f"http://h/gradio_api/file={p}"))),
    (
        "url-encoded",
        lambda p: event(file_data("/tmp/x", url="/gradio_api/file=" + quote(str(p), safe=""))),
    ),
    ("url-old-route", lambda p: event(file_data("/tmp/x", url=f"/gradio_api/file/{p}"))),
    ("url-other-page", lambda p: event(file_data("/tmp/x", url=f"/tools/gradio_api/file={p}"))),
    ("url-newline", lambda p: event(file_data("/tmp/x", url=f"/gradio_api/file={p}%0A"))),
    ("path-is-a-url", lambda p: event(file_data(f"http://prodio.test/gradio_api/file={p}"))),
    ("escaped-key", lambda p: event(file_data(p)).replace(b'"path"', b'"\\u0070ath"')),
    ("escaped-value", lambda p: event(file_data(p)).replace(b"/", b"\\u002f")),
    ("utf-16", lambda p: event(file_data(p)).decode().encode("utf-16")),
    ("utf-32-le", lambda p: event(file_data(p)).decode().encode("utf-32-le")),
    ("utf-8-bom", lambda p: b"\xef\xbb\xbf" + event(file_data(p))),
    ("duplicate-keys", lambda p: f'{{"data": [{{"path": "/tmp/x", "path": "{p}"}}]}}'.encode()),
]


@pytest.mark.parametrize("spell", [pytest.param(spell, id=name) for name, spell in SPELLINGS])
async def test_no_spelling_hands_another_users_upload_to_a_handler(
    registry: InMemoryUploadRegistry, files: Files, spell: Callable[[Path], bytes]
) -> None:
    body = spell(files.alice)
    response, inner = await post_event(registry, body)
    assert response.status_code == 404
    assert inner.calls == 0
    mine, inner = await post_event(registry, body, user="alice")
    assert (mine.status_code, inner.calls, inner.body) == (200, 1, body)


async def call_once(app: ASGIApp, scope: Scope, body: bytes) -> list[Message]:
    """Run ``app`` on one request with ``body`` in one message; what it sent."""
    sent: list[Message] = []

    async def one_message() -> Message:
        return {"type": "http.request", "body": body}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, one_message, send)
    return sent


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(NOTEPAD_EVENT, id="notepad"),
        pytest.param(b'{"data": ["no closing brace", \xff\xfe', id="not-json"),
        pytest.param(b"", id="empty"),
        # A browser's JSON.stringify writes any character as UTF-8, never as \u.
        pytest.param(
            json.dumps({"data": ["caf\u00e9 \U0001f600"]}, ensure_ascii=False).encode(), id="utf-8"
        ),
    ],
)
async def test_an_event_without_files_passes_byte_identical_and_unparsed(
    registry: InMemoryUploadRegistry, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    parsed: list[object] = []
    real_loads = json.loads

    def spy(document: str | bytes, **kwargs: Any) -> Any:
        parsed.append(document)
        return real_loads(document, **kwargs)

    inner = RecordingGradio()
    middleware = UploadOwnershipMiddleware(inner, registry=registry)
    scope = http_scope("/gradio_api/run/predict", user="bob", method="POST")
    with monkeypatch.context() as patched:
        patched.setattr(json, "loads", spy)
        sent = await call_once(middleware, scope, body)
    assert parsed == []
    assert (inner.calls, inner.body) == (1, body)
    assert sent[0]["status"] == 200


async def test_a_body_in_pieces_reaches_the_app_whole_then_the_clients_messages(
    registry: InMemoryUploadRegistry, files: Files
) -> None:
    body = event(file_data(files.bob))
    messages: list[Message] = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": body[10:], "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive_next() -> Message:
        return messages.pop(0)

    async def read_on(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())  # after the body: the client's disconnect
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    seen: list[Message] = []

    async def send(message: Message) -> None:
        pass

    middleware = UploadOwnershipMiddleware(read_on, registry=registry)
    await middleware(
        http_scope("/gradio_api/queue/join", user="bob", method="POST"), receive_next, send
    )
    assert seen == [
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_a_client_gone_before_the_end_of_its_body_runs_nothing(
    registry: InMemoryUploadRegistry,
) -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"data": [', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive_next() -> Message:
        return messages.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    inner = RecordingGradio()
    middleware = UploadOwnershipMiddleware(inner, registry=registry)
    await middleware(
        http_scope("/gradio_api/queue/join", user="bob", method="POST"), receive_next, send
    )
    assert (inner.calls, sent) == (0, [])


async def test_other_methods_and_routes_are_not_read(
    registry: InMemoryUploadRegistry, files: Files
) -> None:
    """A GET of an event route (405 from Gradio), /cancel and /reset carry no event data."""
    body = event(file_data(files.alice))
    for method, path in [
        ("GET", "/gradio_api/queue/join"),
        ("PUT", "/gradio_api/run/predict"),
        ("POST", "/gradio_api/cancel"),
        ("POST", "/gradio_api/queue/data"),
        ("POST", "/api/session"),
    ]:
        inner = RecordingGradio()
        async with client_for(inner, registry) as http:
            response = await http.request(method, path, content=body, headers=as_user("bob"))
        assert (response.status_code, inner.calls) == (200, 1), path


async def send_multipart(
    registry: InMemoryUploadRegistry, files: Files, path: str
) -> tuple[list[bytes], RecordingGradio]:
    """bob POSTs a multipart body naming alice's upload to ``path``, in three pieces;
    returns the pieces and what Gradio received."""
    pieces = [b"--b\r\n", str(files.alice).encode(), b"\r\n--b--\r\n"]
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]

    async def receive_next() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        pass

    inner = RecordingGradio()
    middleware = UploadOwnershipMiddleware(inner, registry=registry)
    scope = http_scope(path, user="bob", method="POST")
    scope["headers"] = [(b"content-type", b"multipart/form-data; boundary=b")]
    await middleware(scope, receive_next, send)
    return pieces, inner


async def test_a_multipart_body_names_no_input_file(
    registry: InMemoryUploadRegistry, files: Files
) -> None:
    """component_server reads a multipart body as form fields and file bytes (the image
    editor's layers), never as FileData: a path in it is no input file. (The body is read
    whole for its session hash: tests/middleware/test_gradio_sessions.py.)"""
    pieces, inner = await send_multipart(registry, files, "/gradio_api/component_server")
    assert (inner.calls, inner.body) == (1, b"".join(pieces))


async def test_a_multipart_body_elsewhere_streams_on_unread(
    registry: InMemoryUploadRegistry, files: Files
) -> None:
    """The other event routes never read a multipart body (FastAPI refuses it: 422): it
    streams on to Gradio, piece by piece."""
    pieces, inner = await send_multipart(registry, files, "/gradio_api/queue/join")
    assert [m["body"] for m in inner.messages] == pieces


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_a_body_over_the_limit_gets_413(
    registry: InMemoryUploadRegistry, declared: bool
) -> None:
    limit = 1000
    inner = RecordingGradio()
    app = signed_in(UploadOwnershipMiddleware(inner, registry=registry, max_event_body=limit))

    async def pieces(size: int) -> AsyncIterator[bytes]:
        yield b" " * (size - 2)
        yield b"{}"

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        for size, status in ((limit, 200), (limit + 1, 413)):
            content: bytes | AsyncIterator[bytes] = (
                b" " * (size - 2) + b"{}" if declared else pieces(size)
            )
            response = await http.post(
                "/gradio_api/queue/join", content=content, headers=as_user("bob")
            )
            assert "content-length" in response.request.headers or not declared
            assert response.status_code == status, size
            if status == 413:
                assert response.json() == {"detail": TOO_LARGE_DETAIL}
    assert inner.calls == 1


async def test_too_many_file_names_get_413(registry: InMemoryUploadRegistry, files: Files) -> None:
    names = [file_data(f"/tmp/missing/{n}") for n in range(MAX_EVENT_FILES)]
    response, inner = await post_event(registry, event(*names))
    assert (response.status_code, inner.calls) == (200, 1)
    response, inner = await post_event(registry, event(*names, file_data(files.bob)))
    assert (response.status_code, inner.calls) == (413, 0)
    assert response.json() == {"detail": TOO_MANY_FILES_DETAIL}


async def test_a_body_that_is_not_json_is_left_to_gradio(registry: InMemoryUploadRegistry) -> None:
    """Gradio reads it with the same parser and refuses it (a 4xx, not a 500)."""
    body = b'{"data": [{"path": "/tmp/x", '
    response, inner = await post_event(registry, body)
    assert (response.status_code, inner.calls, inner.body) == (200, 1, body)


async def test_json_nested_deeper_than_the_parser_goes_gets_400(
    registry: InMemoryUploadRegistry,
) -> None:
    body = b'{"path": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response, inner = await post_event(registry, body)
    assert (response.status_code, inner.calls) == (400, 0)
    assert response.json() == {"detail": INVALID_JSON_DETAIL}


async def test_an_event_with_files_fails_closed_when_the_registry_is_down(
    unreachable: UploadRegistry, tmp_path: Path
) -> None:
    on_disk = tmp_path / "a.txt"
    on_disk.write_text("a")
    response, inner = await post_event(unreachable, event(file_data(on_disk)))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert inner.calls == 0
    # An event that names no file (or no file on disk) and no session never asks the
    # registry; one with a session hash does (tests/middleware/test_gradio_sessions.py).
    for body in (event("A note.", None), event(file_data(tmp_path / "missing.txt"))):
        response, inner = await post_event(unreachable, body)
        assert (response.status_code, inner.calls) == (200, 1)
    response, inner = await post_event(unreachable, NOTEPAD_EVENT)
    assert (response.status_code, inner.calls) == (503, 0)
