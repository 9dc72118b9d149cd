"""Logging set-up: one line per event, plain text or JSON lines, on standard error.

Kept apart from ``middleware/logging.py``: this configures where log records go for the
whole process (CLI included); the middleware decides what one request logs.

Request lines (logger ``prodio.request``, one per request and most of the log) are
written to a buffer that reaches standard error at most ``PRODIO_LOG_FLUSH_INTERVAL``
seconds later: one write per batch instead of one system call per request, which cost
about 5 % of a small request's CPU (``bench/``). Every other record (audit events,
warnings, errors, and any request line at WARNING or above) is written at once, and takes
the request lines before it along, so the order of lines is kept.

A request line skips ``logging``'s record machinery when prodio's own handler is the only
place ``logging`` would send it (:func:`write_request_line`): the same line, at about a
third of the cost. Any handler or filter an operator adds puts every line back through
``logging``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

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


def _milliseconds(created: float) -> int:
    # As LogRecord computes its msecs.
    return int((created - int(created)) * 1000)


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


class _LineFormatter(logging.Formatter):
    """One line per record, built by :meth:`render` from the record's attributes alone, so
    that a request line can be rendered without a LogRecord (:func:`write_request_line`)."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.render(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            _fields(record),
            exception,
        )

    def render(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[str, object],
        exception: str | None = None,
    ) -> str:
        """The line of a record with these attributes (``fields``: its ``extra=``)."""
        raise NotImplementedError


class JsonFormatter(_LineFormatter):
    """One JSON object per line: time (UTC), level, logger, message and the extra fields."""

    def render(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[str, object],
        exception: str | None = None,
    ) -> str:
        entry: dict[str, Any] = {
            "time": f"{self._seconds.format(created)}.{_milliseconds(created):03d}+00:00",
            "level": levelname,
            "logger": name,
            "message": message,
            **fields,
        }
        if exception is not None:
            entry["exception"] = exception
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(_LineFormatter):
    """``<time UTC> <LEVEL> <logger>: <message> key=value ...``, control characters escaped;
    UTC like the JSON lines, so that logs from hosts in different zones line up."""

    def render(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[str, object],
        exception: str | None = None,
    ) -> str:
        extras = " ".join([f"{key}={value}" for key, value in fields.items()])
        # Escaped in one pass: message, field names and values alike (escaping is per
        # character, so the whole equals the parts), one search instead of one per field.
        text = escape_control(f"{message} {extras}" if extras else message)
        stamp = f"{self._seconds.format(created)}.{_milliseconds(created):03d}Z"
        line = f"{stamp} {levelname:<7} {name}: {text}"
        return line if exception is None else f"{line}\n{exception}"


REQUEST_LOGGER = "prodio.request"


class DeferredFlushHandler(logging.StreamHandler[TextIO]):
    """A stream handler that lets the lines of ``deferred_logger`` below WARNING wait in
    the stream's buffer for up to ``flush_interval`` seconds; any other record flushes at
    once (and with it the lines before it). A daemon thread flushes what waits.
    """

    def __init__(
        self, stream: TextIO, *, deferred_logger: str = REQUEST_LOGGER, flush_interval: float
    ) -> None:
        super().__init__(stream)
        self.deferred_logger = deferred_logger
        self.flush_interval = flush_interval
        self._waiting = False
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="prodio-log-flush", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != self.deferred_logger or record.levelno >= logging.WARNING:
            super().emit(record)  # writes and flushes, under the handler's lock
            self._waiting = False
            return
        try:
            line = self.format(record) + self.terminator
            # StreamHandler.emit takes no lock around write either: Handler.handle holds it.
            self.stream.write(line)
            self._waiting = True
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_fields(
        self, created: float, levelname: str, name: str, message: str, fields: Mapping[str, object]
    ) -> bool:
        """Format and buffer a deferred line as ``emit`` would, without a LogRecord. False
        (nothing written) when this handler's formatter is not one of prodio's, or when
        writing failed: the caller then logs through ``logging``, whose ``handleError``
        reports the failure as it would for any record."""
        formatter = self.formatter
        # render() is the whole line only where format() is ours: a subclass that formats
        # otherwise keeps its lines.
        if (
            not isinstance(formatter, _LineFormatter)
            or type(formatter).format is not _LineFormatter.format
        ):
            return False
        try:
            line = formatter.render(created, levelname, name, message, fields)
            with self.lock:  # type: ignore[union-attr]  # createLock ran in __init__
                self.stream.write(line + self.terminator)
        except RecursionError:
            raise
        except Exception:
            return False
        self._waiting = True
        return True

    def _flush_periodically(self) -> None:
        while not self._stopped.wait(self.flush_interval):
            if self._waiting:
                self._waiting = False
                self.flush()  # takes the handler's lock

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()


def _sole_deferred_handler(logger: logging.Logger) -> DeferredFlushHandler | None:
    """The handler that ``logger.handle`` would give an INFO record to, if it would give it
    to exactly one handler, that handler is prodio's deferring one for this logger, and no
    filter could stop or change the record on the way. Mirrors ``Logger.handle`` and
    ``Logger.callHandlers``: only the originating logger's own filters apply."""
    if logger.disabled or logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if (
        type(found) is not DeferredFlushHandler
        or found.filters
        or found.level > logging.INFO
        or found.deferred_logger != logger.name
    ):
        return None
    return found


def write_request_line(logger: logging.Logger, message: str, fields: Mapping[str, object]) -> bool:
    """Write ``logger.info(message, extra=fields)``'s line straight to prodio's handler, when
    that handler is all ``logging`` would do with it. False when it is not (another handler,
    a filter, a formatter of the operator's): the caller then logs through ``logging``.

    The caller has checked ``logger.isEnabledFor(logging.INFO)``. A LogRecord, the walk of
    the handler chain and ``Formatter.format`` cost a request a tenth of its CPU
    (``bench/``), for a line that comes out the same.
    """
    handler = _sole_deferred_handler(logger)
    if handler is None:
        return False
    return handler.write_fields(time.time(), "INFO", logger.name, message, fields)


def buffered_stderr() -> TextIO:
    """Standard error through a buffer of our own: Python's ``sys.stderr`` writes every
    line at once (it is line-buffered), whatever a handler's flush does. A standard error
    that is no file (a test's capture) is used as it is."""
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stderr
    raw = io.FileIO(descriptor, "w", closefd=False)
    return io.TextIOWrapper(
        io.BufferedWriter(raw, buffer_size=64 * 1024),
        encoding=sys.stderr.encoding or "utf-8",
        errors="backslashreplace",
        line_buffering=False,
    )


def configure_logging(settings: Settings) -> None:
    handler: logging.StreamHandler[TextIO]
    if settings.log_flush_interval > 0:
        handler = DeferredFlushHandler(
            buffered_stderr(), flush_interval=settings.log_flush_interval
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, DeferredFlushHandler):
            old.close()  # its lines out, its thread stopped
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
