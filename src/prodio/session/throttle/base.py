"""The login throttle contract: how many failed logins an account or a client may have.

Three kinds of counters limit password guessing, each over a window of ``window`` seconds:

- per *account* (the submitted user name, normalized): after ``max_failures`` failures
  every further attempt for that name is refused, from any address the account has not
  signed in from lately (below);
- per *client* (the connecting IP address; an IPv6 address counts as its /64 network, which
  one subscriber usually holds whole): after ``max_failures_per_client`` failures every
  further attempt from there is refused, whatever name it tries;
- per *account at a known client*: a client from which the account signed in successfully
  within ``known_client_ttl`` seconds is not held by the account's lock. Its attempts for
  that account are limited by a counter of their own (``max_failures`` again), so that an
  attacker who hammers an account from elsewhere cannot lock its owner out of the places
  they usually sign in from (OWASP's "device cookie" idea, keyed by the address because
  logout clears every cookie with ``Clear-Site-Data``). Failures from a known client still
  count towards the account's own counter.

Only real failures count. An attempt whose password is still being checked is *in flight*:
it is held in a separate set per account (or account at a known client) and per client,
with a deadline. ``failures + in flight`` may not exceed a limit, so that many guesses sent
at once never get more passwords checked than the limit allows, and at most
``max_in_flight`` (per account) and ``max_in_flight_per_client`` attempts are in flight at
once; an attempt beyond either is refused as *busy* (429 with a short ``Retry-After``),
which is not a lock. An attempt that was never reported (its process died) counts as a
failure once its deadline, ``attempt_timeout`` seconds after it began, has passed.

A counter expires ``window`` seconds after its first failure; the failure that reaches the
limit starts a lock of a whole ``window``. Nothing is kept longer, except the "known client"
marks, which last ``known_client_ttl`` seconds after the last success from that client.

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
# What a "busy" refusal asks the client to wait: an attempt in flight normally ends within
# a second (one argon2 verification, maybe after a short queue).
BUSY_RETRY_SECONDS = 1.0
DEFAULT_MAX_IN_FLIGHT = 3
DEFAULT_MAX_IN_FLIGHT_PER_CLIENT = 10
DEFAULT_ATTEMPT_TIMEOUT = 60.0
DEFAULT_KNOWN_CLIENT_TTL = 30 * 24 * 3600.0

# "account_client": the account's own limit at a client it signed in from lately.
LockScope = Literal["account", "client", "account_client"]


class ThrottleUnavailable(SessionStoreUnavailable):
    """The throttle's backend did not answer; callers fail closed (503), never let it pass."""


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """How many failures an account and a client may have within ``window`` seconds, and
    how many attempts may be in flight at once."""

    max_failures: int
    max_failures_per_client: int
    window: float
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_in_flight_per_client: int = DEFAULT_MAX_IN_FLIGHT_PER_CLIENT
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    # 0 turns the exemption of known clients off: the account lock then holds everywhere.
    known_client_ttl: float = DEFAULT_KNOWN_CLIENT_TTL

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_failures_per_client < 1:
            raise ValueError("the login failure limits must be at least 1")
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ValueError("the login failure window must be a positive number of seconds")
        if self.max_in_flight < 1 or self.max_in_flight_per_client < 1:
            raise ValueError("the login in-flight limits must be at least 1")
        if not (self.attempt_timeout > 0 and math.isfinite(self.attempt_timeout)):
            raise ValueError("the login attempt timeout must be a positive number of seconds")
        if not (self.known_client_ttl >= 0 and math.isfinite(self.known_client_ttl)):
            raise ValueError(
                "the login known-client lifetime must be 0 (off) or a positive number of seconds"
            )


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """The throttle's answer to one login attempt.

    When ``allowed``, the attempt is in flight: report its end with exactly one of
    ``failed``, ``succeeded`` or ``abandon``. When refused, ``busy`` tells a momentary
    refusal (too many attempts in flight) from a lock, and ``retry_after`` says how long
    to wait. The counts are the failures counted so far (this attempt not included).
    """

    account: str
    client: str | None
    allowed: bool
    account_failures: int
    client_failures: int
    # The failures of the account at this client, when the client is known (else 0).
    pair_failures: int = 0
    known_client: bool = False
    retry_after: float = 0.0
    refused_by: tuple[LockScope, ...] = ()
    busy: bool = False
    # Names this attempt in the in-flight sets.
    token: str = ""

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` for a ``Retry-After`` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after))


@dataclass(frozen=True, slots=True)
class LoginFailure:
    """The counts after a failed attempt was counted, and the locks it started."""

    account_failures: int
    client_failures: int
    pair_failures: int = 0
    locks: tuple[LockScope, ...] = ()

    def failures_of(self, scope: LockScope) -> int:
        return {
            "account": self.account_failures,
            "client": self.client_failures,
            "account_client": self.pair_failures,
        }[scope]


@runtime_checkable
class LoginThrottle(Protocol):
    """Failed-login counters shared by every instance that uses the same backend.

    All methods may raise :class:`ThrottleUnavailable`. Each is one backend call.
    """

    limits: ThrottleLimits

    async def begin(self, username: str, client_host: str | None) -> LoginAttempt:
        """Refuse the attempt if a lock or the in-flight limit holds; else put it in flight.

        ``username`` is the name as submitted; ``client_host`` the connecting address
        (``None`` when unknown: then only the account limit applies).
        """
        ...

    async def failed(self, attempt: LoginAttempt) -> LoginFailure:
        """The password was wrong: count a failure for the account (and the account at
        this client, if known) and for the client; say which locks this started."""
        ...

    async def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: forget the account's failures (unless it is locked: a
        known client's success does not lift a lock others caused), remember the client as
        known for the account. The client's failures stay counted."""
        ...

    async def abandon(self, attempt: LoginAttempt) -> None:
        """The attempt could not be decided (a backend was down): take it out of flight
        without counting anything."""
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


def pair_key(account: str, client: str) -> str:
    """The counter name of an account at a client (both keys already). A hash, so that the
    long-lived "known client" marks do not show who signs in from where at a glance (it is
    not keyed: anyone who can read the keys and guesses both parts can confirm a guess)."""
    digest = hashlib.sha256(f"{account}\n{client}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]
