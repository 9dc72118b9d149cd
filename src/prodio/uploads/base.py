"""Who uploaded which file: the contract of the upload registry, and its keys.

Gradio names an upload after its content (``<GRADIO_TEMP_DIR>/<sha256>/<file name>``) and
serves any file of its temp folder to anyone who asks for its path at
``/gradio_api/file=``. prodio records, for each path ``/gradio_api/upload`` hands out, the
users it handed it to; :mod:`prodio.middleware.uploads` then refuses that file to everybody
else. Two users who upload the same bytes under the same name get the same path, and both
own it: neither learns anything from the other's copy.

A record is *about a file*, not about a session: it names users, outlives their sessions
(a user who signs in again still reaches their uploads) and lives as long as the file. So
it has a lifetime of its own, tied to Gradio's: prodio has Gradio delete the files it wrote
``PRODIO_UPLOAD_LIFETIME`` seconds after writing them (see :func:`cleanup_interval`), and
a record lives longer than that (:func:`record_ttl`), so a file never outlives the record
that guards it while its instance runs.

Keys are opaque strings built here (:func:`file_key`, :func:`progress_key`); backends may
store them hashed.

The same registry binds **Gradio sessions** to users. Gradio keeps each browser tab's state
(``gr.State``, component values, its event queue and streams) under a ``session_hash`` that
the browser makes up and sends with every request; Gradio never asks whose it is.
:meth:`UploadRegistry.bind_session` binds a hash to the first user who uses it, for
:func:`session_binding_ttl` after its last use, and tells every later user whose it is.
Unlike a file, a session has one owner.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

from prodio.session.base import SessionStoreUnavailable

# Gradio sweeps old files this often at most and at least: often enough that a file does
# not overstay its lifetime by much, rarely enough that the sweep costs nothing.
MIN_CLEANUP_INTERVAL: Final = 60
MAX_CLEANUP_INTERVAL: Final = 3600

# Gradio keeps the gr.State of a tab whose page was closed for an hour
# (gradio.state_holder.SessionState.STATE_TTL_WHEN_CLOSED): a binding lasts at least that.
GRADIO_CLOSED_SESSION_SECONDS: Final = 3600
# A session binding in use is pushed back at least this often (seconds).
MAX_RENEW_INTERVAL: Final = 60.0

_FILE_PREFIX: Final = "file:"
_PROGRESS_PREFIX: Final = "progress:"
_SESSION_PREFIX: Final = "session:"


class UploadRegistryUnavailable(SessionStoreUnavailable):
    """The registry's backend did not answer. Callers fail closed (503): an upload whose
    owner could not be written down is not handed out, and a recorded file whose owner
    cannot be checked is not served."""


class Ownership(enum.Enum):
    """What the registry knows about a key, seen from one user."""

    UNRECORDED = "unrecorded"
    """Nobody recorded it: not an upload prodio saw (or its record has ended)."""
    OWNER = "owner"
    """The user is one of the users it was recorded for."""
    OTHERS = "others"
    """It was recorded for other users only."""


@runtime_checkable
class UploadRegistry(Protocol):
    """Which users own which keys, each record for ``ttl`` seconds after it was last made.

    Every method may raise :class:`UploadRegistryUnavailable`.
    """

    ttl: float
    session_ttl: float

    async def record(self, user: str, keys: Sequence[str]) -> None:
        """Add ``user`` to the owners of each of ``keys`` and start each key's ``ttl`` over
        (for all its owners: the file was just written again)."""
        ...

    async def ownership(self, user: str | None, key: str) -> Ownership:
        """What ``key`` is to ``user`` (``None``: nobody signed in, never an owner)."""
        ...

    async def bind_session(self, user: str | None, session_hash: str) -> Ownership:
        """Whose Gradio session ``session_hash`` is, seen from ``user``, binding it to
        ``user`` if it is nobody's yet.

        :attr:`Ownership.OWNER`: it is ``user``'s (bound now, or before), and stays bound
        ``session_ttl`` seconds from now (a backend may push the expiry back lazily, never
        letting it come closer than ``session_ttl`` less :func:`renew_after` of it).
        :attr:`Ownership.OTHERS`: it is bound to another user.
        ``user=None`` (nobody signed in) binds nothing: :attr:`Ownership.UNRECORDED` when
        the hash is nobody's, else OTHERS. A binding never changes owner while it lasts.
        """
        ...

    async def ping(self) -> None:
        """Raise :class:`UploadRegistryUnavailable` if the backend does not answer."""
        ...


def cleanup_interval(lifetime: int) -> int:
    """Seconds between Gradio's sweeps of the files it wrote, for a file ``lifetime``:
    a quarter of it, within one minute and one hour."""
    return max(MIN_CLEANUP_INTERVAL, min(MAX_CLEANUP_INTERVAL, lifetime // 4))


def record_ttl(lifetime: int) -> int:
    """How long an ownership record lives: longer than its file.

    Gradio deletes a file at the first sweep after it is ``lifetime`` seconds old, so at
    most one interval late; the record keeps one interval more to spare (a slow sweep).
    """
    return lifetime + 2 * cleanup_interval(lifetime)


def session_binding_ttl(lifetime: int, absolute_timeout: int) -> int:
    """How long a Gradio session stays bound to its user after its last use.

    Gradio keeps what it holds for a tab for as long as the tab is used, and longer: the
    files it wrote until ``lifetime`` (``PRODIO_UPLOAD_LIFETIME``) has passed, a closed
    tab's ``gr.State`` for an hour, its component values until 10,000 newer tabs push them
    out of memory. The binding outlives the files (:func:`record_ttl`), the hour, and a
    whole sign-in session (``absolute_timeout``: a tab left open that long may still come
    back). Only after that may another user's request bind the same hash.
    """
    return max(record_ttl(lifetime), absolute_timeout, GRADIO_CLOSED_SESSION_SECONDS)


def renew_after(ttl: float) -> float:
    """How long a backend may wait before pushing back the expiry of a binding that is used
    again: a twentieth of its TTL and at most a minute, the rule of the session store's idle
    timer. A binding used now thus lasts at least ``ttl`` less a minute from now, which is
    still beyond the files of its session (:func:`session_binding_ttl`)."""
    return min(ttl / 20, MAX_RENEW_INTERVAL)


def canonical_path(path: str) -> str | None:
    """The file that Gradio's file route opens for ``path``, as one canonical name.

    Gradio makes ``path`` absolute against the working directory and normalises it
    lexically (``os.path.abspath``), then opens that, and the kernel follows symbolic
    links. Resolving the links here too gives every alias of a file one name:
    ``/tmp/gradio/./x``, ``/tmp/gradio/y/../x``, ``/proc/self/root/tmp/gradio/x`` and a
    relative path from the working directory all become ``/tmp/gradio/x``.
    ``None`` when no file can be named (a NUL byte).
    """
    if "\x00" in path:
        return None
    try:
        return os.path.realpath(os.path.abspath(path))
    except (OSError, ValueError):
        return None


def file_key(path: str) -> str | None:
    """The registry key of the file named by ``path`` (see :func:`canonical_path`)."""
    canonical = canonical_path(path)
    return None if canonical is None else _FILE_PREFIX + canonical


def progress_key(upload_id: str) -> str:
    """The registry key of an upload's progress stream (``?upload_id=`` of the upload)."""
    return _PROGRESS_PREFIX + upload_id


def session_key(session_hash: str) -> str:
    """The registry key of a Gradio session hash: a digest, so that a hash of any length
    (the browser makes up the hash, the client sends it) costs the same to keep."""
    # surrogatepass: the hash came from JSON or a URL, and may hold lone surrogates.
    digest = hashlib.sha256(session_hash.encode("utf-8", "surrogatepass")).hexdigest()
    return _SESSION_PREFIX + digest
