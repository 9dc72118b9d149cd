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
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

from prodio.session.base import SessionStoreUnavailable

# Gradio sweeps old files this often at most and at least: often enough that a file does
# not overstay its lifetime by much, rarely enough that the sweep costs nothing.
MIN_CLEANUP_INTERVAL: Final = 60
MAX_CLEANUP_INTERVAL: Final = 3600

_FILE_PREFIX: Final = "file:"
_PROGRESS_PREFIX: Final = "progress:"


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

    async def record(self, user: str, keys: Sequence[str]) -> None:
        """Add ``user`` to the owners of each of ``keys`` and start each key's ``ttl`` over
        (for all its owners: the file was just written again)."""
        ...

    async def ownership(self, user: str | None, key: str) -> Ownership:
        """What ``key`` is to ``user`` (``None``: nobody signed in, never an owner)."""
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
