"""Logging set-up: one line per event, plain text or JSON lines, on standard error.

Kept apart from ``middleware/logging.py``: this configures where log records go for the
whole process (CLI included); the middleware decides what one request logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from prodio.config import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    # uvicorn's terminal colouring of its own messages: noise in a log file.
    | {"message", "asctime", "color_message"}
)
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def escape_control(text: str) -> str:
    """Make user-supplied text safe for one log line (no forged lines, no terminal codes)."""
    # Most text has nothing to escape, and a regex search is much cheaper than translate.
    if _CONTROL_CHARACTER.search(text) is None:
        return text
    return text.translate(_CONTROL_ESCAPES)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}


class _SecondCache:
    """The formatted second of a timestamp, made once per second: one log line per request
    made strftime a noticeable part of a request's cost."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.second = -1
        self.text = ""

    def format(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.text = time.strftime(self.pattern, time.gmtime(second))
            self.second = second
        return self.text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": f"{self._seconds.format(record.created)}.{int(record.msecs):03d}+00:00",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    # UTC, like the JSON lines: logs from hosts in different zones line up.
    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache(self.default_time_format)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{self._seconds.format(record.created)}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: "
            f"{escape_control(record.getMessage())}"
        )
        extras = " ".join(
            f"{key}={escape_control(str(value))}" for key, value in _fields(record).items()
        )
        text = f"{line} {extras}" if extras else line
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # No formatter of ours prints them, and each record would look them up (the current
    # thread, the process, multiprocessing's process name) on every request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's own access log would repeat ours without the user, session or request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Gradio and httpx chatter at INFO about things an operator does not act on.
    for name in ("httpx", "gradio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
