"""The home page: the Gradio app with the registered tabs, at ``PRODIO_MOUNT_PATH``."""

from __future__ import annotations

from fastapi import FastAPI

from prodio.config import Settings
from prodio.pages.home import HomePage
from prodio.session.base import SessionStore
from prodio.ui.mount import mount_page
from prodio.uploads.base import UploadRegistry


def mount_home(
    app: FastAPI,
    settings: Settings,
    store: SessionStore,
    *,
    uploads: UploadRegistry | None = None,
) -> None:
    """Mount the home page on ``app``; call it last, after all other routes. ``uploads``:
    see :func:`prodio.ui.mount.mount_page`."""
    mount_page(app, settings, store, HomePage(), settings.mount_path, uploads=uploads)
