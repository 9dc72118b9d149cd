"""Public names of sessions, for pages that list them (the sessions page and its forms)."""

from __future__ import annotations

import hashlib
import hmac
import re

from prodio.session.base import Session

HANDLE_LENGTH = 32
_HANDLE = re.compile(f"[0-9a-f]{{{HANDLE_LENGTH}}}")


class SessionHandles:
    """Public names of sessions, for the sessions page and its forms.

    A session id is a credential: it never appears in a page, a form or a URL. A handle is an
    HMAC of the id under a key derived from the secret key for this use alone, so it names
    one session, cannot be turned back into its id, and is not the session tag of the logs.
    It needs nothing stored: every session has one, those made before handles existed too.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"prodio session handle v1", hashlib.sha256).digest()

    def of(self, session_id: str) -> str:
        return hmac.digest(self._key, session_id.encode(), "sha256").hex()[:HANDLE_LENGTH]

    def find(self, handle: str, sessions: list[Session]) -> Session | None:
        """The session among ``sessions`` that ``handle`` names, or None."""
        if _HANDLE.fullmatch(handle) is None:
            return None
        for candidate in sessions:
            if hmac.compare_digest(self.of(candidate.id), handle):
                return candidate
        return None
