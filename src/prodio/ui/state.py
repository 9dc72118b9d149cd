"""Per-user state for Gradio handlers, kept in the server-side session.

Handlers never hold user data in the Python process (no ``gr.State``, no globals): every
value lives in the session store under the session of the request, so any instance behind
a load balancer can answer any request, a reload finds the data again, and another user
never sees it.

Use :class:`UserState` (usually through the :meth:`UserState.namespace` view a tab gets)::

    notes = state.namespace("notepad")
    text = await notes.get(request, "text", default="")
    await notes.set(request, "text", "hello")
    saves = await notes.modify(request, "saves", lambda n: (n or 0) + 1)

A read-modify-write goes through :meth:`UserState.modify`, never ``get`` then ``set``: it
is one store call in the common case, and two tabs changing the same value at once both
count (a compare-and-set on the session's version, retried on a conflict).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar

import gradio as gr

from prodio.middleware.session import STATE_SESSION
from prodio.session.base import (
    JSONValue,
    Session,
    SessionChanged,
    SessionStore,
    SessionStoreUnavailable,
)

logger = logging.getLogger(__name__)

# Everything the UI stores sits under this prefix, apart from what the auth layer keeps in
# the same session (CSRF token and the like), so a page can never overwrite it.
STORAGE_PREFIX = "ui."

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")

SESSION_GONE_MESSAGE = "Your session has ended. Reload the page to sign in again."
STORE_DOWN_MESSAGE = "Your data cannot be reached right now. Please try again in a moment."
CONFLICT_MESSAGE = (
    "Your data was being changed elsewhere (another tab?) at the same moment, so this "
    "change was not made. Please try again."
)

# How many times UserState.modify tries its compare-and-set before giving up.
MAX_MODIFY_ATTEMPTS: Final = 5
_IMMUTABLE = (str, int, float, bool, type(None))


class SessionGone(Exception):
    """The request has no live session (logged out, expired or revoked meanwhile).

    The middleware rejects requests without a live session before any handler runs, so a
    handler sees this only when the session ends during the request, or when the Gradio app
    runs without prodio's session middleware (a setup error).
    """


class StateConflict(SessionChanged):
    """:meth:`UserState.modify` gave up: the session changed under each of its attempts."""


class InvalidStateKey(ValueError):
    """A state key does not have the ``namespace.name`` form."""


class NotJSON(ValueError):
    """A value given to :meth:`UserState.set` cannot be stored as JSON."""


def session_id_of(request: gr.Request | None) -> str:
    """The session id the middleware put on the request, or raise :class:`SessionGone`."""
    if request is None:
        raise SessionGone("no request: declare the handler parameter as `request: gr.Request`")
    state = getattr(request, "state", None)
    session_id = getattr(state, "session_id", None)
    if not isinstance(session_id, str) or not session_id:
        raise SessionGone(
            "the request carries no session id: is the Gradio app mounted behind "
            "prodio's session middleware?"
        )
    return session_id


def check_key(key: str) -> str:
    """Return ``key`` if it is ``namespace.name`` (lower case); else raise InvalidStateKey."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise InvalidStateKey(
            f"state key {key!r} must look like 'page.name': lower-case letters, digits "
            "and _, namespaced by the page (e.g. 'notepad.text')"
        )
    return key


