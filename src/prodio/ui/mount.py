"""Mount a page's Gradio app on the FastAPI app, with production options."""

from __future__ import annotations

from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound
from starlette.types import Receive, Scope, Send

from prodio.config import Settings
from prodio.pages.base import Page, Tab
from prodio.session.base import SessionStore
from prodio.telemetry import fastapi_telemetry
from prodio.ui.app import build_blocks
from prodio.ui.format import escape
from prodio.ui.loop import call_with_running_loop
from prodio.ui.paths import CSS_FILE, JS_FILE, asset_url
from prodio.ui.state import UserState
from prodio.ui.theme import prodio_theme
from prodio.uploads.base import UploadRegistry, cleanup_interval


def gradio_user(request: Request) -> str | None:
    """Gradio's ``auth_dependency``: the user prodio's middleware authenticated, or None.

    The middleware already refuses unauthenticated requests; this is defence in depth
    (Gradio answers 401 itself when it is None) and makes ``gr.Request.username`` work.
    """
    user = getattr(request.state, "user", None)
    return user if isinstance(user, str) and user else None


def page_head(settings: Settings) -> str:
    """What goes into the ``<head>`` of the Gradio page: stylesheet, icons, interceptor.

    The stylesheet is linked rather than passed as Gradio ``css``: Gradio rewrites custom
    CSS to scope it, which breaks the ``prefers-color-scheme`` rules the login page shares.
    """
    return "\n".join(
        [
            f'<link rel="stylesheet" href="{escape(asset_url(CSS_FILE))}">',
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">',
            '<link rel="alternate icon" href="/favicon.ico" sizes="32x32">',
            f'<meta name="application-name" content="{escape(settings.app_name)}">',
            f'<script src="{escape(asset_url(JS_FILE))}"></script>',
        ]
    )


def footer_links(settings: Settings) -> list[str]:
    """No footer, unless the API page is meant to be public."""
    return ["api"] if settings.show_api else []


def file_lifetime(settings: Settings) -> tuple[int, int]:
    """Gradio's ``delete_cache``: (seconds between sweeps, age at which a file goes).

    Gradio keeps the files it writes (uploads, outputs) forever unless told otherwise. A
    bounded lifetime is what lets an upload's ownership record (prodio.uploads) outlive
    the file it guards; Gradio also deletes them all when the instance shuts down.
    """
    return cleanup_interval(settings.upload_lifetime), settings.upload_lifetime


def mount_page(
    app: FastAPI,
    settings: Settings,
    store: SessionStore,
    page: Page,
    path: str,
    *,
    uploads: UploadRegistry | None = None,
) -> None:
    """Build ``page`` and mount it at ``path`` with the production options.

    ``uploads`` is the registry prodio's upload middleware checks files against: the files
    of each event's outputs are recorded there for the user who ran it
    (:class:`prodio.ui.blocks.ProdioBlocks`). Without it (a page mounted without that
    middleware, as in some tests) nothing is recorded.

    Call it after every other route of ``app``: a Gradio app mounted at ``/`` answers
    every path that no earlier route claimed.
    """
    tabs = page.tabs()
    call_with_running_loop(lambda: _mount(app, settings, store, page.title, tabs, path, uploads))


def _mount(
    app: FastAPI,
    settings: Settings,
    store: SessionStore,
    title: str,
    tabs: list[Tab],
    path: str,
    uploads: UploadRegistry | None,
) -> None:
    blocks = build_blocks(settings, UserState(store), tabs, title=title)
    # Read by mount_gradio_app when it builds the app's lifespan.
    blocks.delete_cache = file_lifetime(settings)
    blocks.output_registry = uploads
    gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth_dependency=gradio_user,
        app_kwargs={
            "openapi_url": None,
            "docs_url": None,
            "redoc_url": None,
            "telemetry": fastapi_telemetry(settings),
        },
        theme=prodio_theme(),
        head=page_head(settings),
        ssr_mode=False,
        run_history=False,
        show_error=False,
        max_file_size=settings.max_file_size,
        footer_links=footer_links(settings),
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
    )
    mounted = app.router.routes[-1]
    if isinstance(mounted, Mount):
        app.router.routes.insert(0, GradioApiShortcut(mounted, path))


class GradioApiShortcut(BaseRoute):
    """Sends requests for Gradio's API (``<mount>/gradio_api/...``) straight to the mount.

    The Gradio mount must come after every other route (at "/" it would shadow them), so
    each of Gradio's requests, the events included, was first tried against every route of
    the parent app; with FastAPI's route matching that walk cost more than prodio's whole
    middleware stack (``bench/``). No other route lives under Gradio's API prefix, so this
    route, placed first, answers exactly what the mount would have answered.
    """

    def __init__(self, mount: Mount, mount_path: str) -> None:
        self.mount = mount
        self.prefix = mount_path.rstrip("/") + "/gradio_api/"

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and path.startswith(self.prefix):
            return self.mount.matches(scope)
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.mount.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)
