"""The home page: the tabs registered in :data:`prodio.pages.TABS`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from prodio.pages import TABS
from prodio.pages.base import Page, Tab


class HomePage(Page):
    """What a signed-in user sees at ``PRODIO_MOUNT_PATH``."""

    title = "Home"
    tab_classes: ClassVar[Sequence[type[Tab]]] = TABS
