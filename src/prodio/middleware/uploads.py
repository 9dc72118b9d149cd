"""Each user's uploads, outputs and Gradio sessions are theirs: Gradio neither serves
another user's file nor hands it to an event's handler, and never lets one user's request
into another user's Gradio session.

Gradio 6.31 stores an upload at ``<GRADIO_TEMP_DIR>/<sha256 of its bytes>/<name>`` (the hash
is seeded with a value of the installation), answers
``POST /gradio_api/upload`` with those paths, serves any file of its temp folder at
``GET /gradio_api/file=<path>`` (and the older ``/gradio_api/file/<path>``) to whoever asks,
signed in as anybody, and accepts any of those paths as an event's input file
(``{"path": <path>, "meta": {"_type": "gradio.FileData"}}`` in the request's JSON). This
middleware, which runs behind authentication, closes that:

* **recording**: it reads the JSON answer of ``/gradio_api/upload`` (a short list of paths,
  never streamed: the only answer it ever holds back, and only up to
  :data:`MAX_UPLOAD_ANSWER_BYTES`) and records each path in the
  :class:`~prodio.uploads.base.UploadRegistry` as owned by the signed-in user before the
  answer goes out. If the record cannot be written the paths are not handed out (503).
  The same bytes uploaded under the same name by two users give one path, which both own.
* **serving**: a request that names a file on one of Gradio's file routes is matched and
  its path taken exactly as Gradio's router will (the same Starlette route templates), then
  canonicalised as Gradio opens it (:func:`~prodio.uploads.base.canonical_path`: every
  alias of a file, relative, ``..``, ``/proc/self/root/...``, is one name). A file recorded
  for other users only is answered **404**, as is every refusal of Gradio's on these routes
  (it answers 403 both for a file that does not exist and for one it will not serve), so
  a refusal never tells whether the file exists. It is audited (``access.denied``).
* **event inputs**: a POST to one of Gradio's routes that run a handler on the request's
  data (:data:`EVENT_ROUTES`) has its body read (up to ``max_event_body`` bytes, 413
  beyond) and handed on unchanged. A body that holds the bytes ``"path"`` (or could spell
  them otherwise: ``\\u`` escapes, UTF-16/32) is parsed as Gradio will parse it, and every
  file it names (the ``path`` of any object that has one, at any depth, and the file of a
  Gradio file URL in its ``path`` or ``url``) is checked as above: another user's upload
  gets the same 404 and the handler never runs. Most events name no file and are not
  parsed at all.
* **event outputs** are recorded too, by :class:`prodio.ui.blocks.ProdioBlocks` (the files
  Gradio wrote for an event belong to the user who ran it), and refused to others as
  uploads are;
* files nobody recorded (cached files, examples, component assets and values of the page's
  configuration, files whose record has ended) are left to Gradio's own rules, so the UI
  keeps working;
* ``GET /gradio_api/upload_progress?upload_id=`` reports the name and progress of an upload
  in flight: the upload id is recorded for the uploader as the upload starts, and another
  user asking for it gets Gradio's own "Upload not found".

**Gradio sessions.** Gradio keeps a browser tab's state (``gr.State``, the values of its
components, its event queue and the stream of its results, its media streams) under a
``session_hash`` the browser makes up, and trusts whoever sends it. The first request that
uses a hash binds it to its user in the registry
(:meth:`~prodio.uploads.base.UploadRegistry.bind_session`); a request of another user with
the same hash gets a 404 (``{"detail": "Not Found"}``, audited ``access.denied``, reason
"another user's Gradio session") and never reaches Gradio. The hash is read where Gradio
reads it (:data:`SESSION_QUERY_ROUTES`, :data:`SESSION_PATH_ROUTES`,
:data:`SESSION_BODY_ROUTES`): from the query or the path with Starlette's own parsing, and
from the top level of an event's JSON body. A browser puts ``"session_hash"`` last in its
bodies, and a body that ends with it has its hash read from that end without parsing it
(:func:`_event_session_hash`); any other body that may hold the key is parsed (once, with
the file check). A multipart ``component_server`` body is read (up to ``max_event_body``)
and its ``session_hash`` field found as Gradio's form parser finds it. A registry that
does not answer gives 503.

Gradio's routes are recognised under every mount (``<mount>/gradio_api/...``): every page
(``prodio.ui.mount.mount_page``) is a Gradio app of its own, and all of them share one temp
folder. Other requests pass untouched, their answers unbuffered (queue and progress
streams are Server-Sent Events); no answer but the upload's is ever held back.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import QueryParams
from starlette.routing import Match, Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.audit import EVENT_ACCESS_DENIED, FAILURE, audit
from prodio.middleware.auth import STATE_USER
from prodio.middleware.http import send_error, send_response
from prodio.uploads.base import (
    Ownership,
    UploadRegistry,
    UploadRegistryUnavailable,
    file_key,
    progress_key,
)

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

logger = logging.getLogger("prodio.uploads")

# Gradio's own route templates (gradio/routes.py, under API_PREFIX): matched with Starlette's
# routing code, they yield exactly the path parameter Gradio's handler will get.
API_PREFIX: Final = "/gradio_api/"
UPLOAD_ROUTE: Final = "/gradio_api/upload"
UPLOAD_PROGRESS_ROUTE: Final = "/gradio_api/upload_progress"
# (template, name of the parameter that holds the file's path)
FILE_ROUTES: Final = (
    ("/gradio_api/file={path_or_url:path}", "path_or_url"),
    ("/gradio_api/file/{path:path}", "path"),
)
# The routes whose handler runs on data of the request's body (POST only; Gradio turns the
# FileData objects of it into the handler's files). /stream/{event_id} delivers the next
# chunk of a streaming input. /cancel, /reset and /stream/{event_id}/close carry no data.
EVENT_ROUTES: Final = (
    "/gradio_api/run/{api_name}",
    "/gradio_api/run/{api_name}/",
    "/gradio_api/api/{api_name}",
    "/gradio_api/api/{api_name}/",
    "/gradio_api/call/{api_name}",
    "/gradio_api/call/{api_name}/",
    "/gradio_api/call/v2/{api_name}",
    "/gradio_api/call/v2/{api_name}/",
    "/gradio_api/queue/join",
    "/gradio_api/stream/{event_id}",
    "/gradio_api/component_server",
    "/gradio_api/component_server/",
)
# Where Gradio reads a session hash (gradio/routes.py): the query of these GET routes...
SESSION_QUERY_ROUTES: Final = ("/gradio_api/queue/data", "/gradio_api/deep_link")
# ... the path of these (a tab's heartbeat, and its media streams)...
SESSION_PATH_ROUTES: Final = (
    "/gradio_api/heartbeat/{session_hash}",
    "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist.m3u8",
    "/gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}",
    "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file",
)
# ... and the body of these POST routes: every event route but /call/v2/ (it reads the body
# as the endpoint's named parameters and drops any session hash), and /cancel (it cancels
# the session's running event and ends its stream).
SESSION_BODY_ROUTES: Final = (
    *(route for route in EVENT_ROUTES if not route.startswith("/gradio_api/call/v2/")),
    "/gradio_api/cancel",
)
# The one route that also reads a multipart body, and its session hash among the fields.
FORM_SESSION_ROUTES: Final = ("/gradio_api/component_server", "/gradio_api/component_server/")
SESSION_HASH: Final = "session_hash"
# A thousand paths (Gradio's limit of files per upload) of 4 KiB (PATH_MAX) fit with room.
MAX_UPLOAD_ANSWER_BYTES: Final = 8 * 1024 * 1024
# Gradio sets no limit on an event's JSON body (PRODIO_MAX_FILE_SIZE bounds multipart
# uploads only); this one is above the default PRODIO_MAX_FILE_SIZE, far above any event of
# a text field or a chat, and keeps what a request can make an instance hold bounded.
MAX_EVENT_BODY_BYTES: Final = 16 * 1024 * 1024
# Distinct file names one event may hold: ten times the files of a whole upload. Each costs
# a stat call (and a registry look-up if it exists), so a body of junk names stays cheap.
MAX_EVENT_FILES: Final = 10_000
NOT_FOUND_DETAIL: Final = "File not found."
UPLOAD_NOT_FOUND: Final = b"Upload not found"  # Gradio's answer for an unknown upload id
REASON_NOT_OWNER: Final = "another user's upload"
REASON_NOT_SESSION_OWNER: Final = "another user's Gradio session"
# What Gradio (FastAPI) answers for a route or session it does not have.
SESSION_NOT_FOUND_DETAIL: Final = "Not Found"
TOO_LARGE_DETAIL: Final = "The request is too large."
TOO_MANY_FILES_DETAIL: Final = "The request names too many files."
INVALID_JSON_DETAIL: Final = "Invalid JSON body."  # Gradio's words for a body it cannot read

# JSON's own spelling of the key every Gradio file object has. In UTF-8 a key "path" is
# these bytes, unless a letter of it is a \u escape; json.loads also reads UTF-16 and
# UTF-32 (told apart by their first bytes): a body without these bytes, without "\u" and
# in UTF-8 has no "path" key, and is not parsed.
_PATH_KEY: Final = b'"path"'
_ESCAPE: Final = b"\\u"
_SESSION_KEY: Final = b'"session_hash"'
# A JSON object whose last member is "session_hash" with a string value, from that key to
# the end: JSON's whitespace, the string (an unrolled loop: no backtracking), the object's
# closing brace. In a body that is one JSON object (Gradio refuses any other), that brace
# closes the top-level object, so the member is top-level, and the last of its name (the
# one json.loads keeps).
_TRAILING_SESSION_HASH: Final = re.compile(
    rb'"session_hash"[ \t\n\r]*:[ \t\n\r]*"([^"\\]*(?:\\.[^"\\]*)*)"[ \t\n\r]*\}[ \t\n\r]*',
    re.DOTALL,
)

_UNAVAILABLE_TITLE = "Service unavailable"
_UNAVAILABLE_MESSAGE = "Uploads are temporarily unavailable. Please try again in a moment."
_SESSION_UNAVAILABLE_MESSAGE = "The app is temporarily unavailable. Please try again in a moment."


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("route objects here only match paths")  # pragma: no cover


class UploadOwnershipMiddleware:
    """Record who uploaded each file; refuse (404) another user's upload or output on
    Gradio's file routes and as an event's input, and any request into another user's
    Gradio session. Sits behind authentication.

    Gradio's routes are recognised under any prefix (every page is a Gradio app mounted at
    a path of its own), so ``mount_path`` is not needed and only kept for callers that
    pass it. ``max_event_body`` bounds the body of an event read here (413 beyond), the
    multipart body of ``component_server`` included.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: UploadRegistry,
        mount_path: str = "/",
        max_event_body: int = MAX_EVENT_BODY_BYTES,
    ) -> None:
        self.app = app
        self.registry = registry
        self.mount_path = mount_path
        self.max_event_body = max_event_body
        self._upload = Route(UPLOAD_ROUTE, _never_called, methods=["POST"])
        self._progress = Route(UPLOAD_PROGRESS_ROUTE, _never_called, methods=["GET"])
        self._files = [
            (Route(template, _never_called, methods=["GET"]), parameter)
            for template, parameter in FILE_ROUTES
        ]
        self._events = any_route_pattern(EVENT_ROUTES)
        self._form_sessions = any_route_pattern(FORM_SESSION_ROUTES)
        self._session_bodies = any_route_pattern(SESSION_BODY_ROUTES)
        self._session_queries = any_route_pattern(SESSION_QUERY_ROUTES)
        self._session_paths = any_route_pattern(SESSION_PATH_ROUTES)
        self._session_path_routes = [
            Route(template, _never_called, methods=["GET"]) for template in SESSION_PATH_ROUTES
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route_path = gradio_route_path(scope["path"])
        if route_path is None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method")
        if method == "POST":
            names_files = self._events.match(route_path) is not None
            names_session = self._session_bodies.match(route_path) is not None
            if names_files or names_session:
                await self._check_event(
                    scope,
                    receive,
                    send,
                    route_path,
                    names_files=names_files,
                    names_session=names_session,
                )
                return
        session_hash = self._session_in_url(scope, route_path)
        if session_hash is not None:
            if await self._session_allowed(scope, send, session_hash):
                await self.app(scope, receive, send)
            return
        inner: Scope = {"type": "http", "path": route_path, "method": method}
        if self._upload.matches(inner)[0] is Match.FULL:
            await self._record_upload(scope, receive, send)
            return
        if self._progress.matches(inner)[0] is not Match.NONE:
            await self._check_progress(scope, receive, send)
            return
        path = self._routed_file(inner)
        if path is not None:
            await self._check_file(scope, receive, send, path)
            return
        await self.app(scope, receive, send)

    def _session_in_url(self, scope: Scope, route_path: str) -> str | None:
        """The session hash a request names in its query or path, as Gradio reads it."""
        if self._session_queries.match(route_path):
            # FastAPI hands Gradio the last value of a repeated parameter.
            values = QueryParams(scope.get("query_string", b"")).getlist(SESSION_HASH)
            return values[-1] if values else None
        if self._session_paths.match(route_path):
            inner: Scope = {"type": "http", "path": route_path, "method": "GET"}
            for route in self._session_path_routes:
                matched, params = route.matches(inner)
                if matched is not Match.NONE:
                    return str(params["path_params"][SESSION_HASH])
        return None

    async def _session_allowed(self, scope: Scope, send: Send, session_hash: str) -> bool:
        """Whether the request may use the Gradio session ``session_hash`` (binding it to
        the user if it is nobody's yet); if not, the refusal has been sent."""
        try:
            ownership = await self.registry.bind_session(_user(scope), session_hash)
        except UploadRegistryUnavailable:
            logger.warning("upload registry unavailable: a Gradio session could not be checked")
            await _send_unavailable(scope, send, _SESSION_UNAVAILABLE_MESSAGE)
            return False
        if ownership is Ownership.OTHERS:
            _audit_refusal(scope, REASON_NOT_SESSION_OWNER)
            await send_error(scope, send, 404, "Not found", SESSION_NOT_FOUND_DETAIL)
            return False
        return True

    def _routed_file(self, inner: Scope) -> str | None:
        """The path a request for ``inner`` (a Gradio route path) asks a file route for."""
        for route, parameter in self._files:
            # A wrong method (PARTIAL) is checked too: whatever Gradio does with it.
            matched, params = route.matches(inner)
            if matched is not Match.NONE:
                return str(params["path_params"][parameter])
        return None

    # -- serving ----------------------------------------------------------------------

    async def _check_file(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        user = _user(scope)
        key = file_key(path)
        if key is not None:
            try:
                ownership = await self.registry.ownership(user, key)
            except UploadRegistryUnavailable:
                logger.warning("upload registry unavailable: a file was not served")
                await _send_unavailable(scope, send)
                return
            if ownership is Ownership.OTHERS:
                _audit_refusal(scope, REASON_NOT_OWNER)
                await _send_not_found(scope, send)
                return
        await self.app(scope, receive, _refusals_as_not_found(scope, send))

    async def _check_progress(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI hands Gradio the last value of a repeated parameter: that one is checked.
        upload_ids = QueryParams(scope.get("query_string", b"")).getlist("upload_id")
        if upload_ids:
            try:
                ownership = await self.registry.ownership(
                    _user(scope), progress_key(upload_ids[-1])
                )
            except UploadRegistryUnavailable:
                logger.warning("upload registry unavailable: an upload's progress was not shown")
                await _send_unavailable(scope, send)
                return
            if ownership is Ownership.OTHERS:
                _audit_refusal(scope, REASON_NOT_OWNER)
                await send_response(send, 404, UPLOAD_NOT_FOUND, "text/plain; charset=utf-8")
                return
        await self.app(scope, receive, send)

    # -- event inputs ---------------------------------------------------------------------

    async def _check_event(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route_path: str,
        *,
        names_files: bool,
        names_session: bool,
    ) -> None:
        content_type, declared = _body_headers(scope)
        # Gradio reads a multipart body (component_server only) as form fields and file
        # bytes, never as FileData: nothing in it names a file on the server, only its
        # session. On the other routes FastAPI does not read it as JSON, and refuses it (422).
        multipart = content_type.startswith(b"multipart/form-data")
        if multipart and not (names_session and self._form_sessions.match(route_path)):
            await self.app(scope, receive, send)
            return
        if declared > self.max_event_body:
            await send_error(scope, send, 413, "Request too large", TOO_LARGE_DETAIL)
            return
        try:
            body = await _read_body(receive, self.max_event_body)
        except _ClientGone:
            return  # nobody is left to answer, and the handler must not run on part of it
        if body is None:
            await send_error(scope, send, 413, "Request too large", TOO_LARGE_DETAIL)
            return
        document: object = _NOT_PARSED
        session_hash: str | None = None
        try:
            if multipart:
                session_hash = _multipart_session_hash(content_type, body)
            else:
                if names_files and _may_name_a_file(body):
                    # The very parser Gradio (FastAPI, Starlette) reads the body with.
                    document = _parse(body)
                if names_session:
                    session_hash = (
                        _event_session_hash(body)
                        if document is _NOT_PARSED
                        else _top_level_session_hash(document)
                    )
        except RecursionError:
            # Nested deeper than the parser goes here; whether it would go deeper in Gradio
            # depends on the stack, so it is refused rather than left to chance.
            await send_error(scope, send, 400, "Bad request", INVALID_JSON_DETAIL)
            return
        if session_hash is not None and not await self._session_allowed(scope, send, session_hash):
            return
        if document is not _NOT_PARSED and not await self._inputs_allowed(scope, send, document):
            return
        await self.app(scope, _replay(body, receive), send)

    async def _inputs_allowed(self, scope: Scope, send: Send, document: object) -> bool:
        """Whether the files that ``document`` (an event's parsed body) names may reach a
        handler; if not, the refusal has been sent."""
        if document is _UNREADABLE:
            return True  # Gradio refuses it too, the same way (4xx): no handler runs
        keys = self._file_keys(document)
        if keys is None:
            await send_error(scope, send, 413, "Request too large", TOO_MANY_FILES_DETAIL)
            return False
        user = _user(scope)
        try:
            for key in keys:
                if await self.registry.ownership(user, key) is Ownership.OTHERS:
                    _audit_refusal(scope, REASON_NOT_OWNER)
                    await _send_not_found(scope, send)
                    return False
        except UploadRegistryUnavailable:
            logger.warning("upload registry unavailable: an event with files was refused")
            await _send_unavailable(scope, send)
            return False
        return True

    def _file_keys(self, document: object) -> set[str] | None:
        """The registry keys of the existing files ``document`` names; None for too many."""
        names: set[str] = set()
        for name in _file_names(document):
            names.add(name)
            routed = self._file_in_url(name)
            if routed is not None:
                names.add(routed)
            if len(names) > MAX_EVENT_FILES:
                return None
        keys: set[str] = set()
        for name in names:
            # A name that opens nothing (missing, NUL, longer than PATH_MAX, a remote URL)
            # is no upload of anybody's, and one stat call is all that junk costs.
            if os.path.exists(name):
                key = file_key(name)
                if key is not None:
                    keys.add(key)
        return keys

    def _file_in_url(self, name: str) -> str | None:
        """The file a Gradio file URL names (``[origin]<mount>/gradio_api/file=<path>``, as
        a FileData ``url`` holds it), taken as the file route takes it; None for others."""
        if API_PREFIX not in name:
            return None
        try:
            route_path = gradio_route_path(unquote(urlsplit(name).path))
        except ValueError:
            return None
        if route_path is None:
            return None
        return self._routed_file({"type": "http", "path": route_path, "method": "GET"})

    # -- uploading --------------------------------------------------------------------

    async def _record_upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = _user(scope)
        if user is None:
            # Unreachable behind the auth middleware; Gradio refuses it (401) by itself.
            await self.app(scope, receive, send)
            return
        upload_ids = QueryParams(scope.get("query_string", b"")).getlist("upload_id")
        if upload_ids:
            try:
                # Before the upload starts: its progress stream opens alongside it.
                await self.registry.record(user, [progress_key(upload_ids[-1])])
            except UploadRegistryUnavailable:
                logger.warning("upload registry unavailable: an upload was refused")
                await _send_unavailable(scope, send)
                return
        answer = _HeldUploadAnswer(scope, send, user, self.registry)
        # An encoded answer could not be read; the list of paths gains nothing from it.
        await self.app(_without_accept_encoding(scope), receive, answer.send)


class _HeldUploadAnswer:
    """The ``send`` for an upload: holds a successful answer back until its paths are
    recorded; passes anything else (an error) straight through."""

    def __init__(self, scope: Scope, send: Send, user: str, registry: UploadRegistry) -> None:
        self.scope = scope
        self.downstream = send
        self.user = user
        self.registry = registry
        self.start: Message | None = None
        self.body = bytearray()
        self.too_large = False
        self.passing = False
        self.done = False

    async def send(self, message: Message) -> None:
        if self.passing:
            await self.downstream(message)
            return
        if self.done:
            return
        if message["type"] == "http.response.start":
            if message["status"] != 200:
                self.passing = True
                await self.downstream(message)
                return
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.downstream(message)
            return
        chunk = message.get("body", b"")
        if len(self.body) + len(chunk) > MAX_UPLOAD_ANSWER_BYTES:
            self.too_large = True
            self.body.clear()
        elif not self.too_large:
            self.body += chunk
        if message.get("more_body", False):
            return
        self.done = True
        await self._finish(self.start)

    async def _finish(self, start: Message) -> None:
        paths = None if self.too_large else _uploaded_paths(start, bytes(self.body))
        if paths is None:
            logger.error("an upload answer could not be read: its files were not handed out")
            await send_error(
                self.scope, self.downstream, 500, "Upload failed", "The upload did not complete."
            )
            return
        keys = [key for key in map(file_key, paths) if key is not None]
        try:
            await self.registry.record(self.user, keys)
        except UploadRegistryUnavailable:
            logger.warning("upload registry unavailable: an upload was not handed out")
            await _send_unavailable(self.scope, self.downstream)
            return
        await self.downstream(start)
        await self.downstream({"type": "http.response.body", "body": bytes(self.body)})


def _uploaded_paths(start: Message, body: bytes) -> list[str] | None:
    """The paths of Gradio's upload answer (a JSON list of strings); None if it is not one."""
    headers = {bytes(name).lower(): bytes(value) for name, value in start.get("headers", ())}
    if headers.get(b"content-encoding", b"identity").strip().lower() != b"identity":
        return None
    try:
        paths = json.loads(body)
    except ValueError:
        return None
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        return None
    return paths


# -- reading an event ----------------------------------------------------------------------


def gradio_route_path(path: str) -> str | None:
    """The part of ``path`` that Gradio's router matches (``/gradio_api/...``, whatever
    the mount before it), or None when it names no Gradio route. A page is never mounted
    at a path that holds ``/gradio_api/`` itself, so the first one starts Gradio's part."""
    index = path.find(API_PREFIX)
    return None if index < 0 else path[index:]


def any_route_pattern(templates: Sequence[str]) -> re.Pattern[str]:
    """One regular expression that matches a path when one of Starlette's routes for
    ``templates`` would: their own patterns (``compile_path``), parameter names dropped so
    that they can be alternatives, and the same ``$`` (which matches before a final
    newline too)."""
    parts = []
    for template in templates:
        pattern = compile_path(template)[0].pattern
        parts.append(re.sub(r"\(\?P<\w+>", "(?:", pattern.removeprefix("^").removesuffix("$")))
    return re.compile("^(?:" + "|".join(parts) + ")$")


def _may_name_a_file(body: bytes) -> bool:
    """Whether ``body`` may hold a ``"path"`` key once parsed; never False when it does."""
    # json.detect_encoding reads UTF-8 unless the body starts with a UTF-16/32 byte order
    # mark (0xFE, 0xFF or 0x00 first) or has a NUL among its first four bytes.
    return (
        _PATH_KEY in body
        or _ESCAPE in body
        or b"\x00" in body[:4]
        or body.startswith((b"\xfe", b"\xff"))
    )


class _Marker:
    """A value no JSON document can be."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_NOT_PARSED: Final = _Marker("not parsed")
_UNREADABLE: Final = _Marker("not JSON")


def _parse(body: bytes) -> object:
    """``body`` as json.loads reads it (the parser Gradio, FastAPI and Starlette use), or
    :data:`_UNREADABLE` if it cannot (Gradio refuses it too). Raises RecursionError."""
    try:
        return json.loads(body)
    except ValueError:
        return _UNREADABLE


def _is_utf_8_json(body: bytes) -> bool:
    """Whether json.loads reads ``body`` as UTF-8 (json.detect_encoding: UTF-16/32 start
    with a byte order mark, 0xFE or 0xFF, or have a NUL among their first four bytes)."""
    return not (b"\x00" in body[:4] or body.startswith((b"\xfe", b"\xff")))


def _event_session_hash(body: bytes) -> str | None:
    """The ``session_hash`` at the top level of the JSON object ``body``, as Gradio will
    read it; None when it has none that is a string (Gradio refuses any other, or reads
    none). Raises RecursionError for a body too deep to parse.

    A browser's body ends with its ``"session_hash"`` member: then its value is read from
    that end (its last occurrence, found from the end), without parsing the body. Only a
    body that holds the key elsewhere, or could spell it otherwise (``\\u`` escapes,
    UTF-16/32), is parsed.
    """
    utf_8 = _is_utf_8_json(body)
    if utf_8:
        index = body.rfind(_SESSION_KEY)
        if index >= 0:
            trailing = _TRAILING_SESSION_HASH.fullmatch(body, index)
            if trailing is not None:
                value = trailing.group(1)
                try:
                    if b"\\" not in value:
                        return value.decode("utf-8", "surrogatepass")
                    decoded = json.loads(b'"' + value + b'"')
                except ValueError:
                    decoded = None  # not JSON here: parsed whole below, as Gradio would
                if isinstance(decoded, str):
                    return decoded
        elif _ESCAPE not in body:
            return None  # no "session_hash" key can be in it
    return _top_level_session_hash(_parse(body))


def _top_level_session_hash(document: object) -> str | None:
    if isinstance(document, dict):
        value = document.get(SESSION_HASH)
        if isinstance(value, str):
            return value
    return None


def _multipart_session_hash(content_type: bytes, body: bytes) -> str | None:
    """The ``session_hash`` form field of a multipart body, as Gradio's form parser
    (``gradio.route_utils.GradioMultiPartParser`` on python-multipart) finds it: the last
    part without a file name whose name is ``session_hash``. None when there is none or
    the body cannot be parsed (Gradio refuses it then)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        return None
    charset = options.get(b"charset", b"utf-8").decode("latin-1")
    fields = _SessionHashField(charset)
    parser = MultipartParser(boundary, fields.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError, KeyError):
        return None
    return fields.value


class _SessionHashField:
    """python-multipart callbacks that keep the value of the last ``session_hash`` field,
    with the header and decoding rules of Gradio's parser (and nothing of the files)."""

    def __init__(self, charset: str) -> None:
        self.charset = charset
        self.value: str | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._data = bytearray()
        self._keep = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._data.clear()
        self._keep = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        self._keep = (
            name is not None
            and b"filename" not in options
            and _user_safe_decode(name, self.charset) == SESSION_HASH
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keep:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._keep:
            self.value = _user_safe_decode(bytes(self._data), self.charset)


def _user_safe_decode(data: bytes, charset: str) -> str:
    """Starlette's (and Gradio's) decoding of a form field: ``charset``, else Latin-1."""
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


def _file_names(document: object) -> Iterator[str]:
    """The ``path`` of every object in ``document`` that has a string one (Gradio's FileData,
    at any depth, and anything that looks like it), and the ``url`` beside it."""
    stack = [document]
    while stack:  # not recursive: a document is as deep as json.loads allows
        value = stack.pop()
        if isinstance(value, dict):
            path = value.get("path")
            if isinstance(path, str):
                yield path
                url = value.get("url")
                if isinstance(url, str):
                    yield url
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _body_headers(scope: Scope) -> tuple[bytes, int]:
    """The first ``Content-Type`` (the one Gradio reads) and the declared length of the
    body (0 if none or not a number: the body is counted as it is read all the same)."""
    content_type: bytes | None = None
    length: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length" and length is None:
            length = value
    declared = int(length) if length is not None and length.isdigit() else 0  # ASCII digits
    return content_type or b"", declared


class _ClientGone(Exception):
    """The client disconnected before its request's body was complete."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None when it is longer than ``limit`` (the rest unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body already read, then the client's own messages (a
    disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# -- helpers -------------------------------------------------------------------------------


def _user(scope: Scope) -> str | None:
    user = scope.get("state", {}).get(STATE_USER)
    return user if isinstance(user, str) and user else None


def _without_accept_encoding(scope: Scope) -> Scope:
    headers: Sequence[tuple[bytes, bytes]] = scope.get("headers", ())
    return {**scope, "headers": [(k, v) for k, v in headers if k != b"accept-encoding"]}


def _audit_refusal(scope: Scope, reason: str) -> None:
    audit(
        EVENT_ACCESS_DENIED,
        FAILURE,
        scope,
        method=scope.get("method", "-"),
        status=404,
        reason=reason,
    )


async def _send_not_found(scope: Scope, send: Send) -> None:
    await send_error(scope, send, 404, "Not found", NOT_FOUND_DETAIL)


async def _send_unavailable(scope: Scope, send: Send, message: str = _UNAVAILABLE_MESSAGE) -> None:
    await send_error(scope, send, 503, _UNAVAILABLE_TITLE, message, [(b"retry-after", b"5")])


def _refusals_as_not_found(scope: Scope, send: Send) -> Send:
    """``send`` with Gradio's 403 (a file that does not exist, or that it will not serve)
    turned into the same 404 as another user's file: no answer tells them apart."""
    replaced = False

    async def send_refusals_as_not_found(message: Message) -> None:
        nonlocal replaced
        if replaced:
            return
        if message["type"] == "http.response.start" and message["status"] == 403:
            replaced = True
            await _send_not_found(scope, send)
            return
        await send(message)

    return send_refusals_as_not_found
