"""A second page with its own tabs, mounted at /tools (the example of docs/extending.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from fastapi import FastAPI

from prodio.config import Settings
from prodio.pages.base import Page, Tab
from prodio.pages.text_stats import TextStatsTab
from prodio.session.base import SessionStore
from prodio.ui.mount import mount_page
from prodio.uploads.base import UploadRegistry


class ToolsPage(Page):
    title = "Tools"
    tab_classes: ClassVar[Sequence[type[Tab]]] = (TextStatsTab,)


def mount_tools(
    app: FastAPI, settings: Settings, store: SessionStore, uploads: UploadRegistry | None
) -> None:
    # Before mount_home: a home page at "/" answers every path not claimed earlier.
    # With the upload registry, the files of this page's event outputs are their user's.
    mount_page(app, settings, store, ToolsPage(), "/tools", uploads=uploads)
