"""FastAPI's built-in OpenTelemetry bridge: on when the operator asks for it, off otherwise.

FastAPI (0.165) asks OpenTelemetry's three global providers on every request whether one
was configured, and records spans, metrics and exception logs when one was. With no
OpenTelemetry SDK set up the asking is all it does, at ~10 µs a request (``bench/``), a
twentieth of a small request's CPU, paid twice by Gradio's requests (the Gradio app is a
FastAPI app of its own). ``PRODIO_OPENTELEMETRY=true`` keeps the bridge on in both apps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prodio.config import Settings

if TYPE_CHECKING:  # the CLI's users commands import this module without the web stack
    from fastapi.telemetry import TelemetryConfig


def fastapi_telemetry(settings: Settings) -> TelemetryConfig:
    """The ``telemetry=`` argument of every FastAPI app prodio builds."""
    if settings.opentelemetry:
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def unheeded_variables(settings: Settings, environ: Mapping[str, str] = os.environ) -> list[str]:
    """OpenTelemetry variables that are set while the bridge is off: an operator who set
    them expects traces, and would otherwise get none without a word."""
    if settings.opentelemetry:
        return []
    return sorted(
        name for name in environ if name.startswith(("OTEL_", "FASTAPI_OTEL_")) and environ[name]
    )
