"""A near cache for the Redis session store: most requests need no round trip to Redis.

Every request loads its session. With Redis that is a round trip costing more client CPU
than the rest of the request together (``bench/``), so each instance keeps the sessions it
read recently, and Redis tells every instance at once when one changes:

- the store's scripts give each session a *version* (the hash field ``v``) that every data
  change increments, and publish ``"<id> <version>"`` on the invalidation channel; a
  deletion (logout, revocation, logout everywhere) publishes ``"<id> -"``. A cached
  session answers with the version it holds (:attr:`Session.version`), so a compare-and-set
  update made from it fails with ``SessionChanged`` if Redis moved on; that failure tells
  the cache the current version, and the stale entry is never served again;
- each instance subscribes to that channel (:class:`InvalidationListener`) and forgets what
  it held of a session as soon as a newer version exists, or the session is gone. A
  deleted session is remembered as deleted (ids are never reused), so a revoked cookie
  costs no round trip either.

What keeps the cache from ever serving a session that Redis no longer has, or older data:

- *Versions, not arrival order.* A load that read version 6 may finish after the message
  announcing version 7 was handled; the message leaves a marker ("version 7 or newer
  only"), so the late version 6 is not kept.
- *Own updates.* An instance applies its own update to what it holds only when that is the
  data of exactly the version before the one the update made. The announcement of that
  version usually arrives first (on the subscription, the reply on another connection): it
  does not make the instance forget the data, but nothing is served until the reply says
  whose version it was.
- *Generations.* When the subscription breaks, messages may have been lost: the cache is
  emptied and stays off until the channel is subscribed again, and a load that started
  before the break is not kept when it finishes after it.
- *A bound on age.* An entry is used for at most ``max_age`` seconds after it was read from
  Redis, whatever happens to the channel (a partition that neither side noticed yet).
- *Expiry on the instance's clock.* A cached session is used only while its idle and
  absolute expiry (computed from Redis's timestamps) are ahead; an instance that is behind
  on the last activity only expires a session *earlier* and then asks Redis.

Only touching loads (the session middleware's check on every request) are answered from
the cache; a load without touch (a handler reading the data it acts on, ``UserState.get``)
always asks Redis and refreshes the cache. Messages take a moment to arrive: without this,
a browser that saved through one instance and reloaded through another could read its old
data there. Listing a user's sessions (the sessions page) always asks Redis too: what it
shows is what the user decides to end.

The idle timer still moves: a cached load that wants to touch the session goes to Redis
when the last recorded activity is older than ``touch_interval`` (a twentieth of the idle
timeout, at most a minute), so a session's idle expiry lags its real last use by at most
that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection

from prodio.session.base import Session
from prodio.session.values import decode_value

logger = logging.getLogger("prodio.session")

DELETED: Final = -1
DELETED_MARK: Final = "-"
# Seconds between liveness pings on the subscription, and silence that counts as a break.
PING_INTERVAL: Final = 1.0
SILENCE_LIMIT: Final = 3.0
RECONNECT_DELAY: Final = 0.5


@dataclass(slots=True)
class _Entry:
    # The newest version known to exist; DELETED once the session is gone for good.
    version: int
    # What Redis returned for that version (None: only the marker, nothing to serve).
    session: Session | None
    encoded: Mapping[str, str] | None
    fetched_at: float
    # True once ``version`` was announced while the entry held the one before it: the data
    # is then that of ``version - 1`` and is never served. It is kept for one purpose: the
    # announcement of this instance's own update usually arrives (on the subscription)
    # before the update's reply (on another connection), and the update can still be
    # applied on top of it when the reply says it made ``version``.
    behind: bool = False


class LocalSessionCache:
    """Recently read sessions of one instance, with the rules above. Not thread-safe: one
    event loop uses it."""

    def __init__(
        self,
        *,
        max_age: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age <= 0 or max_entries < 1:
            raise ValueError("the session cache needs a positive age and size")
        self.max_age = max_age
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.enabled = False
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def reset(self, *, enabled: bool) -> None:
        """Forget everything; a load begun before this is not kept when it finishes."""
        self._entries.clear()
        self.generation += 1
        self.enabled = enabled

    def get(self, session_id: str) -> tuple[Session | None, bool]:
        """``(session, True)`` when the cache can answer (``None`` meaning deleted), else
        ``(None, False)``: ask Redis."""
        if not self.enabled:
            return None, False
        entry = self._entries.get(session_id)
        if entry is None:
            return None, False
        if entry.version == DELETED:
            return None, True
        if entry.session is None or entry.encoded is None or entry.behind:
            return None, False
        if self._clock() - entry.fetched_at >= self.max_age:
            return None, False
        self._entries.move_to_end(session_id)
        cached = entry.session
        # A fresh copy of the data for every caller, as the store contract requires.
        data = {key: decode_value(value) for key, value in entry.encoded.items()}
        return Session(
            id=cached.id,
            username=cached.username,
            created_at=cached.created_at,
            last_seen=cached.last_seen,
            idle_expires_at=cached.idle_expires_at,
            absolute_expires_at=cached.absolute_expires_at,
            data=data,
            # The entry's, not the stored snapshot's: this instance's own updates move it.
            version=entry.version,
        ), True

    def put(
        self, session: Session, encoded: Mapping[str, str], version: int, generation: int
    ) -> None:
        """Keep what a load (begun in ``generation``) read, unless something newer is known."""
        if not self.enabled or generation != self.generation:
            return
        entry = self._entries.get(session.id)
        if entry is not None and (entry.version == DELETED or entry.version > version):
            return
        self._store(session.id, _Entry(version, session, dict(encoded), self._clock()))

    def updated(
        self,
        session_id: str,
        version: int,
        changes: Mapping[str, str],
        removals: tuple[str, ...],
    ) -> None:
        """This instance's own update made ``version``: apply it if the entry holds the data
        of exactly the version before it (the entry then answers with ``version`` and the
        new data), else only remember that ``version`` exists."""
        entry = self._entries.get(session_id)
        if (
            entry is not None
            and entry.session is not None
            and entry.encoded is not None
            and entry.version == (version if entry.behind else version - 1)
        ):
            encoded = {k: v for k, v in entry.encoded.items() if k not in removals}
            encoded.update((k, v) for k, v in changes.items() if k not in removals)
            entry.version = version
            entry.encoded = encoded
            entry.behind = False
            return
        self.invalidate(session_id, version)

    def invalidate(self, session_id: str, version: int) -> None:
        """``version`` of the session exists (or, with DELETED, the session is gone)."""
        if not self.enabled:
            return
        entry = self._entries.get(session_id)
        if entry is not None and (
            entry.version == DELETED or (version != DELETED and entry.version >= version)
        ):
            return
        if (
            entry is not None
            and entry.session is not None
            and not entry.behind
            and version == entry.version + 1
        ):
            # Perhaps this instance's own update, whose reply is still on its way.
            entry.version = version
            entry.behind = True
            return
        self._store(session_id, _Entry(version, None, None, self._clock()))

    def forget(self, session_id: str) -> None:
        self._entries.pop(session_id, None)

    def _store(self, session_id: str, entry: _Entry) -> None:
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def parse_invalidation(data: Any) -> tuple[str, int] | None:
    """``(session id, version or DELETED)`` from a channel message, or None if malformed."""
    if isinstance(data, bytes):
        data = data.decode("ascii", "replace")
    if not isinstance(data, str):
        return None
    session_id, _, version = data.partition(" ")
    if not session_id or not version:
        return None
    if version == DELETED_MARK:
        return session_id, DELETED
    if not version.isdigit():
        return None
    return session_id, int(version)


class _ResettingPubSub(PubSub):
    """redis-py's PubSub reconnects and subscribes again by itself after a broken
    connection; messages published in between are lost, so the cache must start over."""

    on_reconnect: Callable[[], None] = staticmethod(lambda: None)

    async def on_connect(self, connection: Connection) -> None:
        self.on_reconnect()
        await super().on_connect(connection)


class InvalidationListener:
    """Keeps a :class:`LocalSessionCache` subscribed to the invalidation channel.

    The cache is on only while the subscription is known to work: it is turned off and
    emptied whenever the connection fails or stays silent for :data:`SILENCE_LIMIT`
    seconds (pings every :data:`PING_INTERVAL`), and on again once subscribed anew.
    """

    def __init__(self, client: Redis, channel: str, cache: LocalSessionCache) -> None:
        self.client = client
        self.channel = channel
        self.cache = cache
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        """Start listening in the background, once (needs a running event loop)."""
        if self._stopping:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="prodio-session-invalidations"
            )

    async def wait_subscribed(self, within: float) -> bool:
        """For tests and start-up: whether the cache went on within ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), within)
        return self.cache.enabled

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True
        self.cache.reset(enabled=False)
        if task is None:
            return
        # Asked, not cancelled first: a cancellation that lands while redis-py waits for the
        # socket with a timeout can be swallowed by that timeout (Python 3.11), leaving the
        # task, and the shutdown waiting on it, hanging. The loop looks at the flag at least
        # every PING_INTERVAL.
        done, _ = await asyncio.wait({task}, timeout=2 * PING_INTERVAL)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=PING_INTERVAL)

    async def _run(self) -> None:
        outage_logged = False
        while not self._stopping:
            pubsub = _ResettingPubSub(self.client.connection_pool)
            pubsub.on_reconnect = lambda: self.cache.reset(enabled=False)
            try:
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            # Whatever failed (connection, protocol, a bug), the cache must not stay on.
            except Exception as exc:
                self.cache.reset(enabled=False)
                self._subscribed.clear()
                if not outage_logged:
                    logger.warning(
                        "session cache off: the invalidation channel failed (%s: %s); "
                        "every request asks Redis until it is back",
                        type(exc).__name__,
                        exc,
                    )
                    outage_logged = True
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if self._stopping:
                return
            await asyncio.sleep(RECONNECT_DELAY)
            if outage_logged and self.cache.enabled:
                outage_logged = False

    async def _listen(self, pubsub: _ResettingPubSub) -> None:
        await pubsub.subscribe(self.channel)
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        # When the ping still waiting for its answer was sent. Silence alone proves
        # nothing (the loop may have been too busy to read); an unanswered ping does.
        unanswered_since: float | None = None
        while not self._stopping:
            message = await pubsub.get_message(timeout=PING_INTERVAL)
            now = loop.time()
            if message is not None:
                # Anything the server sends proves the channel alive, the ping's answer
                # included, whatever shape redis-py gives it: under RESP3 (redis-py 8's
                # default) a PING on a subscribed connection is answered with a plain
                # "PONG", which PubSub.handle_message turns into a message of type "P".
                # Waiting for type "pong" alone turned the cache off every few seconds.
                unanswered_since = None
                kind = message.get("type")
                if kind == "subscribe":
                    # From here on no change can go unannounced: start from nothing.
                    self.cache.reset(enabled=True)
                    self._subscribed.set()
                    logger.info("session cache on")
                elif kind == "message":
                    parsed = parse_invalidation(message.get("data"))
                    if parsed is not None:
                        self.cache.invalidate(*parsed)
                continue
            if unanswered_since is not None and now - unanswered_since > SILENCE_LIMIT:
                raise ConnectionError(f"no answer on the channel for {SILENCE_LIMIT:g} s")
            if now - last_ping >= PING_INTERVAL:
                await pubsub.ping()
                last_ping = now
                if unanswered_since is None:
                    unanswered_since = now
