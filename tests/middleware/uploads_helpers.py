"""What the tests of UploadOwnershipMiddleware (test_uploads.py, test_gradio_sessions.py) put
around it: the user the auth middleware would have set, and a streaming answer."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def signed_in(app: ASGIApp) -> ASGIApp:
    """What the auth middleware leaves: the user (from a test header) in the scope state."""

    async def with_user(scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", ()):
            if name == b"x-test-user":
                scope.setdefault("state", {})["user"] = value.decode()
        await app(scope, receive, send)

    return with_user


class TwoChunkStream:
    """Stands for a streaming route (Server-Sent Events): sends ``data: 1``, then ``data: 2``
    only once the first has reached the client. A middleware that held the answer back until
    it was whole would wait for ever: the stream gives up after 2 s and the test fails."""

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self._first_delivered = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        with anyio.fail_after(2):
            await self._first_delivered.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    async def serve(self, app: ASGIApp, scope: Scope) -> list[Message]:
        """The messages the client is sent when ``app``, in front of this stream, answers a
        request of ``scope`` with an empty body."""
        self.delivered = []
        self._first_delivered = anyio.Event()
        await app(scope, _empty_body, self._send)
        return self.delivered

    async def _send(self, message: Message) -> None:
        self.delivered.append(message)
        if message.get("body") == b"data: 1\n\n":
            self._first_delivered.set()


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b""}
