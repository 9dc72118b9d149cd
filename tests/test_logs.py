"""Where log lines go: request lines batched, everything else at once, in order."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prodio.logs import (
    REQUEST_LOGGER,
    DeferredFlushHandler,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    write_request_line,
)
from tests.apptest import make_settings


def _record(name: str, level: int, message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 0, message, (), None)
    record.__dict__.update(fields)
    return record


def _file_stream(path: Path) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(path, "w"), buffer_size=64 * 1024), encoding="utf-8"
    )


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[Path, DeferredFlushHandler]]:
    path = tmp_path / "log"
    handler = DeferredFlushHandler(_file_stream(path), flush_interval=0.2)
    handler.setFormatter(TextFormatter())
    yield path, handler
    handler.close()
    handler.stream.close()


def test_request_lines_wait_and_other_records_take_them_along(
    log_file: tuple[Path, DeferredFlushHandler],
) -> None:
    path, handler = log_file
    handler.handle(_record(REQUEST_LOGGER, logging.INFO, "request", path="/a"))
    handler.handle(_record(REQUEST_LOGGER, logging.INFO, "request", path="/b"))
    # Still in the buffer: no system call per request line.
    assert path.read_text() == ""
    handler.handle(_record("prodio.audit", logging.INFO, "login", outcome="success"))
    lines = path.read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "request path=/a",
        "request path=/b",
        "login outcome=success",
    ]


def test_a_waiting_request_line_is_written_within_the_interval(
    log_file: tuple[Path, DeferredFlushHandler],
) -> None:
    path, handler = log_file
    handler.handle(_record(REQUEST_LOGGER, logging.INFO, "request", path="/quiet"))
    deadline = time.monotonic() + 5
    while "path=/quiet" not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "path=/quiet" in path.read_text()


def test_a_request_line_at_warning_or_above_is_written_at_once(
    log_file: tuple[Path, DeferredFlushHandler],
) -> None:
    path, handler = log_file
    handler.handle(_record(REQUEST_LOGGER, logging.ERROR, "unhandled error", path="/boom"))
    assert "path=/boom" in path.read_text()


def test_closing_writes_what_waits(log_file: tuple[Path, DeferredFlushHandler]) -> None:
    path, handler = log_file
    handler.handle(_record(REQUEST_LOGGER, logging.INFO, "request", path="/last"))
    handler.close()
    assert "path=/last" in path.read_text()


def test_text_lines_escape_control_characters_in_message_and_fields() -> None:
    line = TextFormatter().format(
        _record("prodio.request", logging.INFO, "bad\x1b[31m", path="/a\nforged=1", user="\x00")
    )
    assert not any(character in line for character in "\n\x1b\x00")
    assert line.endswith(r"bad\x1b[31m path=/a\x0aforged=1 user=\x00")


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize(("interval", "deferred"), [(0.2, True), (0, False)])
def test_the_flush_interval_setting_chooses_the_handler(
    tmp_path: Path, interval: float, deferred: bool
) -> None:
    configure_logging(make_settings(tmp_path, log_flush_interval=interval))
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, DeferredFlushHandler) is deferred
    configure_logging(make_settings(tmp_path))
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_every_line_carries_its_time_in_utc(
    formatter: logging.Formatter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines from hosts in different zones line up (ASVS 16.2.2): the time is UTC, marked
    so, whatever the host's zone."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        record = _record("prodio.audit", logging.INFO, "login")
        record.created = 1_795_000_000.25  # 2026-11-18 11:06:40.250 UTC, 03:06 in Los Angeles
        record.msecs = 250.0
        line = formatter.format(record)
    finally:
        monkeypatch.undo()
        time.tzset()
    if isinstance(formatter, TextFormatter):
        assert line.startswith("2026-11-18T11:06:40.250Z ")
    else:
        assert json.loads(line)["time"] == "2026-11-18T11:06:40.250+00:00"


# -- request lines past logging's record machinery ---------------------------------------

ODD_FIELDS: dict[str, object] = {
    "request_id": "r1",
    "method": "GET",
    "path": "/a\nforged=1 \x1b[31mé",
    "status": 200,
    "duration_ms": 1.25,
    "user": None,
    "session": "-",
}


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_a_line_written_directly_is_the_line_logging_writes(formatter: logging.Formatter) -> None:
    handler = DeferredFlushHandler(io.StringIO(), flush_interval=60)
    handler.setFormatter(formatter)
    try:
        created = 1_795_000_000.987
        assert handler.write_fields(created, "INFO", REQUEST_LOGGER, "request", ODD_FIELDS)
        direct = handler.stream.getvalue()
        record = logging.getLogger(REQUEST_LOGGER).makeRecord(
            REQUEST_LOGGER, logging.INFO, __file__, 0, "request", (), None, extra=ODD_FIELDS
        )
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert direct == handler.format(record) + "\n"
        assert direct.count("\n") == 1
    finally:
        handler.close()


def _request_logger_under(parent_name: str = "prodio") -> tuple[logging.Logger, logging.Logger]:
    """A request logger and its parent outside the process's logging tree (pytest hangs its
    own handlers on the real root)."""
    parent = logging.Logger(parent_name)
    logger = logging.Logger(REQUEST_LOGGER)
    logger.parent = parent
    return parent, logger


@pytest.fixture
def prodio_handler() -> Iterator[DeferredFlushHandler]:
    handler = DeferredFlushHandler(io.StringIO(), flush_interval=60)
    handler.setFormatter(TextFormatter())
    yield handler
    handler.close()


def test_a_request_line_goes_straight_to_prodios_handler(
    prodio_handler: DeferredFlushHandler,
) -> None:
    parent, logger = _request_logger_under()
    parent.addHandler(prodio_handler)
    assert write_request_line(logger, "request", {"path": "/a", "status": 200})
    assert prodio_handler.stream.getvalue().endswith(
        " INFO    prodio.request: request path=/a status=200\n"
    )


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _add_operator_handler(parent: logging.Logger, logger: logging.Logger) -> None:
    parent.addHandler(_Kept())


def _add_request_logger_handler(parent: logging.Logger, logger: logging.Logger) -> None:
    logger.addHandler(_Kept())


def _add_logger_filter(parent: logging.Logger, logger: logging.Logger) -> None:
    logger.addFilter(lambda record: True)


def _add_handler_filter(parent: logging.Logger, logger: logging.Logger) -> None:
    parent.handlers[0].addFilter(lambda record: True)


def _replace_formatter(parent: logging.Logger, logger: logging.Logger) -> None:
    parent.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(message)s"))


def _subclass_formatter(parent: logging.Logger, logger: logging.Logger) -> None:
    class Shouting(TextFormatter):
        def format(self, record: logging.LogRecord) -> str:
            return super().format(record).upper()

    parent.handlers[0].setFormatter(Shouting())


def _raise_handler_level(parent: logging.Logger, logger: logging.Logger) -> None:
    parent.handlers[0].setLevel(logging.WARNING)


def _stop_propagation(parent: logging.Logger, logger: logging.Logger) -> None:
    logger.propagate = False


def _disable_logger(parent: logging.Logger, logger: logging.Logger) -> None:
    logger.disabled = True


@pytest.mark.parametrize(
    "change",
    [
        _add_operator_handler,
        _add_request_logger_handler,
        _add_logger_filter,
        _add_handler_filter,
        _replace_formatter,
        _subclass_formatter,
        _raise_handler_level,
        _stop_propagation,
        _disable_logger,
    ],
)
def test_any_other_handler_filter_or_format_puts_request_lines_back_through_logging(
    prodio_handler: DeferredFlushHandler,
    change: Callable[[logging.Logger, logging.Logger], None],
) -> None:
    """What an operator adds to logging sees every request line: the short cut is taken
    only when prodio's handler is the one place a line could go."""
    parent, logger = _request_logger_under()
    parent.addHandler(prodio_handler)
    change(parent, logger)
    assert not write_request_line(logger, "request", {"path": "/a"})
    assert prodio_handler.stream.getvalue() == ""


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("disk full")


@pytest.mark.parametrize(
    "handler_args",
    [
        pytest.param({"stream": io.StringIO(), "deferred_logger": "other"}, id="other-logger"),
        # logging then reports the failure (handleError) as for any record.
        pytest.param({"stream": _BrokenStream()}, id="write-fails"),
    ],
)
def test_no_short_cut_through_a_handler_for_another_logger_or_one_that_cannot_write(
    handler_args: dict[str, Any],
) -> None:
    handler = DeferredFlushHandler(flush_interval=60, **handler_args)
    handler.setFormatter(TextFormatter())
    parent, logger = _request_logger_under()
    parent.addHandler(handler)
    try:
        assert not write_request_line(logger, "request", {"path": "/a"})
    finally:
        handler.close()
