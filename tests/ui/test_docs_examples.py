"""The examples of docs/extending.md: the text in the guide is the code that is tested."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import gradio as gr
import httpx
import pytest
from fastapi import FastAPI

from prodio.config import Settings
from prodio.pages import TABS
from prodio.routes.home import mount_home
from prodio.ui.app import build_blocks
from prodio.ui.state import UserState
from tests.ui.helpers import TEST_COOKIE, FakeAuthMiddleware, gradio_request, new_store

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "extending.md"
EXAMPLE_BLOCK = re.compile(r"<!-- example: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)

pytestmark = pytest.mark.anyio


def load_example(relative: str) -> ModuleType:
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_guide_shows_the_example_files_verbatim() -> None:
    blocks = list(EXAMPLE_BLOCK.finditer(GUIDE.read_text("utf-8")))
    assert {b["path"] for b in blocks} == {
        "docs/examples/counter_tab.py",
        "docs/examples/tools_page.py",
    }
    for block in blocks:
        assert block["code"] == (ROOT / block["path"]).read_text("utf-8"), block["path"]


async def test_counter_tab_counts_per_user_and_survives_reload() -> None:
    counter_tab = load_example("docs/examples/counter_tab.py").CounterTab
    store = new_store()
    alice, bob = await store.create("alice"), await store.create("bob")
    tab = counter_tab()
    with gr.Blocks():
        tab.build(UserState(store))
    assert await tab.click(await gradio_request(store, alice)) == 1
    assert await tab.click(await gradio_request(store, alice)) == 2
    assert await tab.current(await gradio_request(store, alice)) == 2
    assert await tab.current(await gradio_request(store, bob)) == 0


async def test_counter_tab_builds_into_the_home_page() -> None:
    counter_tab = load_example("docs/examples/counter_tab.py").CounterTab
    tabs = [cls() for cls in TABS[:-1]] + [counter_tab()] + [TABS[-1]()]
    blocks = build_blocks(Settings(secret_key="k" * 40), UserState(new_store()), tabs)
    config = blocks.get_config_file()
    labels = [c["props"]["label"] for c in config["components"] if c["type"] == "tabitem"]
    assert labels == ["Notepad", "Text statistics", "Counter", "Account"]
    assert {"counter_click", "counter_load"} <= {d["api_name"] for d in config["dependencies"]}


async def test_tools_page_mounts_beside_the_home_page() -> None:
    mount_tools = load_example("docs/examples/tools_page.py").mount_tools
    store = new_store()
    settings = Settings(secret_key="k" * 40)
    app = FastAPI()
    app.add_middleware(FakeAuthMiddleware, store=store)
    mount_tools(app, settings, store, None)
    mount_home(app, settings, store)
    session = await store.create("alice")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        cookies={TEST_COOKIE: session.id},
    ) as client:
        tools = (await client.get("/tools/config")).json()
        home = (await client.get("/config")).json()
    assert tools["title"] == "Tools · prodio"
    assert home["title"] == "Home · prodio"
    tools_labels = [c["props"]["label"] for c in tools["components"] if c["type"] == "tabitem"]
    assert tools_labels == ["Text statistics"]
