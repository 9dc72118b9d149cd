"""Pages and their tabs.

``TABS`` lists the tabs of the home page, in display order. To add a tab, write a
:class:`~prodio.pages.base.Tab` subclass in a new module here and add its class to
``TABS`` (see docs/extending.md).
"""

from prodio.pages.account import AccountTab
from prodio.pages.base import Page, PageLoadHook, Tab
from prodio.pages.notepad import NotepadTab
from prodio.pages.text_stats import TextStatsTab

TABS: list[type[Tab]] = [
    NotepadTab,
    TextStatsTab,
    AccountTab,
]

__all__ = ["TABS", "AccountTab", "NotepadTab", "Page", "PageLoadHook", "Tab", "TextStatsTab"]
