"""The tab and page pattern of the UI.

A *tab* is one screen of a page: a :class:`Tab` subclass with a title, a slug and a
:meth:`Tab.build` method that lays out Gradio components and wires their events. A *page*
is a list of tabs mounted at a path (the home page at ``PRODIO_MOUNT_PATH``).

Rules for tabs, which keep any instance able to answer any request:

- per-user data goes through the :class:`~prodio.ui.state.UserState` given to ``build``
  (never ``gr.State``, never module globals);
- every event uses ``queue=False`` (one stateless POST per event) — use :meth:`Tab.event`,
  which sets it;
- the build is deterministic: the same components in the same order every time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from prodio.ui.state import NAME_PATTERN, UserState

# Options every event of a template page gets: a single stateless POST per event.
EVENT_DEFAULTS: dict[str, Any] = {"queue": False}


@dataclass(frozen=True, slots=True)
class PageLoadHook:
    """A handler that runs when the page loads and fills some of the tab's components."""

    fn: Callable[..., Any]
    inputs: Sequence[Any]
    outputs: Sequence[Any]
    api_name: str


class Tab(ABC):
    """One tab of a page.

    Subclasses set ``title`` (shown on the tab) and ``slug`` (lower-case, unique within
    the page: the tab's id, its DOM id and the namespace of its stored values), and
    implement :meth:`build`, which is called inside ``with gr.Tab(...)``.
    """

    title: ClassVar[str]
    slug: ClassVar[str]

    def __init__(self) -> None:
        if not NAME_PATTERN.fullmatch(getattr(self, "slug", "") or ""):
            raise ValueError(
                f"{type(self).__name__}.slug must be lower-case letters, digits and _ "
                "(starting with a letter)"
            )
        if not getattr(self, "title", ""):
            raise ValueError(f"{type(self).__name__}.title must be set")
        self.load_hooks: list[PageLoadHook] = []

    @abstractmethod
    def build(self, state: UserState) -> None:
        """Create the tab's components and events; ``state`` reaches per-user data."""

    def on_page_load(
        self,
        fn: Callable[..., Any],
        *,
        outputs: Sequence[Any],
        inputs: Sequence[Any] = (),
        api_name: str | None = None,
    ) -> None:
        """Run ``fn`` when the page loads (after a reload too) to fill ``outputs``.

        ``api_name`` names the endpoint (default: ``<slug>_<function name>``).
        """
        name = api_name or f"{self.slug}_{getattr(fn, '__name__', 'load')}"
        self.load_hooks.append(
            PageLoadHook(fn=fn, inputs=list(inputs), outputs=list(outputs), api_name=name)
        )

    @staticmethod
    def event(**options: Any) -> dict[str, Any]:
        """Keyword arguments for a Gradio event listener, with prodio's defaults.

        ``button.click(fn, inputs, outputs, **self.event())``
        """
        return {**EVENT_DEFAULTS, **options}


class Page:
    """A list of tabs shown together. Subclass it and list your tab classes in ``tabs``."""

    title: ClassVar[str] = "Home"
    tab_classes: ClassVar[Sequence[type[Tab]]] = ()

    def tabs(self) -> list[Tab]:
        """Fresh tab instances, in display order; slugs must be unique."""
        tabs = [tab_class() for tab_class in self.tab_classes]
        slugs = [tab.slug for tab in tabs]
        duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
        if duplicates:
            raise ValueError(f"{type(self).__name__} has tabs with the same slug: {duplicates}")
        if not tabs:
            raise ValueError(f"{type(self).__name__} has no tabs")
        return tabs
