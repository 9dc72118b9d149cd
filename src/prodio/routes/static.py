"""Static files: ``/static/*``, plus ``/favicon.ico`` and ``/manifest.json`` at the root.

These are public (the auth middleware allowlists them) and carry no auth logic.

``/static/`` serves prodio's own files first and then Gradio's bundled static files
(fonts, images, the iframe resizer): a Gradio app mounted at ``/`` refers to those as
``/static/...``, a path this mount would otherwise hide from it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from prodio.ui.paths import STATIC_DIR, STATIC_URL

CACHE_CONTROL = "public, max-age=3600"
GRADIO_STATIC_PACKAGE = ("gradio", "templates/frontend/static")
STATIC_HEADERS = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}


class CachedStaticFiles(StaticFiles):
    """``StaticFiles`` that sends cache headers; never lists directories, never follows
    symlinks out of its directories, and refuses ``..`` (as ``StaticFiles`` does)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(STATIC_HEADERS)
        return response


def manifest(app_name: str | None) -> dict[str, Any]:
    """The web app manifest, named after the app when a name is given."""
    data: dict[str, Any] = json.loads((STATIC_DIR / "manifest.json").read_text("utf-8"))
    if app_name:
        data["name"] = app_name
        data["short_name"] = app_name[:12]
    return data


def mount_static(app: FastAPI, *, app_name: str | None = None) -> None:
    """Serve the package's static files at ``/static`` and the two root files.

    ``app_name``, when given, replaces the name in ``/manifest.json``.
    """
    app.mount(
        STATIC_URL,
        CachedStaticFiles(directory=STATIC_DIR, packages=[GRADIO_STATIC_PACKAGE]),
        name="static",
    )
    manifest_body = manifest(app_name)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "favicon.ico", media_type="image/x-icon", headers=STATIC_HEADERS
        )

    @app.get("/manifest.json", include_in_schema=False)
    async def web_manifest() -> JSONResponse:
        return JSONResponse(
            manifest_body, media_type="application/manifest+json", headers=STATIC_HEADERS
        )
