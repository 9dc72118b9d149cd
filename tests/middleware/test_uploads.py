"""UploadOwnershipMiddleware on a small ASGI app that answers like Gradio's routes.

The whole app with real Gradio is in tests/test_security_uploads.py; here each behaviour of
the middleware is pinned on its own: what it holds back, what it records, what it refuses.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.middleware.uploads import (
    MAX_UPLOAD_ANSWER_BYTES,
    NOT_FOUND_DETAIL,
    UPLOAD_NOT_FOUND,
    UploadOwnershipMiddleware,
)
from prodio.uploads import (
    InMemoryUploadRegistry,
    Ownership,
    RedisUploadRegistry,
    file_key,
    progress_key,
)
from prodio.uploads.base import UploadRegistry
from tests.redis_server import free_port

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


def signed_in(app: ASGIApp) -> ASGIApp:
    """What the auth middleware leaves: the user (from a test header) in the scope state."""

    async def with_user(scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", ()):
            if name == b"x-test-user":
                scope.setdefault("state", {})["user"] = value.decode()
        await app(scope, receive, send)

    return with_user


@pytest.fixture
def registry() -> InMemoryUploadRegistry:
    return InMemoryUploadRegistry(60)


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
    for path in ("/gradio_api/upload_files", "/gradio_api/upload/x", "/x/gradio_api/upload"):
        await client.post(path, headers=as_user("alice"))
    assert len(registry) == 0


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


async def test_only_the_mounted_gradio_is_checked(registry: InMemoryUploadRegistry) -> None:
    await registry.record("alice", [file_key(ALICE_FILE) or ""])
    async with client_for(FakeGradio(), registry, mount_path="/app") as http:
        inside = await http.get(f"/app/gradio_api/file={ALICE_FILE}", headers=as_user("bob"))
        outside = await http.get(f"/gradio_api/file={ALICE_FILE}", headers=as_user("bob"))
    assert inside.status_code == 404
    assert outside.status_code == 200  # not Gradio's route at this mount path


async def test_other_answers_are_never_held_back(registry: InMemoryUploadRegistry) -> None:
    """A Server-Sent Events stream must reach the client chunk by chunk."""
    first_delivered = anyio.Event()

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        with anyio.fail_after(2):
            await first_delivered.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    delivered: list[Message] = []

    async def send(message: Message) -> None:
        delivered.append(message)
        if message.get("body") == b"data: 1\n\n":
            first_delivered.set()

    middleware = UploadOwnershipMiddleware(streaming, registry=registry)
    for path in ("/gradio_api/queue/data", "/gradio_api/upload_progress"):
        delivered.clear()
        first_delivered = anyio.Event()
        scope = http_scope(path, user="alice")
        await middleware(scope, receive, send)
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


@pytest.fixture
async def unreachable() -> AsyncIterator[UploadRegistry]:
    """A Redis registry on a port where nothing listens: every call fails for real."""
    client = Redis(
        port=free_port(),
        socket_connect_timeout=0.5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    registry = RedisUploadRegistry(client, 60, owns_client=True)
    yield registry
    await registry.aclose()


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
