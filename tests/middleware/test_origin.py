"""OriginCheckMiddleware on a small ASGI app: who may change state, and CORS headers."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from prodio.middleware.origin import REFUSED_DETAIL, STATE_CHANGING_METHODS, OriginCheckMiddleware

pytestmark = pytest.mark.anyio

OURS = "http://testserver"
SAME_ORIGIN = {"origin": OURS, "sec-fetch-site": "same-origin"}
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-credentials", b"true"),
    (b"Access-Control-Expose-Headers", b"x-secret"),
    (b"access-control-max-age", b"600"),
]


class Recorder:
    """The protected app: records what reached it and answers with CORS headers."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.reached.append(("WEBSOCKET", scope["path"]))
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        self.reached.append((scope["method"], scope["path"]))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), *CORS_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": b'{"done": true}'})


@pytest.fixture
def inner() -> Recorder:
    return Recorder()


async def request(
    inner: Recorder, method: str, headers: dict[str, str], path: str = "/gradio_api/queue/join"
) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=OriginCheckMiddleware(inner)), base_url=OURS
    ) as client:
        return await client.request(method, path, headers=headers, content=b"{}")


@pytest.mark.parametrize("method", sorted(STATE_CHANGING_METHODS))
@pytest.mark.parametrize(
    "headers",
    [
        SAME_ORIGIN,
        {"origin": OURS},
        {"origin": "http://TESTSERVER:80"},
        {"sec-fetch-site": "same-origin"},
    ],
)
async def test_same_origin_changes_pass(
    inner: Recorder, method: str, headers: dict[str, str]
) -> None:
    response = await request(inner, method, headers)
    assert response.status_code == 200
    assert inner.reached == [(method, "/gradio_api/queue/join")]


@pytest.mark.parametrize("method", sorted(STATE_CHANGING_METHODS))
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"origin": "null"},
        {"origin": "http://evil.example"},
        {"origin": "https://testserver"},
        {"origin": "http://testserver:8080"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "testserver"},
        {"origin": "http://testserver:99999"},
        {"origin": ""},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"sec-fetch-site": "none"},
        {"sec-fetch-site": "cross-site", "origin": OURS},
        {"sec-fetch-site": "same-origin", "origin": "http://evil.example"},
    ],
)
async def test_other_changes_are_refused(
    inner: Recorder, method: str, headers: dict[str, str]
) -> None:
    response = await request(inner, method, headers)
    assert response.status_code == 403
    assert response.json() == {"detail": REFUSED_DETAIL}
    assert inner.reached == []
    assert response.headers["cache-control"] == "no-store"


async def test_a_refused_navigation_gets_a_page(inner: Recorder) -> None:
    headers = {"origin": "http://evil.example", "sec-fetch-mode": "navigate"}
    response = await request(inner, "POST", headers, path="/logout")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "did not come from a page of this site" in response.text
    assert "evil.example" not in response.text
    assert inner.reached == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("headers", [{}, {"origin": "http://evil.example"}, {"origin": "null"}])
async def test_safe_methods_pass_from_anywhere(
    inner: Recorder, method: str, headers: dict[str, str]
) -> None:
    response = await request(inner, method, headers)
    assert response.status_code == 200
    assert inner.reached == [(method, "/gradio_api/queue/join")]


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://evil.example", "sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "cross-site"},
    ],
)
@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
async def test_no_cors_header_answers_another_origin(
    inner: Recorder, method: str, headers: dict[str, str]
) -> None:
    response = await request(inner, method, {**headers, "access-control-request-method": "POST"})
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("access-control-")]
    assert response.json() == {"done": True}


async def test_a_read_without_origin_passes_untouched(inner: Recorder) -> None:
    # Browsers send Origin with every cross-origin read, so CORS headers on the answer to a
    # request without one cannot let another site read anything: the fast path leaves the
    # response as the app made it.
    response = await request(inner, "GET", {})
    assert response.status_code == 200
    assert inner.reached == [("GET", "/gradio_api/queue/join")]
    assert response.headers["access-control-allow-origin"] == "*"


async def test_same_origin_responses_are_left_alone(inner: Recorder) -> None:
    response = await request(inner, "GET", SAME_ORIGIN)
    assert response.headers["access-control-allow-origin"] == "*"


async def test_a_refusal_is_logged_with_the_origin_escaped(
    inner: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async def as_alice(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {}).update(user="alice", request_id="r-1")
        await OriginCheckMiddleware(inner)(scope, receive, send)

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    forged = "http://evil.example\nINFO fake line" + "x" * 500
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("testserver", 80),
        "path": "/gradio_api/upload",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"origin", forged.encode("latin-1"))],
    }
    with caplog.at_level(logging.WARNING, logger="prodio.audit"):
        await as_alice(scope, receive, send)
    assert messages[0]["status"] == 403
    [record] = caplog.records
    fields: dict[str, Any] = vars(record)
    assert fields["event"] == "origin.rejected"
    assert fields["status"] == 403
    assert fields["method"] == "POST"
    assert fields["path"] == "/gradio_api/upload"
    assert fields["user"] == "alice"
    assert fields["request_id"] == "r-1"
    assert fields["origin"].startswith("http://evil.example\\x0aINFO fake line")
    assert "\n" not in fields["origin"]
    assert len(fields["origin"]) < 260


async def websocket_handshake(
    inner: Recorder, headers: list[tuple[bytes, bytes]], scheme: str = "ws"
) -> Message:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    scope: Scope = {
        "type": "websocket",
        "scheme": scheme,
        "server": ("testserver", 80 if scheme == "ws" else 443),
        "path": "/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
    }
    await OriginCheckMiddleware(inner)(scope, receive, send)
    return sent[0]


@pytest.mark.parametrize(
    "headers", [[(b"origin", b"http://evil.example")], [(b"origin", b"null")], []]
)
async def test_a_websocket_from_another_origin_is_closed(
    inner: Recorder, headers: list[tuple[bytes, bytes]]
) -> None:
    first = await websocket_handshake(inner, headers)
    assert first == {"type": "websocket.close", "code": 1008}
    assert inner.reached == []


@pytest.mark.parametrize(
    ("scheme", "origin"), [("ws", b"http://testserver"), ("wss", b"https://testserver")]
)
async def test_a_websocket_from_our_pages_is_accepted(
    inner: Recorder, scheme: str, origin: bytes
) -> None:
    first = await websocket_handshake(inner, [(b"origin", origin)], scheme)
    assert first == {"type": "websocket.accept"}
    assert inner.reached == [("WEBSOCKET", "/ws")]


async def test_a_secure_socket_is_not_the_plain_page_origin(inner: Recorder) -> None:
    first = await websocket_handshake(inner, [(b"origin", b"http://testserver")], "wss")
    assert first == {"type": "websocket.close", "code": 1008}


async def test_other_scopes_pass(inner: Recorder) -> None:
    reached: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing should be sent")

    await OriginCheckMiddleware(lifespan_app)({"type": "lifespan"}, receive, send)
    assert reached == ["lifespan"]
