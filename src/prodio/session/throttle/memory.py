"""Login throttling in this process's memory: the companion of the in-memory session store.

Counters are not shared between processes; with several instances use the Redis backend,
where every instance counts into the same keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prodio.session.throttle.base import (
    LockScope,
    LoginAttempt,
    ThrottleLimits,
    account_key,
    client_key,
)


class _Counter:
    __slots__ = ("count", "expires_at")

    def __init__(self, expires_at: float) -> None:
        self.count = 0
        self.expires_at = expires_at


class InMemoryLoginThrottle:
    """A :class:`~prodio.session.throttle.base.LoginThrottle` in one process.

    ``clock`` is monotonic seconds (tests pass their own). Every expiry is set to "now plus
    the window", so a counter whose expiry moves is moved to the end of the dict and the
    dict stays in expiry order: expired counters are always at its front, and each call
    drops them there, so memory follows the failures of the last window only.
    """

    def __init__(
        self, limits: ThrottleLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._counters: dict[str, _Counter] = {}

    def __len__(self) -> int:
        """How many counters are held (expired ones included until the next call)."""
        return len(self._counters)

    def _drop_expired(self, now: float) -> None:
        while self._counters:
            name, counter = next(iter(self._counters.items()))
            if counter.expires_at > now:
                return
            del self._counters[name]

    def _expire_in_window(self, name: str, counter: _Counter, now: float) -> None:
        counter.expires_at = now + self.limits.window
        # Re-inserting at the end keeps the dict in expiry order.
        self._counters.pop(name, None)
        self._counters[name] = counter

    def _names(self, attempt_account: str, attempt_client: str | None) -> list[str]:
        names = [f"a:{attempt_account}"]
        if attempt_client is not None:
            names.append(f"c:{attempt_client}")
        return names

    async def begin(self, username: str, client_host: str | None) -> LoginAttempt:
        now = self._clock()
        self._drop_expired(now)
        account, client = account_key(username), client_key(client_host)
        names = self._names(account, client)
        limits = (self.limits.max_failures, self.limits.max_failures_per_client)
        scopes: tuple[LockScope, LockScope] = ("account", "client")
        counts = [0, 0]
        refused_by: list[LockScope] = []
        retry_after = 0.0
        for index, name in enumerate(names):
            counter = self._counters.get(name)
            counts[index] = counter.count if counter is not None else 0
            if counter is not None and counter.count >= limits[index]:
                refused_by.append(scopes[index])
                retry_after = max(retry_after, counter.expires_at - now)
        if refused_by:
            return LoginAttempt(
                account,
                client,
                allowed=False,
                account_failures=counts[0],
                client_failures=counts[1],
                retry_after=retry_after,
                refused_by=tuple(refused_by),
            )
        locks: list[LockScope] = []
        for index, name in enumerate(names):
            counter = self._counters.get(name)
            if counter is None:
                counter = _Counter(now + self.limits.window)
                self._counters[name] = counter
            counter.count += 1
            counts[index] = counter.count
            if counter.count >= limits[index]:
                # The failure that reaches the limit locks for a whole window from now.
                self._expire_in_window(name, counter, now)
                locks.append(scopes[index])
        return LoginAttempt(
            account,
            client,
            allowed=True,
            account_failures=counts[0],
            client_failures=counts[1],
            locks=tuple(locks),
        )

    def _uncount(self, name: str) -> None:
        counter = self._counters.get(name)
        if counter is not None and counter.count > 0:
            counter.count -= 1

    async def succeeded(self, attempt: LoginAttempt) -> None:
        self._drop_expired(self._clock())
        self._counters.pop(f"a:{attempt.account}", None)
        if attempt.client is not None:
            self._uncount(f"c:{attempt.client}")

    async def abandon(self, attempt: LoginAttempt) -> None:
        self._drop_expired(self._clock())
        for name in self._names(attempt.account, attempt.client):
            self._uncount(name)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._counters.clear()
