"""An optional check of new passwords against passwords known from data breaches (ASVS 6.2.12).

It asks a range API in the format of Have I Been Pwned's Pwned Passwords, by k-anonymity:
the SHA-1 of the password is computed here, and only its first 5 hex characters leave the
process, as ``GET <base>/range/<PREFIX>`` with ``Add-Padding: true``. The API answers
every suffix it knows under that prefix (hundreds of them, from hundreds of different
passwords), one ``<35 hex characters>:<count>`` a line; the password was in a breach if
its own suffix is there with a count above 0 (padding lines have a count of 0). Neither
the password, nor its full hash, nor even the prefix is ever logged.

Off unless ``PRODIO_PASSWORD_BREACH_API`` names an API (:func:`build_breach_check`).
When the API cannot be asked (unreachable, slower than the timeout, an answer that is not
in the format), ``PRODIO_PASSWORD_BREACH_API_ON_ERROR`` decides:

- ``allow`` (the default): the password is set without the check, and a warning says so.
  A third party's outage must not stop every user from changing a password (and with it a
  forced change after a reset, which would lock them out); the bundled list of common
  passwords still applies;
- ``refuse``: no password is set until the API answers again
  (:class:`BreachCheckUnavailable`, a :class:`~prodio.users.base.UserStoreUnavailable`, so
  the password page answers 503 "try again in a moment" and the CLI fails).
"""

from __future__ import annotations

import functools
import hashlib
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import anyio
import httpx

from prodio.config import (
    DEFAULT_PASSWORD_BREACH_API_TIMEOUT,
    normalize_breach_api_url,
)
from prodio.users.base import UserStoreUnavailable
from prodio.users.passwords import PasswordPolicyError, normalize_password

if TYPE_CHECKING:
    from prodio.config import Settings

PREFIX_LENGTH = 5
SUFFIX_LENGTH = 35
# A real answer (about 800-1,000 lines with padding) is 30-40 KB.
MAX_ANSWER_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = 30
# Padding: every answer holds 800-1,000 lines, so its size does not tell the prefix's.
HEADERS = {
    "Add-Padding": "true",
    "User-Agent": "prodio-password-breach-check",
    "Accept": "text/plain",
}
_HEX = frozenset("0123456789ABCDEF")

OnError = Literal["allow", "refuse"]


class PasswordBreached(PasswordPolicyError):
    """The password is known from data breaches: attackers try those first."""


class BreachCheckUnavailable(UserStoreUnavailable):
    """The breach API could not be asked and the policy is to refuse meanwhile.

    A :class:`~prodio.users.base.UserStoreUnavailable`, like a full hashing queue, so that
    callers that answer 503 when passwords cannot be handled do so here too.
    """

    retry_after_seconds = RETRY_AFTER_SECONDS


class _BadAnswer(Exception):
    """The API answered, but not in the range format."""


@dataclass(frozen=True, slots=True)
class BreachResult:
    """The outcome of a lookup that did not refuse the password: ``checked`` is ``False``
    when the API could not be asked and the policy allowed the password without it;
    ``problem`` then says why (no password, hash or prefix in it)."""

    checked: bool
    problem: str | None = None


def sha1_hex(password: str) -> str:
    """The upper-case SHA-1 of the password as prodio hashes it (NFKC, UTF-8)."""
    digest = hashlib.sha1(normalize_password(password).encode("utf-8"), usedforsecurity=False)
    return digest.hexdigest().upper()


def breach_count(lines: Iterable[str], suffix: str) -> int:
    """How often the range answer ``lines`` lists ``suffix``; ``_BadAnswer`` if a line is
    not ``<35 hex>:<count>``."""
    found = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        candidate, separator, count_text = line.partition(":")
        candidate = candidate.upper()
        if (
            not separator
            or len(candidate) != SUFFIX_LENGTH
            or not _HEX.issuperset(candidate)
            or not count_text.isdigit()
            or not count_text.isascii()
        ):
            raise _BadAnswer("an answer line is not <35 hex characters>:<count>")
        if candidate == suffix:
            # Padding lines carry a count of 0: they are no breached password.
            found = max(found, int(count_text))
    return found


def breached_message(count: int) -> str:
    times = "once" if count == 1 else f"{count:,} times"
    return (
        f"this password appears in data breaches ({times}), so attackers try it early; "
        "choose another one (a passphrase of several unrelated words is a good choice)"
    )


