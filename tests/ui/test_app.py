"""build_blocks: the page builds, the same way every time and in every process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import gradio as gr
import pytest

from prodio.config import Settings
from prodio.pages import TABS
from prodio.pages.base import Page, Tab
from prodio.pages.home import HomePage
from prodio.ui.app import build_blocks, header_user_html, load_header_user
from prodio.ui.state import UserState
from tests.ui.helpers import bare_gradio_request, new_store

SETTINGS = Settings(secret_key="k" * 40, app_name="Acme <Tools>")

# Prints the structure of the home page as a fresh process builds it, after building
# something unrelated first (as an app that imports other Gradio demos would).
BUILD_IN_SUBPROCESS = """
import json, gradio as gr
from prodio.config import Settings
from prodio.pages.home import HomePage
from prodio.session.base import SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from prodio.ui.app import build_blocks
from prodio.ui.state import UserState
with gr.Blocks():
    gr.Textbox(); gr.Textbox(); gr.Button()
state = UserState(InMemorySessionStore(SessionTimeouts(idle=600, absolute=3600)))
blocks = build_blocks(Settings(secret_key="k" * 40, app_name="Acme <Tools>"), state,
                      HomePage().tabs(), title=HomePage.title)
print(json.dumps(blocks.get_config_file(), sort_keys=True, default=str))
"""


def structure(config: dict[str, Any]) -> Any:
    """What instances must agree on; through JSON, as a browser sees it."""
    shape = {
        "app_id": config["app_id"],
        "components": [
            (c["id"], c["type"], c["props"].get("elem_id")) for c in config["components"]
        ],
        "dependencies": [
            (d["id"], d["api_name"], d["targets"], d["inputs"], d["outputs"], d["queue"])
            for d in config["dependencies"]
        ],
        "layout": config["layout"],
    }
    return json.loads(json.dumps(shape, default=str))


def build() -> Any:
    return build_blocks(SETTINGS, UserState(new_store()), HomePage().tabs(), title="Home")


def test_builds_header_and_one_tab_per_registered_tab() -> None:
    config = build().get_config_file()
    tabs = [c for c in config["components"] if c["type"] == "tabitem"]
    assert [t["props"]["label"] for t in tabs] == [cls.title for cls in TABS]
    assert [t["props"]["id"] for t in tabs] == [cls.slug for cls in TABS]
    assert config["title"] == "Home · Acme <Tools>"
    html = [c["props"]["value"] for c in config["components"] if c["type"] == "html"]
    assert any("Acme &lt;Tools&gt;" in value for value in html)
    assert not any("<Tools>" in value for value in html)


def test_every_event_is_unqueued() -> None:
    config = build().get_config_file()
    assert config["dependencies"]
    assert all(d["queue"] is False for d in config["dependencies"])


def test_handler_annotations_are_evaluated_once_at_build_time() -> None:
    """Gradio reads each handler's type hints on every event; the page's handlers (written
    under postponed annotations) must not make it compile them again each time."""
    blocks = build()
    handlers = [fn.fn for fn in blocks.fns.values() if fn.fn is not None]
    assert handlers
    for handler in handlers:
        function = getattr(handler, "__func__", handler)
        assert not any(isinstance(hint, str) for hint in function.__annotations__.values()), handler
    request_parameters = [
        handler
        for handler in handlers
        if gr.Request in getattr(handler, "__func__", handler).__annotations__.values()
    ]
    assert request_parameters, "no handler takes a gr.Request"


def test_a_handler_whose_hints_cannot_be_evaluated_is_left_alone() -> None:
    class Unresolvable(Tab):
        title = "Unresolvable"
        slug = "unresolvable"

        def build(self, state: UserState) -> None:
            gr.Button("Go").click(self.go, outputs=[gr.Textbox()])

        async def go(self) -> NameNobodyDefined:  # type: ignore[name-defined]  # noqa: F821
            return "ok"

    blocks = build_blocks(SETTINGS, UserState(new_store()), [Unresolvable()])
    handler = next(fn.fn for fn in blocks.fns.values() if fn.fn is not None)
    assert handler.__func__.__annotations__ == {"return": "NameNobodyDefined"}


def test_two_builds_are_identical() -> None:
    first, second = build().get_config_file(), build().get_config_file()
    assert structure(first) == structure(second)
    assert json.dumps(first, sort_keys=True, default=str) == json.dumps(
        second, sort_keys=True, default=str
    )


def test_another_process_builds_the_same_app() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BUILD_IN_SUBPROCESS],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    other = json.loads(result.stdout.strip().splitlines()[-1])
    assert structure(other) == structure(build().get_config_file())


@pytest.mark.anyio
async def test_component_ids_do_not_depend_on_earlier_builds() -> None:
    before = build().get_config_file()
    with gr.Blocks():
        for _ in range(5):
            gr.Textbox()
    assert structure(build().get_config_file()) == structure(before)


def test_no_tabs_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one tab"):
        build_blocks(SETTINGS, UserState(new_store()), [])


def test_page_refuses_duplicate_slugs() -> None:
    class Twice(Page):
        tab_classes = (TABS[0], TABS[0])

    with pytest.raises(ValueError, match="same slug"):
        Twice().tabs()


def test_tab_needs_a_valid_slug() -> None:
    class Bad(Tab):
        title = "Bad"
        slug = "Not-OK"

        def build(self, state: UserState) -> None:
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="slug"):
        Bad()


@pytest.mark.anyio
async def test_header_shows_the_user_escaped() -> None:
    request = bare_gradio_request({"user": "a<b>"})
    html = await load_header_user(request)
    assert "<strong>a&lt;b&gt;</strong>" in html
    assert await load_header_user(bare_gradio_request({})) == header_user_html(None)
