"""What the fuzz tests share: reproducible settings, the running app, the "nothing leaked"
check, and the mutations of genuine tokens."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.apptest import AppUnderTest, running_app

# Reproducible and bounded: the same examples on every run (CI can bisect a failure), no
# .hypothesis/ example database, and no deadline, because a busy 2-core CI machine makes
# timings meaningless. Each test sets its own max_examples on top of this, through
# examples(): the counts keep tests/fuzz within a minute on such a machine; a longer run
# (nightly, or before a release) sets FUZZ_EXAMPLES_SCALE=20, say.
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False)
_SCALE = float(os.environ.get("FUZZ_EXAMPLES_SCALE", "1"))


def examples(count: int) -> int:
    """``count`` examples, times ``FUZZ_EXAMPLES_SCALE``."""
    return max(1, round(count * _SCALE))


# For tests that drive the whole app. "too_slow" measures how long drawing the examples
# takes, and forty-kilobyte form fields on a busy 2-core machine would trip it at random.
APP_FUZZ = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow])

# What a Python traceback or a debug page leaves in a response.
TRACEBACK_MARKERS = (
    "Traceback (most recent call last)",
    'File "/',
    '.py", line ',
    "site-packages",
)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def assert_no_leak(response: httpx.Response, secrets: Iterable[str]) -> None:
    """No server error, no traceback, and no secret in the body or in a header.

    ``Set-Cookie`` is the one place a session token may appear, so it is not searched for
    secrets; it is still searched for tracebacks.
    """
    assert response.status_code < 500, (response.status_code, response.text[:500])
    body = response.content
    for marker in TRACEBACK_MARKERS:
        assert marker.encode() not in body, f"traceback marker {marker!r} in the body"
    headers = [(name.lower(), value) for name, value in response.headers.raw]
    for name, value in headers:
        for marker in TRACEBACK_MARKERS:
            assert marker.encode() not in value, f"traceback marker {marker!r} in {name!r}"
    for secret in secrets:
        if not secret:
            continue
        needle = secret.encode()
        assert needle not in body, "a secret appears in the response body"
        for name, value in headers:
            if name != b"set-cookie":
                assert needle not in value, f"a secret appears in the {name!r} header"
    # Every response carries a request id, always a safe token: never an echo of a header
    # that could split the response or inject into a log line.
    request_id = response.headers.get("x-request-id", "")
    assert REQUEST_ID.fullmatch(request_id), request_id


@dataclass(frozen=True)
class AppInPortal:
    """An app from tests/apptest.py, running in an event loop of its own thread.

    Hypothesis draws in the test's thread and each example runs its requests through
    ``portal.call``. (An ``async`` Hypothesis test under anyio's pytest plugin loses its event
    loop as soon as Hypothesis stops an example midway, which it does while shrinking.)
    """

    portal: BlockingPortal
    env: AppUnderTest


@contextmanager
def app_in_portal(data_dir: Path, **overrides: Any) -> Iterator[AppInPortal]:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(running_app(data_dir, **overrides)) as env,
    ):
        yield AppInPortal(portal, env)


# Characters a lenient parser might drop or fold: whitespace beyond space and tab, format
# characters, and look-alikes of the characters of a token.
TRICKY_CHARACTERS = (
    "\x00\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u3000\ufeff\u200b\u200d"
    "\uff0e\u2024\uff1d\u037e\u2215\uff0d\uff3f"
)


@st.composite
def mutated(draw: st.DrawFn, genuine: str) -> str:
    """``genuine`` changed in one of the ways an attacker or a broken proxy changes a token."""
    index = draw(st.integers(0, len(genuine) - 1))
    kind = draw(
        st.sampled_from(
            ["flip", "truncate", "insert", "delete", "replace", "pad", "wrap", "case", "swap"]
        )
    )
    if kind == "flip":
        bit = draw(st.integers(0, 20))
        return genuine[:index] + chr(ord(genuine[index]) ^ (1 << bit)) + genuine[index + 1 :]
    if kind == "truncate":
        return genuine[:index]
    if kind == "insert":
        char = draw(st.one_of(st.characters(), st.sampled_from(TRICKY_CHARACTERS + " \t.=")))
        return genuine[:index] + char + genuine[index:]
    if kind == "delete":
        return genuine[:index] + genuine[index + 1 :]
    if kind == "replace":
        char = draw(st.one_of(st.characters(), st.sampled_from(TRICKY_CHARACTERS)))
        return genuine[:index] + char + genuine[index + 1 :]
    if kind == "pad":
        return genuine + draw(st.sampled_from(["=", "==", "===", ".", "%3D"]))
    if kind == "wrap":
        before = draw(st.text(st.sampled_from(" \t\r\n" + TRICKY_CHARACTERS), max_size=3))
        after = draw(st.text(st.sampled_from(" \t\r\n" + TRICKY_CHARACTERS), max_size=3))
        return before + genuine + after
    if kind == "case":
        return genuine[:index] + genuine[index:].swapcase()
    parts = genuine.split(".")
    draw(st.randoms()).shuffle(parts)
    return ".".join(parts)
