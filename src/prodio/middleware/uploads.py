"""Each user's uploads are theirs: Gradio's file routes refuse another user's upload.

Gradio 6.31 stores an upload at ``<GRADIO_TEMP_DIR>/<sha256 of its bytes>/<name>`` (the hash
is seeded with a value of the installation), answers
``POST /gradio_api/upload`` with those paths, and serves any file of its temp folder at
``GET /gradio_api/file=<path>`` (and the older ``/gradio_api/file/<path>``) to whoever asks,
signed in as anybody. This middleware, which runs behind authentication, closes that:

* **recording**: it reads the JSON answer of ``/gradio_api/upload`` (a short list of paths,
  never streamed: the only answer it ever holds back, and only up to
  :data:`MAX_UPLOAD_ANSWER_BYTES`) and records each path in the
  :class:`~prodio.uploads.base.UploadRegistry` as owned by the signed-in user before the
  answer goes out. If the record cannot be written the paths are not handed out (503).
  The same bytes uploaded under the same name by two users give one path, which both own.
* **checking**: a request that names a file on one of Gradio's file routes is matched and
  its path taken exactly as Gradio's router will (the same Starlette route templates), then
  canonicalised as Gradio opens it (:func:`~prodio.uploads.base.canonical_path`: every
  alias of a file, relative, ``..``, ``/proc/self/root/...``, is one name). A file recorded
  for other users only is answered **404**, as is every refusal of Gradio's on these routes
  (it answers 403 both for a file that does not exist and for one it will not serve), so
  a refusal never tells whether the file exists. It is audited (``access.denied``).
* files nobody recorded (Gradio's outputs and cached files, component assets, files whose
  record has ended) are left to Gradio's own rules, so the UI keeps working;
* ``GET /gradio_api/upload_progress?upload_id=`` reports the name and progress of an upload
  in flight: the upload id is recorded for the uploader as the upload starts, and another
  user asking for it gets Gradio's own "Upload not found".

Other requests pass untouched, their answers unbuffered (queue and progress streams are
Server-Sent Events).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Final

from starlette.datastructures import QueryParams
from starlette.routing import Match, Mount, Route
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
UPLOAD_ROUTE: Final = "/gradio_api/upload"
UPLOAD_PROGRESS_ROUTE: Final = "/gradio_api/upload_progress"
# (template, name of the parameter that holds the file's path)
FILE_ROUTES: Final = (
    ("/gradio_api/file={path_or_url:path}", "path_or_url"),
    ("/gradio_api/file/{path:path}", "path"),
)
# A thousand paths (Gradio's limit of files per upload) of 4 KiB (PATH_MAX) fit with room.
MAX_UPLOAD_ANSWER_BYTES: Final = 8 * 1024 * 1024
NOT_FOUND_DETAIL: Final = "File not found."
UPLOAD_NOT_FOUND: Final = b"Upload not found"  # Gradio's answer for an unknown upload id
REASON_NOT_OWNER: Final = "another user's upload"

_UNAVAILABLE_TITLE = "Service unavailable"
_UNAVAILABLE_MESSAGE = "Uploads are temporarily unavailable. Please try again in a moment."


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("route objects here only match paths")  # pragma: no cover


class UploadOwnershipMiddleware:
    """Record who uploaded each file; refuse (404) another user's upload on Gradio's file
    routes. Sits behind authentication, for the Gradio app mounted at ``mount_path``."""

    def __init__(self, app: ASGIApp, *, registry: UploadRegistry, mount_path: str = "/") -> None:
        self.app = app
        self.registry = registry
        # The same Mount Gradio's mount_gradio_app makes (app.mount(path, gradio_app)).
        self._mount = Mount(mount_path, app=_never_called)
        self._upload = Route(UPLOAD_ROUTE, _never_called, methods=["POST"])
        self._progress = Route(UPLOAD_PROGRESS_ROUTE, _never_called, methods=["GET"])
        self._files = [
            (Route(template, _never_called, methods=["GET"]), parameter)
            for template, parameter in FILE_ROUTES
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mounted, child = self._mount.matches(scope)
        if mounted is Match.NONE:
            await self.app(scope, receive, send)
            return
        inner = {**scope, **child}
        if self._upload.matches(inner)[0] is Match.FULL:
            await self._record_upload(scope, receive, send)
            return
        if self._progress.matches(inner)[0] is not Match.NONE:
            await self._check_progress(scope, receive, send)
            return
        for route, parameter in self._files:
            # A wrong method (PARTIAL) is checked too: whatever Gradio does with it.
            matched, params = route.matches(inner)
            if matched is not Match.NONE:
                path = params["path_params"][parameter]
                await self._check_file(scope, receive, send, str(path))
                return
        await self.app(scope, receive, send)

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
