"""FastAPI's OpenTelemetry bridge: off unless PRODIO_OPENTELEMETRY says on, in both apps."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, Tracer, TracerProvider

from prodio.cli import prepare_serve
from tests.apptest import app_with_users, make_settings, signed_in

FETCH = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}


class RecordingTracer(NoOpTracer):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Span:
        self.names.append(name)
        return super().start_span(name, *args, **kwargs)


class RecordingProvider(TracerProvider):
    """What an OpenTelemetry SDK set up by the operator looks like to FastAPI: a global
    provider that is not the API's placeholder."""

    def __init__(self) -> None:
        self.span_names: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return RecordingTracer(self.span_names)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> RecordingProvider:
    recording = RecordingProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", recording)
    return recording


async def _spans(tmp_path: Path, provider: RecordingProvider, **overrides: Any) -> list[str]:
    async with app_with_users(tmp_path, **overrides) as env, signed_in(env, "alice") as alice:
        provider.span_names.clear()
        assert (await env.client.get("/healthz")).status_code == 200
        spans_of_prodio = len(provider.span_names)
        # Served by the Gradio app, itself a FastAPI app.
        assert (await alice.get("/gradio_api/info", headers=FETCH)).status_code == 200
        return [*provider.span_names[:spans_of_prodio], "|", *provider.span_names[spans_of_prodio:]]


@pytest.mark.anyio
async def test_no_spans_by_default_even_with_a_configured_provider(
    tmp_path: Path, provider: RecordingProvider
) -> None:
    assert await _spans(tmp_path, provider) == ["|"]


@pytest.mark.anyio
async def test_spans_for_prodio_and_gradio_routes_when_asked_for(
    tmp_path: Path, provider: RecordingProvider
) -> None:
    spans = await _spans(tmp_path, provider, opentelemetry=True)
    prodio_spans, gradio_spans = _split(spans)
    assert prodio_spans[:1] == ["GET"], spans
    assert gradio_spans[:1] == ["GET"], spans


def _split(spans: Sequence[str]) -> tuple[list[str], list[str]]:
    at = spans.index("|")
    return list(spans[:at]), list(spans[at + 1 :])


@pytest.mark.parametrize(
    ("variables", "opentelemetry", "warned"),
    [
        ({"OTEL_SERVICE_NAME": "shop", "OTEL_TRACES_EXPORTER": "otlp"}, False, True),
        ({"FASTAPI_OTEL_AUTO_CONFIGURE": "true"}, False, True),
        ({"OTEL_SERVICE_NAME": "shop"}, True, False),
        ({}, False, False),
        ({"OTEL_SERVICE_NAME": ""}, False, False),
    ],
)
def test_serve_warns_when_opentelemetry_variables_would_be_ignored(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    opentelemetry: bool,
    warned: bool,
) -> None:
    for name in [
        name for name in __import__("os").environ if name.startswith(("OTEL_", "FASTAPI_OTEL_"))
    ]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    stderr = io.StringIO()
    prepare_serve(make_settings(tmp_path, opentelemetry=opentelemetry), stderr=stderr)
    warning = [line for line in stderr.getvalue().splitlines() if "OpenTelemetry" in line]
    assert bool(warning) is warned
    if warned:
        assert "PRODIO_OPENTELEMETRY=true" in warning[0]
        assert all(name in warning[0] for name in variables)
