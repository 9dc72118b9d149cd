"""The request log: one line per request with the promised fields, and no secrets."""

from __future__ import annotations

import io
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from prodio.logs import REQUEST_LOGGER, DeferredFlushHandler, TextFormatter
from prodio.middleware.logging import RequestLoggingMiddleware, SessionTagger

SECRET = b"s" * 32


async def ok(request: Request) -> PlainTextResponse:
    request.state.user = "alice"
    request.state.session_id = "the-raw-session-id"
    return PlainTextResponse("ok")


async def crash(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom with secret-detail")


async def stream(request: Request) -> StreamingResponse:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def crash_mid_stream(request: Request) -> StreamingResponse:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"data: 1\n\n"
        raise RuntimeError("stream broke")

    return StreamingResponse(chunks(), media_type="text/event-stream")


def _client() -> httpx.AsyncClient:
    # Installed as the app installs it: inside Starlette's ServerErrorMiddleware.
    app = Starlette(
        routes=[
            Route("/ok", ok),
            Route("/crash", crash),
            Route("/stream", stream),
            Route("/crash-stream", crash_mid_stream),
            Mount("/mounted", routes=[Route("/inner", ok)]),
            Route("/{p:path}", ok),
        ],
        middleware=[Middleware(RequestLoggingMiddleware, tagger=SessionTagger(SECRET))],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "prodio.request"]


@pytest.mark.anyio
async def test_one_line_with_every_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client:
        response = await client.get("/ok")
    [record] = _records(caplog)
    fields = vars(record)
    assert fields["method"] == "GET"
    assert fields["path"] == "/ok"
    assert fields["status"] == 200
    assert fields["user"] == "alice"
    assert fields["session"] == SessionTagger(SECRET).tag("the-raw-session-id")
    assert fields["session"] != "the-raw-session-id"
    assert len(fields["session"]) == 12
    assert isinstance(fields["duration_ms"], float)
    assert fields["request_id"] == response.headers["x-request-id"]


@pytest.mark.anyio
async def test_the_line_is_complete_when_it_bypasses_log_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As ``prodio serve`` runs: prodio's handler is the only one, so the line skips
    LogRecord (``logs.write_request_line``). pytest hangs handlers of its own on the root
    logger, so the request logger gets prodio's handler here and stops propagating."""
    request_logger = logging.getLogger(REQUEST_LOGGER)
    handler = DeferredFlushHandler(io.StringIO(), flush_interval=60)
    handler.setFormatter(TextFormatter())
    monkeypatch.setattr(request_logger, "propagate", False)
    monkeypatch.setattr(request_logger, "handlers", [handler])
    monkeypatch.setattr(request_logger, "level", logging.INFO)

    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("the line went through a LogRecord")

    monkeypatch.setattr(request_logger, "makeRecord", no_record)
    try:
        async with _client() as client:
            response = await client.get("/ok", headers={"x-request-id": "abc-123"})
        line = handler.stream.getvalue()
    finally:
        handler.close()
    tag = SessionTagger(SECRET).tag("the-raw-session-id")
    assert response.status_code == 200
    assert line.count("\n") == 1
    assert (
        " INFO    prodio.request: request request_id=abc-123 method=GET path=/ok status=200 "
        in line
    )
    assert f" user=alice session={tag} client=127.0.0.1\n" in line
    assert "the-raw-session-id" not in line


@pytest.mark.anyio
async def test_incoming_request_id_is_kept_when_well_formed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client:
        kept = await client.get("/ok", headers={"x-request-id": "abc-123"})
        replaced = await client.get("/ok", headers={"x-request-id": "bad id\twith\nstuff"})
    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id\twith\nstuff"
    assert len(replaced.headers["x-request-id"]) == 32


@pytest.mark.anyio
async def test_control_characters_in_path_are_escaped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client:
        await client.get("/a%0Afake%20line%1B[31m")
    [record] = _records(caplog)
    assert "\n" not in vars(record)["path"]
    assert "\x1b" not in vars(record)["path"]
    assert "\\x0a" in vars(record)["path"]


@pytest.mark.anyio
async def test_crash_gives_generic_500_and_logs_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client:
        response = await client.get("/crash", headers={"accept": "text/html"})
    assert response.status_code == 500
    assert "secret-detail" not in response.text
    assert "Traceback" not in response.text
    request_id = response.headers["x-request-id"]
    assert request_id in response.text
    [record] = _records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "secret-detail" in str(record.exc_info[1])
    assert vars(record)["request_id"] == request_id
    assert vars(record)["status"] == 500


@pytest.mark.anyio
async def test_json_clients_get_json_500() -> None:
    async with _client() as client:
        response = await client.get("/crash", headers={"accept": "application/json"})
    assert response.status_code == 500
    assert set(response.json()) == {"detail"}


@pytest.mark.anyio
async def test_streaming_bodies_pass_through_unbuffered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client, client.stream("GET", "/stream") as response:
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"
    assert response.headers["x-request-id"]


@pytest.mark.anyio
async def test_crash_after_response_started_is_logged_not_resent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client:
        response = await client.get("/crash-stream")
    assert response.status_code == 200
    [record] = _records(caplog)
    assert record.levelno == logging.ERROR


@pytest.mark.anyio
async def test_paths_of_mounted_apps_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client() as client:
        await client.get("/mounted/inner")
    [record] = _records(caplog)
    assert vars(record)["path"] == "/mounted/inner"
