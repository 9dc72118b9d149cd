"""Names and attributes of the cookies prodio sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prodio.config import Settings


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    secure: bool
    samesite: Literal["lax", "strict"]

    @classmethod
    def from_settings(cls, settings: Settings) -> CookiePolicy:
        return cls(secure=settings.cookie_secure, samesite=settings.cookie_samesite)

    def _name(self, base: str) -> str:
        # __Host- makes the browser refuse the cookie unless it is Secure, Path=/ and has no
        # Domain: a sibling subdomain cannot plant or overwrite it.
        return f"__Host-{base}" if self.secure else base

    @property
    def session_cookie(self) -> str:
        return self._name("prodio_session")

    @property
    def csrf_cookie(self) -> str:
        return self._name("prodio_csrf")

    def header(self, name: str, value: str, *, max_age: int | None = None) -> str:
        """A ``Set-Cookie`` header value; ``max_age=0`` expires the cookie."""
        parts = [f"{name}={value}", "Path=/", "HttpOnly", f"SameSite={self.samesite.title()}"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)

    def expired_header(self, name: str) -> str:
        return self.header(name, '""', max_age=0)


def read_cookie(raw_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None. Never raises."""
    for chunk in raw_header.split(";"):
        key, sep, value = chunk.strip().partition("=")
        if sep and key == name:
            return value.strip()
    return None


__all__ = ["CookiePolicy", "read_cookie"]
