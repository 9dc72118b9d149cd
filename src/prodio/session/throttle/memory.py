"""Login throttling in this process's memory: the companion of the in-memory session store.

Counters are not shared between processes; with several instances use the Redis backend,
where every instance counts into the same keys. The rules are the Redis backend's, step
for step (``base.py`` states them; ``tests/session/test_throttle.py`` runs one suite over
both).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from prodio.session.throttle.base import (
    BUSY_RETRY_SECONDS,
    LockScope,
    LoginAttempt,
    LoginFailure,
    ThrottleLimits,
    account_key,
    client_key,
    pair_key,
)


class _Counter:
    __slots__ = ("count", "expires_at")

    def __init__(self, expires_at: float) -> None:
        self.count = 0
        self.expires_at = expires_at


@dataclass(frozen=True, slots=True)
class _Scope:
    """One limit an attempt is held to: its failure counter and its in-flight set."""

    kind: LockScope
    name: str
    limit: int
    max_in_flight: int


class InMemoryLoginThrottle:
    """A :class:`~prodio.session.throttle.base.LoginThrottle` in one process.

    ``clock`` is monotonic seconds (tests pass their own). Memory follows recent activity
    only, because each of the three maps stays in expiry order and is trimmed from its front
    on every call:

    - failure counters: every expiry is "now plus the window", so a counter whose expiry
      moves is moved to the end;
    - in-flight sets: ordered by their newest deadline ("now plus the attempt timeout");
    - known clients: every mark is "now plus the known-client lifetime".
    """

    def __init__(
        self, limits: ThrottleLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._counters: dict[str, _Counter] = {}
        self._in_flight: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._known: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        """How many entries are held (expired ones included until the next call)."""
        return len(self._counters) + len(self._in_flight) + len(self._known)

    # -- housekeeping -----------------------------------------------------------------

    def _trim(self, now: float) -> None:
        while self._counters:
            name, counter = next(iter(self._counters.items()))
            if counter.expires_at > now:
                break
            del self._counters[name]
        while self._known:
            name, expires_at = next(iter(self._known.items()))
            if expires_at > now:
                break
            del self._known[name]
        while self._in_flight:
            name, tokens = next(iter(self._in_flight.items()))
            if tokens and max(tokens.values()) > now:
                break
            self._reap(name, now)

    def _add_failures(self, name: str, count: int, limit: int, now: float) -> tuple[int, bool]:
        """Count ``count`` failures; return the new total and whether it just reached the
        limit (which locks for a whole window from now)."""
        counter = self._counters.get(name)
        if counter is None:
            counter = _Counter(now + self.limits.window)
            self._counters[name] = counter
        before = counter.count
        counter.count += count
        reached = before < limit <= counter.count
        if reached:
            counter.expires_at = now + self.limits.window
            # Re-inserting at the end keeps the dict in expiry order.
            del self._counters[name]
            self._counters[name] = counter
        return counter.count, reached

    def _failures(self, name: str) -> int:
        counter = self._counters.get(name)
        return counter.count if counter is not None else 0

    def _reap(self, name: str, now: float) -> None:
        """Count the attempts of ``name``'s in-flight set whose deadline passed unreported
        as failures (their process never said how they ended: the safe side)."""
        tokens = self._in_flight.get(name)
        if tokens is None:
            return
        expired = [token for token, deadline in tokens.items() if deadline <= now]
        for token in expired:
            del tokens[token]
        if expired:
            self._add_failures(name, len(expired), self._limit_of(name), now)
        if not tokens:
            del self._in_flight[name]

    def _limit_of(self, name: str) -> int:
        if name.startswith("c:"):
            return self.limits.max_failures_per_client
        return self.limits.max_failures

    def _take_token(self, name: str, token: str) -> bool:
        tokens = self._in_flight.get(name)
        if tokens is None or tokens.pop(token, None) is None:
            return False
        if not tokens:
            del self._in_flight[name]
        return True

    # -- scopes ---------------------------------------------------------------------

    def _is_known(self, pair: str, now: float) -> bool:
        if self.limits.known_client_ttl <= 0:
            return False
        expires_at = self._known.get(pair)
        return expires_at is not None and expires_at > now

    def _scopes(self, account: str, client: str | None, known: bool) -> list[_Scope]:
        limits = self.limits
        if client is not None and known:
            first = _Scope(
                "account_client",
                f"p:{pair_key(account, client)}",
                limits.max_failures,
                limits.max_in_flight,
            )
        else:
            first = _Scope("account", f"a:{account}", limits.max_failures, limits.max_in_flight)
        if client is None:
            return [first]
        client_scope = _Scope(
            "client", f"c:{client}", limits.max_failures_per_client, limits.max_in_flight_per_client
        )
        return [first, client_scope]

    # -- the contract -----------------------------------------------------------------

    async def begin(self, username: str, client_host: str | None) -> LoginAttempt:
        now = self._clock()
        self._trim(now)
        account, client = account_key(username), client_key(client_host)
        known = client is not None and self._is_known(pair_key(account, client), now)
        scopes = self._scopes(account, client, known)
        locked: list[LockScope] = []
        busy: list[LockScope] = []
        retry_after = 0.0
        for scope in scopes:
            self._reap(scope.name, now)
            failures = self._failures(scope.name)
            flying = len(self._in_flight.get(scope.name, ()))
            if failures >= scope.limit:
                locked.append(scope.kind)
                retry_after = max(retry_after, self._counters[scope.name].expires_at - now)
            elif failures + flying >= scope.limit or flying >= scope.max_in_flight:
                busy.append(scope.kind)
        account_failures = self._failures(f"a:{account}")
        pair_failures = self._failures(scopes[0].name) if known else 0
        client_failures = self._failures(f"c:{client}") if client is not None else 0
        if locked or busy:
            return LoginAttempt(
                account,
                client,
                allowed=False,
                account_failures=account_failures,
                client_failures=client_failures,
                pair_failures=pair_failures,
                known_client=known,
                retry_after=retry_after if locked else BUSY_RETRY_SECONDS,
                refused_by=tuple(locked or busy),
                busy=not locked,
            )
        token = secrets.token_urlsafe(12)
        deadline = now + self.limits.attempt_timeout
        for scope in scopes:
            tokens = self._in_flight.setdefault(scope.name, {})
            tokens[token] = deadline
            # The newest deadline is this one: the set moves to the end of the order.
            self._in_flight.move_to_end(scope.name)
        return LoginAttempt(
            account,
            client,
            allowed=True,
            account_failures=account_failures,
            client_failures=client_failures,
            pair_failures=pair_failures,
            known_client=known,
            token=token,
        )

    async def failed(self, attempt: LoginAttempt) -> LoginFailure:
        now = self._clock()
        self._trim(now)
        scopes = self._scopes(attempt.account, attempt.client, attempt.known_client)
        counts: dict[LockScope, int] = {}
        locks: list[LockScope] = []
        for scope in scopes:
            if self._take_token(scope.name, attempt.token):
                counts[scope.kind], reached = self._add_failures(scope.name, 1, scope.limit, now)
                if reached:
                    locks.append(scope.kind)
                if scope.kind == "account_client":
                    # A known client's failures count towards the account's own limit too.
                    counts["account"], reached = self._add_failures(
                        f"a:{attempt.account}", 1, self.limits.max_failures, now
                    )
                    if reached:
                        locks.append("account")
            else:
                # Reaped meanwhile (it took longer than the attempt timeout): counted then.
                counts[scope.kind] = self._failures(scope.name)
        if "account" not in counts:
            counts["account"] = self._failures(f"a:{attempt.account}")
        return LoginFailure(
            account_failures=counts["account"],
            client_failures=counts.get("client", 0),
            pair_failures=counts.get("account_client", 0),
            locks=tuple(locks),
        )

    async def succeeded(self, attempt: LoginAttempt) -> None:
        now = self._clock()
        self._trim(now)
        for scope in self._scopes(attempt.account, attempt.client, attempt.known_client):
            self._take_token(scope.name, attempt.token)
            if scope.kind == "account_client":
                self._counters.pop(scope.name, None)
        account = f"a:{attempt.account}"
        if self._failures(account) < self.limits.max_failures:
            self._counters.pop(account, None)
        if attempt.client is not None and self.limits.known_client_ttl > 0:
            pair = pair_key(attempt.account, attempt.client)
            self._known.pop(pair, None)
            self._known[pair] = now + self.limits.known_client_ttl

    async def abandon(self, attempt: LoginAttempt) -> None:
        self._trim(self._clock())
        for scope in self._scopes(attempt.account, attempt.client, attempt.known_client):
            self._take_token(scope.name, attempt.token)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._counters.clear()
        self._in_flight.clear()
        self._known.clear()
