"""Each user's uploads are theirs: Gradio neither serves another user's upload nor hands it
to an event's handler.

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
* files nobody recorded (Gradio's outputs and cached files, examples, component assets,
  files whose record has ended) are left to Gradio's own rules, so the UI keeps working;
* ``GET /gradio_api/upload_progress?upload_id=`` reports the name and progress of an upload
  in flight: the upload id is recorded for the uploader as the upload starts, and another
  user asking for it gets Gradio's own "Upload not found".

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
from typing import Final
from urllib.parse import unquote, urlsplit

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
TOO_LARGE_DETAIL: Final = "The request is too large."
TOO_MANY_FILES_DETAIL: Final = "The request names too many files."
INVALID_JSON_DETAIL: Final = "Invalid JSON body."  # Gradio's words for a body it cannot read

# JSON's own spelling of the key every Gradio file object has. In UTF-8 a key "path" is
# these bytes, unless a letter of it is a \u escape; json.loads also reads UTF-16 and
# UTF-32 (told apart by their first bytes): a body without these bytes, without "\u" and
# in UTF-8 has no "path" key, and is not parsed.
_PATH_KEY: Final = b'"path"'
_ESCAPE: Final = b"\\u"

_UNAVAILABLE_TITLE = "Service unavailable"
_UNAVAILABLE_MESSAGE = "Uploads are temporarily unavailable. Please try again in a moment."


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("route objects here only match paths")  # pragma: no cover


class UploadOwnershipMiddleware:
    """Record who uploaded each file; refuse (404) another user's upload on Gradio's file
    routes and as an event's input. Sits behind authentication.

    Gradio's routes are recognised under any prefix (every page is a Gradio app mounted at
    a path of its own), so ``mount_path`` is not needed and only kept for callers that
    pass it. ``max_event_body`` bounds the body of an event read here (413 beyond).
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route_path = gradio_route_path(scope["path"])
        if route_path is None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method")
        if method == "POST" and self._events.match(route_path):
            await self._check_event(scope, receive, send)
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
                _audit_refusal(scope)
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
                _audit_refusal(scope)
                await send_response(send, 404, UPLOAD_NOT_FOUND, "text/plain; charset=utf-8")
                return
        await self.app(scope, receive, send)

    # -- event inputs ---------------------------------------------------------------------

    async def _check_event(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type, declared = _body_headers(scope)
        # Gradio reads a multipart body (component_server only) as form fields and file
        # bytes, never as FileData: nothing in it names a file on the server. On the other
        # routes FastAPI does not read it as JSON, and refuses it (422).
        if content_type.startswith(b"multipart/form-data"):
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
        if _may_name_a_file(body) and not await self._inputs_allowed(scope, send, body):
            return
        await self.app(scope, _replay(body, receive), send)

    async def _inputs_allowed(self, scope: Scope, send: Send, body: bytes) -> bool:
        """Whether the files that ``body`` names may reach a handler; if not, the refusal
        has been sent."""
        try:
            # The very parser Gradio (FastAPI, Starlette) reads the body with.
            document = json.loads(body)
        except ValueError:
            return True  # Gradio refuses it too, the same way (4xx): no handler runs
        except RecursionError:
            # Nested deeper than the parser goes here; whether it would go deeper in Gradio
            # depends on the stack, so it is refused rather than left to chance.
            await send_error(scope, send, 400, "Bad request", INVALID_JSON_DETAIL)
            return False
        keys = self._file_keys(document)
        if keys is None:
            await send_error(scope, send, 413, "Request too large", TOO_MANY_FILES_DETAIL)
            return False
        user = _user(scope)
        try:
            for key in keys:
                if await self.registry.ownership(user, key) is Ownership.OTHERS:
                    _audit_refusal(scope)
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


def _audit_refusal(scope: Scope) -> None:
    audit(
        EVENT_ACCESS_DENIED,
        FAILURE,
        scope,
        method=scope.get("method", "-"),
        status=404,
        reason=REASON_NOT_OWNER,
    )


async def _send_not_found(scope: Scope, send: Send) -> None:
    await send_error(scope, send, 404, "Not found", NOT_FOUND_DETAIL)


async def _send_unavailable(scope: Scope, send: Send) -> None:
    await send_error(
        scope, send, 503, _UNAVAILABLE_TITLE, _UNAVAILABLE_MESSAGE, [(b"retry-after", b"5")]
    )


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