class PwnedPasswordsCheck:
    """Looks new passwords up in a Pwned Passwords range API (see the module's text).

    :meth:`check` blocks (the CLI, a worker thread); :meth:`acheck` is for async code. Both
    raise :class:`PasswordBreached` for a breached password, return a
    :class:`BreachResult` otherwise, and raise :class:`BreachCheckUnavailable` when the API
    cannot be asked and ``on_error`` is ``"refuse"``. An async lookup gives up after
    ``timeout`` seconds; a blocking one once connecting, or the answer, takes longer than
    that (so at most about twice it). A new HTTP client is made for each lookup (passwords are set
    rarely); nothing is connected before the first.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_PASSWORD_BREACH_API_TIMEOUT,
        on_error: OnError = "allow",
    ) -> None:
        base = normalize_breach_api_url(base_url)
        if base is None:
            raise ValueError("base_url is empty: pass None instead of a check to turn it off")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if on_error not in ("allow", "refuse"):
            raise ValueError(f"on_error must be 'allow' or 'refuse', not {on_error!r}")
        self.base_url = base
        self.timeout = timeout
        self.on_error: OnError = on_error
        # Named in messages: the host only, never a path that could carry a key.
        self.host = urlsplit(base).hostname or base

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        # Made once, on first use: loading the CA bundle costs ~25 ms of CPU.
        return ssl.create_default_context()

    def _url(self, prefix: str) -> str:
        return f"{self.base_url}/range/{prefix}"

    @staticmethod
    def _problem(error: BaseException, timeout: float) -> str:
        if isinstance(error, httpx.TimeoutException | TimeoutError):
            return f"no answer within {timeout:g} s"
        if isinstance(error, _BadAnswer):
            return str(error)
        if isinstance(error, httpx.HTTPStatusError):
            return f"HTTP {error.response.status_code}"
        if isinstance(error, httpx.ConnectError):
            # The reason (refused, no such host, certificate not trusted) and no URL: the
            # path would name the prefix.
            reason = str(error).replace("\n", " ")[:200]
            return f"cannot connect ({reason or 'ConnectError'})"
        if isinstance(error, ssl.SSLError):
            return f"TLS failed ({type(error).__name__})"
        return f"the request failed ({type(error).__name__})"

    def _decide(self, count: int) -> BreachResult:
        if count > 0:
            raise PasswordBreached(breached_message(count))
        return BreachResult(checked=True)

    def _unavailable(self, problem: str) -> BreachResult:
        text = f"the password breach check at {self.host} could not be done: {problem}"
        if self.on_error == "refuse":
            raise BreachCheckUnavailable(
                f"{text}; no password can be set until it answers again "
                "(PRODIO_PASSWORD_BREACH_API_ON_ERROR=refuse)"
            )
        return BreachResult(checked=False, problem=text)

    @staticmethod
    def _text(body: bytes) -> list[str]:
        try:
            return body.decode("ascii").splitlines()
        except UnicodeDecodeError:
            raise _BadAnswer("the answer is not plain ASCII text") from None

    def check(self, password: str) -> BreachResult:
        """Look ``password`` up, blocking (see the class's text)."""
        digest = sha1_hex(password)
        prefix, suffix = digest[:PREFIX_LENGTH], digest[PREFIX_LENGTH:]
        deadline = time.monotonic() + self.timeout
        try:
            with (
                httpx.Client(
                    timeout=self.timeout, verify=self._tls, headers=HEADERS, follow_redirects=False
                ) as client,
                client.stream("GET", self._url(prefix)) as answer,
            ):
                answer.raise_for_status()
                if answer.status_code != 200:
                    raise _BadAnswer(f"HTTP {answer.status_code} instead of 200")
                body = bytearray()
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise _BadAnswer("the answer is far longer than a range answer")
                    if time.monotonic() > deadline:
                        raise TimeoutError
            count = breach_count(self._text(bytes(body)), suffix)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, _BadAnswer) as error:
            # OSError covers TimeoutError and TLS errors (ssl.SSLError).
            return self._unavailable(self._problem(error, self.timeout))
        return self._decide(count)

    async def acheck(self, password: str) -> BreachResult:
        """Look ``password`` up without blocking the event loop."""
        digest = sha1_hex(password)
        prefix, suffix = digest[:PREFIX_LENGTH], digest[PREFIX_LENGTH:]
        try:
            with anyio.fail_after(self.timeout):
                async with (
                    httpx.AsyncClient(
                        timeout=self.timeout,
                        verify=self._tls,
                        headers=HEADERS,
                        follow_redirects=False,
                    ) as client,
                    client.stream("GET", self._url(prefix)) as answer,
                ):
                    answer.raise_for_status()
                    if answer.status_code != 200:
                        raise _BadAnswer(f"HTTP {answer.status_code} instead of 200")
                    body = bytearray()
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER_BYTES:
                            raise _BadAnswer("the answer is far longer than a range answer")
            count = breach_count(self._text(bytes(body)), suffix)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, _BadAnswer) as error:
            return self._unavailable(self._problem(error, self.timeout))
        return self._decide(count)


def build_breach_check(settings: Settings) -> PwnedPasswordsCheck | None:
    """The breach check the settings ask for, or ``None`` when it is off (the default)."""
    if settings.password_breach_api is None:
        return None
    return PwnedPasswordsCheck(
        settings.password_breach_api,
        timeout=settings.password_breach_api_timeout,
        on_error=settings.password_breach_api_on_error,
    )
