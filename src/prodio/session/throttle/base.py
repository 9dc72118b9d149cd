"""The login throttle contract: how many failed logins an account or a client may have.

Two counters limit password guessing, each over a window of ``window`` seconds:

- per *account* (the submitted user name, normalized): after ``max_failures`` failures
  every further attempt for that name is refused, whatever address it comes from;
- per *client* (the connecting IP address; an IPv6 address counts as its /64 network, which
  one subscriber usually holds whole): after ``max_failures_per_client`` failures every
  further attempt from there is refused, whatever name it tries.

An attempt is counted *before* the password is checked and uncounted by a success, so that
many guesses sent at once cannot all slip past a counter that only a finished failure
would raise: at most the limit's worth of password checks ever run. A counter expires
``window`` seconds after its first failure; the failure that reaches the limit starts a
lock of a whole ``window``. Nothing is kept longer.

A name that cannot be an account (``normalize_username`` refuses it) is counted like any
other, under a hash of what was typed, so a locked name never tells whether it exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from prodio.session.base import SessionStoreUnavailable
from prodio.users.base import InvalidUsername, normalize_username

# Far above a valid name (64 characters); longer input is hashed from this prefix only.
_MAX_NAME_INPUT = 1024
IPV6_CLIENT_PREFIX = 64

LockScope = Literal["account", "client"]


class ThrottleUnavailable(SessionStoreUnavailable):
    """The throttle's backend did not answer; callers fail closed (503), never let it pass."""


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """How many failures an account and a client may have within ``window`` seconds."""

    max_failures: int
    max_failures_per_client: int
    window: float

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_failures_per_client < 1:
            raise ValueError("the login failure limits must be at least 1")
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ValueError("the login failure window must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """The throttle's answer to one login attempt.

    When ``allowed``, the attempt is already counted as a failure (``account_failures`` and
    ``client_failures`` include it): report its end with ``succeeded`` or ``abandon``, or
    leave it counted when the password was wrong. When refused, the counts are the
    current ones and ``retry_after`` says how long the refusing lock(s) still last.
    """

    account: str
    client: str | None
    allowed: bool
    account_failures: int
    client_failures: int
    retry_after: float = 0.0
    refused_by: tuple[LockScope, ...] = ()
    # Whether this attempt, if it fails, is the one that locks the account / the client.
    locks: tuple[LockScope, ...] = ()

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` for a ``Retry-After`` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after))


@runtime_checkable
class LoginThrottle(Protocol):
    """Failed-login counters shared by every instance that uses the same backend.

    All methods may raise :class:`ThrottleUnavailable`.
    """

    limits: ThrottleLimits

    async def begin(self, username: str, client_host: str | None) -> LoginAttempt:
        """Refuse the attempt if its account or client is locked; else count it and allow it.

        ``username`` is the name as submitted; ``client_host`` the connecting address
        (``None`` when unknown: then only the account limit applies). One backend call.
        """
        ...

    async def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: forget the account's failures and uncount the attempt
        from the client's (its earlier failures stay counted)."""
        ...

    async def abandon(self, attempt: LoginAttempt) -> None:
        """The attempt could not be decided (a backend was down): uncount it everywhere."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise :class:`ThrottleUnavailable` if not."""
        ...

    async def aclose(self) -> None:
        """Release what the throttle owns (a shared connection pool is left to its owner)."""
        ...


def account_key(username: str) -> str:
    """The counter name for a submitted user name: the normalized name when it is a valid
    one, else a hash of the typed text (bounded, and never a stored secret)."""
    try:
        return normalize_username(username[: _MAX_NAME_INPUT + 1])
    except InvalidUsername:
        digest = hashlib.sha256(
            username[:_MAX_NAME_INPUT].encode("utf-8", "surrogatepass")
        ).hexdigest()
        # "#" cannot appear in a valid name, so the two kinds of key never meet.
        return f"#{digest[:32]}"


def client_key(host: str | None) -> str | None:
    """The counter name for a client address; ``None`` when there is no address."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Not an IP (a test client's name, a unix socket peer): count it by a hash.
        return "#" + hashlib.sha256(host.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False)
        return str(network)
    return str(address)