def check_json(key: str, value: JSONValue) -> None:
    """Raise :class:`NotJSON` unless ``value`` survives a JSON round trip."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NotJSON(f"the value for {key!r} cannot be stored as JSON: {exc}") from None


class UserState:
    """Read and write the current user's values in their server-side session.

    ``UserState(store)`` takes full keys (``"notepad.text"``); :meth:`namespace` gives a
    view that prefixes its keys, which is what a tab normally uses. All methods take the
    ``gr.Request`` of the handler and raise :class:`SessionGone` when the session is no
    longer live, and :class:`~prodio.session.base.SessionStoreUnavailable` when the store
    cannot be reached.
    """

    def __init__(self, store: SessionStore, *, prefix: str = "") -> None:
        self.store = store
        self._prefix = prefix

    def namespace(self, name: str) -> UserState:
        """A view whose keys are ``f"{name}.{key}"``; ``name`` is e.g. the tab's slug."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidStateKey(
                f"namespace {name!r} must be lower-case letters, digits and _ "
                "(starting with a letter)"
            )
        return UserState(self.store, prefix=f"{self._prefix}{name}.")

    def _storage_key(self, key: str) -> str:
        return STORAGE_PREFIX + check_key(self._prefix + key)

    async def get(self, request: gr.Request, key: str, default: JSONValue = None) -> JSONValue:
        """The stored value of ``key``, or ``default`` if it was never set."""
        storage_key = self._storage_key(key)
        session = await self.store.load(session_id_of(request), touch=False)
        if session is None:
            raise SessionGone("the session ended")
        return session.data.get(storage_key, default)

    async def set(self, request: gr.Request, key: str, value: JSONValue) -> None:
        """Store ``value`` (any JSON value) under ``key``."""
        storage_key = self._storage_key(key)
        check_json(storage_key, value)
        if not await self.store.update(session_id_of(request), {storage_key: value}):
            raise SessionGone("the session ended")

    async def modify(
        self,
        request: gr.Request,
        key: str,
        change: Callable[[JSONValue], JSONValue],
        default: JSONValue = None,
    ) -> JSONValue:
        """Replace the value of ``key`` with ``change(current)`` and return what was stored.

        ``current`` is the stored value (``default`` if never set), read from the session
        snapshot the session middleware loaded for this request, so the common case costs
        one store call: a compare-and-set update against that snapshot's version. When the
        session changed meanwhile (another tab, another instance, or a snapshot from the
        near cache that was behind), the session is read again from the store and
        ``change`` runs again on what is there now: ``change`` may run more than once and
        must only compute (no side effects). After :data:`MAX_MODIFY_ATTEMPTS` conflicts it
        raises :class:`StateConflict` (a "try again" message under
        :func:`user_facing_errors`).
        """
        storage_key = self._storage_key(key)
        session_id = session_id_of(request)
        snapshot = request_state_value(request, STATE_SESSION)
        if not isinstance(snapshot, Session) or snapshot.id != session_id:
            # A Blocks used without prodio's middleware: no snapshot to start from.
            snapshot = await self._fresh_session(session_id)
        for attempt in range(1, MAX_MODIFY_ATTEMPTS + 1):
            current = snapshot.data.get(storage_key, default)
            if not isinstance(current, _IMMUTABLE):
                # ``change`` may edit its argument in place: never the snapshot's own value.
                current = copy.deepcopy(current)
            value = change(current)
            check_json(storage_key, value)
            try:
                applied = await self.store.update(
                    session_id, {storage_key: value}, expected_version=snapshot.version
                )
            except SessionChanged:
                if attempt == MAX_MODIFY_ATTEMPTS:
                    break
                snapshot = await self._fresh_session(session_id)
                continue
            if not applied:
                raise SessionGone("the session ended")
            # The request's snapshot follows the write, so that a second modify in the same
            # handler starts from the version it made rather than conflicting with itself.
            _remember_snapshot(
                request,
                dataclasses.replace(
                    snapshot,
                    data={**snapshot.data, storage_key: value},
                    version=snapshot.version + 1,
                ),
            )
            return value
        raise StateConflict(
            f"{storage_key!r} changed under each of {MAX_MODIFY_ATTEMPTS} attempts to change it"
        )

    async def _fresh_session(self, session_id: str) -> Session:
        """The session as the store holds it now (never a cached copy), or SessionGone."""
        session = await self.store.load(session_id, touch=False)
        if session is None:
            raise SessionGone("the session ended")
        return session

    async def delete(self, request: gr.Request, key: str) -> None:
        """Forget ``key``; deleting a key that was never set is not an error."""
        storage_key = self._storage_key(key)
        if not await self.store.update(session_id_of(request), remove=[storage_key]):
            raise SessionGone("the session ended")


P = ParamSpec("P")
R = TypeVar("R")


def user_facing_errors(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn session failures inside a handler into a short message for the user.

    Without it Gradio would print a traceback and the user would see a bare "Error".
    A :class:`SessionGone` becomes "sign in again"; a store outage becomes "try again" and
    is logged (without the session id, which is a credential); so does a change that kept
    conflicting with others (:class:`StateConflict`, any :class:`SessionChanged`).
    """

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except SessionGone:
            raise gr.Error(
                SESSION_GONE_MESSAGE, title="Signed out", print_exception=False
            ) from None
        except SessionStoreUnavailable as exc:
            logger.warning(
                "session store unavailable in %s: %s", getattr(handler, "__qualname__", "?"), exc
            )
            raise gr.Error(
                STORE_DOWN_MESSAGE, title="Temporarily unavailable", print_exception=False
            ) from None
        except SessionChanged as exc:
            logger.warning(
                "conflicting session writes in %s: %s", getattr(handler, "__qualname__", "?"), exc
            )
            raise gr.Error(CONFLICT_MESSAGE, title="Try again", print_exception=False) from None

    return wrapper


def request_state_value(request: gr.Request | None, name: str) -> Any:
    """An attribute the middleware set on ``request.state`` (``user``, ``session``...), or None."""
    if request is None:
        return None
    return getattr(getattr(request, "state", None), name, None)


def _remember_snapshot(request: gr.Request, session: Session) -> None:
    state = getattr(request, "state", None)
    if state is not None:
        setattr(state, STATE_SESSION, session)
