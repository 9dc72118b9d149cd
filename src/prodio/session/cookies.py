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


# Only spaces and tabs surround a cookie pair (RFC 6265 4.2.1 and 5.2). ``str.strip()`` would
# also trim "\xa0" and "\x85" (single bytes, as the Latin-1 header decodes them): a browser
# keeps "\xa0__Host-prodio_session" as a name of its own, one that escapes the ``__Host-``
# rules, so a sibling subdomain could set it and have it read as the session cookie.
_OWS = " \t"


def read_cookie(raw_header: str, name: str) -> str | None:
    """The value of the first cookie ``name`` in a ``Cookie`` header, or None. Never raises."""
    for chunk in raw_header.split(";"):
        key, sep, value = chunk.strip(_OWS).partition("=")
        if sep and key == name:
            return value.strip(_OWS)
    return None


__all__ = ["CookiePolicy", "read_cookie"]
