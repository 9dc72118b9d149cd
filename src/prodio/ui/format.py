"""Small formatting helpers shared by the pages (times, counts)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime


def format_utc(timestamp: float) -> str:
    """``2025-06-01 14:02 UTC`` for a Unix timestamp."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_utc(timestamp: float) -> str:
    """ISO-8601 in UTC with a ``Z``, for ``<time datetime=...>`` and machines."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """A rough, friendly duration: ``less than a minute``, ``5 minutes``, ``2 h 10 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return "less than a minute"
    minutes = seconds // 60
    if minutes < 60:
        return plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else plural(hours, "hour")


def plural(count: int, noun: str) -> str:
    """``1 time``, ``2 times``; the number gets thousands separators."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def escape(text: object) -> str:
    """HTML-escape anything for a ``gr.HTML`` value (quotes included)."""
    return html.escape(str(text), quote=True)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def escape_markdown(text: object) -> str:
    """Backslash-escape Markdown syntax so that ``text`` shows as written."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
