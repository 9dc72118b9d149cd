"""Build the Gradio ``Blocks`` of a page: header, navigation and tabs."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
from gradio.context import Context

from prodio import __version__
from prodio.config import Settings
from prodio.pages.base import EVENT_DEFAULTS, Tab
from prodio.ui.blocks import ProdioBlocks
from prodio.ui.client import LOGOUT_JS
from prodio.ui.format import escape
from prodio.ui.loop import call_with_running_loop
from prodio.ui.state import UserState, request_state_value

# Component ids start here in every build, whatever else the process built before, so
# that all instances agree on them (a page served by one instance posts its events to
# whichever instance the load balancer picks).
FIRST_COMPONENT_ID = 1

LOGO_SVG = (
    '<svg class="prodio-logo" viewBox="0 0 32 32" width="28" height="28" aria-hidden="true" '
    'focusable="false"><rect width="32" height="32" rx="8" fill="#4f46e5"/>'
    '<path d="M11 24V8h6.5a5 5 0 0 1 0 10H11" fill="none" stroke="#fff" '
    'stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/></svg>'
)


@contextlib.contextmanager
def deterministic_component_ids(first: int = FIRST_COMPONENT_ID) -> Iterator[None]:
    """Number the components built inside from ``first``, as a fresh process would.

    Gradio numbers components with one process-wide counter; ids only need to be unique
    within one ``Blocks``, and Gradio's own reloader resets the counter the same way.
    """
    previous = Context.id
    Context.id = first
    try:
        yield
    finally:
        Context.id = max(previous, Context.id)


def home_href(settings: Settings) -> str:
    """The URL of the home page (Gradio serves a sub-path with a trailing slash)."""
    return "/" if settings.mount_path == "/" else settings.mount_path + "/"


def header_user_html(user: str | None) -> str:
    """The "signed in as" chip of the header."""
    if not user:
        return '<span class="prodio-user" aria-live="polite"></span>'
    return (
        '<span class="prodio-user" aria-live="polite">'
        f'<span class="prodio-user-label">Signed in as</span> <strong>{escape(user)}</strong>'
        "</span>"
    )


async def load_header_user(request: gr.Request) -> str:
    """Gradio handler: fill the header chip with the user the middleware authenticated."""
    user = request_state_value(request, "user")
    return header_user_html(user if isinstance(user, str) else None)


def build_header(settings: Settings) -> Any:
    """The top bar: app name (a link home), the signed-in user and Logout.

    Returns the user chip component, which the page fills on load.
    """
    with gr.Row(elem_id="prodio-header", elem_classes=["prodio-header"], equal_height=True):
        gr.HTML(
            # The app name is the page's one <h1>: screen readers navigate by headings.
            f'<h1 class="prodio-brand-heading"><a class="prodio-brand" '
            f'href="{escape(home_href(settings))}">{LOGO_SVG}'
            f"<span>{escape(settings.app_name)}</span></a></h1>",
            elem_classes=["prodio-header-brand"],
            container=False,
            padding=False,
        )
        user = gr.HTML(
            header_user_html(None),
            elem_id="prodio-header-user",
            elem_classes=["prodio-header-user"],
            container=False,
            padding=False,
        )
        logout = gr.Button(
            "Log out",
            size="sm",
            variant="secondary",
            scale=0,
            min_width=90,
            elem_id="prodio-logout",
        )
    logout.click(None, inputs=None, outputs=None, js=LOGOUT_JS, **EVENT_DEFAULTS)
    return user


def stable_app_id(blocks: Any) -> int:
    """A 64-bit app id derived from the page's structure instead of chance.

    Gradio's frontend compares the app id after a lost connection; a random one per
    process would make every instance look like a different app.
    """
    config = blocks.get_config_file()
    structure = {
        "prodio": __version__,
        "gradio": gr.__version__,
        "title": config.get("title"),
        "components": [(c["id"], c["type"]) for c in config.get("components", [])],
        "dependencies": [
            (d["id"], d.get("targets"), d.get("inputs"), d.get("outputs"))
            for d in config.get("dependencies", [])
        ],
    }
    digest = hashlib.sha256(json.dumps(structure, sort_keys=True, default=str).encode())
    return int.from_bytes(digest.digest()[:8], "big")


def build_blocks(
    settings: Settings, state: UserState, tabs: Sequence[Tab], *, title: str | None = None
) -> Any:
    """The ``gr.Blocks`` of one page: header, then one ``gr.Tab`` per tab, in order.

    Theme, CSS and scripts are not set here: ``gr.mount_gradio_app`` ignores them on a
    ``Blocks``; :func:`prodio.ui.mount.mount_page` passes them at mount time.
    """
    if not tabs:
        raise ValueError("a page needs at least one tab")
    return call_with_running_loop(lambda: _build_blocks(settings, state, tabs, title))


def _build_blocks(
    settings: Settings, state: UserState, tabs: Sequence[Tab], title: str | None
) -> Any:
    page_title = f"{title} · {settings.app_name}" if title else settings.app_name
    with (
        deterministic_component_ids(),
        # Event outputs belong to the user who ran the event (prodio.ui.blocks).
        ProdioBlocks(title=page_title, analytics_enabled=False) as blocks,
    ):
        header_user = build_header(settings)
        with gr.Tabs(elem_id="prodio-tabs", elem_classes=["prodio-tabs"]):
            for tab in tabs:
                with gr.Tab(tab.title, id=tab.slug, elem_id=f"tab-{tab.slug}"):
                    # A tab built again (a second app in the same process) starts afresh.
                    tab.load_hooks.clear()
                    tab.build(state)
        blocks.load(
            load_header_user,
            inputs=None,
            outputs=[header_user],
            api_name="header_user",
            **EVENT_DEFAULTS,
        )
        for tab in tabs:
            for hook in tab.load_hooks:
                blocks.load(
                    hook.fn,
                    inputs=list(hook.inputs),
                    outputs=list(hook.outputs),
                    api_name=hook.api_name,
                    **EVENT_DEFAULTS,
                )
    blocks.app_id = stable_app_id(blocks)
    blocks.resolve_handler_annotations()
    return blocks
