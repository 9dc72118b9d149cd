"""Checks shared by every session backend, so that all accept and refuse the same input."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from prodio.session.base import JSONValue

# What ``secrets.token_urlsafe`` makes; anything else cannot be one of our ids. Checking it
# first keeps garbage (a forged cookie, a megabyte of junk) away from the backend.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,128}")

JSON_VALUES_HELP = "None, bool, int, float, str, and lists and dicts (with str keys) of them"


def is_well_formed_session_id(session_id: object) -> bool:
    """Whether ``session_id`` could have been made by a store (no backend look-up)."""
    return isinstance(session_id, str) and SESSION_ID_PATTERN.fullmatch(session_id) is not None


def check_username(username: object) -> str:
    """Return ``username`` if a session may belong to it; raise otherwise."""
    if not isinstance(username, str):
        raise TypeError(f"the username must be a str, not {type(username).__name__}")
    if not username:
        raise ValueError("the username must not be empty")
    return username


def encode_value(key: str, value: JSONValue) -> str:
    """Encode one session value as JSON, refusing anything that would not come back equal.

    ``json.dumps`` alone would quietly turn tuples into lists and ``{1: ...}`` into
    ``{"1": ...}``; a caller would then read back something other than what it stored.
    """
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        unchanged = json.loads(encoded) == value
    except RecursionError:
        raise ValueError(f"session value {key!r} is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"session value {key!r} is not a JSON value ({exc}); use {JSON_VALUES_HELP}"
        ) from None
    if not unchanged:
        raise TypeError(
            f"session value {key!r} would not be stored unchanged (a tuple, a set, or a dict "
            f"with non-str keys?); use {JSON_VALUES_HELP}"
        )
    return encoded


def encode_data(data: Mapping[str, JSONValue] | None) -> dict[str, str]:
    """Encode every value of ``data`` (see :func:`encode_value`), keyed as given."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise TypeError(f"session data must be a mapping, not {type(data).__name__}")
    encoded: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"session data keys must be str, not {type(key).__name__}: {key!r}")
        encoded[key] = encode_value(key, value)
    return encoded


def check_removals(remove: Iterable[str]) -> list[str]:
    """The keys to remove, as a list; a bare string is refused rather than split into letters."""
    if isinstance(remove, str | bytes):
        raise TypeError("remove takes a collection of keys, such as ('theme',), not one string")
    keys = list(remove)
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"session data keys must be str, not {type(key).__name__}: {key!r}")
    return keys


def decode_value(encoded: str) -> Any:
    return json.loads(encoded)
