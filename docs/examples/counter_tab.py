"""A tab that counts clicks, per user (the example of docs/extending.md)."""

from __future__ import annotations

import gradio as gr

from prodio.pages.base import Tab
from prodio.ui.state import UserState, user_facing_errors


class CounterTab(Tab):
    title = "Counter"
    slug = "counter"  # the tab id, and the namespace of its stored values

    def build(self, state: UserState) -> None:
        self.values = state.namespace(self.slug)  # keys become "counter.<name>"
        clicks = gr.Number(label="Your clicks", value=0, interactive=False)
        button = gr.Button("Click me", variant="primary")
        button.click(
            self.click, inputs=None, outputs=[clicks], **self.event(api_name="counter_click")
        )
        self.on_page_load(self.current, outputs=[clicks], api_name="counter_load")

    @user_facing_errors
    async def current(self, request: gr.Request) -> int:
        return int(await self.values.get(request, "clicks", default=0))

    @user_facing_errors
    async def click(self, request: gr.Request) -> int:
        # One compare-and-set: two tabs clicking at once both count.
        clicks = await self.values.modify(request, "clicks", lambda n: int(n or 0) + 1)
        return int(clicks)
