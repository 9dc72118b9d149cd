"""Notepad: a private note per user, kept in the server-side session."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from prodio.pages.base import Tab
from prodio.ui.format import format_utc, plural
from prodio.ui.state import UserState, user_facing_errors

MAX_NOTE_CHARS = 20_000
NOTE_KEY = "note"


class NotepadTab(Tab):
    """A text area and a Save button; the note survives reloads and stays with its user."""

    title = "Notepad"
    slug = "notepad"

    def build(self, state: UserState) -> None:
        self.notes = state.namespace(self.slug)
        gr.Markdown(
            "A private note, kept on the server with your session: reload the page or come "
            "back from another tab and it is still here. Nobody else can read it.",
            elem_classes=["prodio-lead"],
        )
        text = gr.Textbox(
            label="Your note",
            lines=10,
            max_lines=30,
            max_length=MAX_NOTE_CHARS,
            placeholder="Write something…",
            elem_id="notepad-text",
        )
        with gr.Row(equal_height=True, elem_classes=["prodio-actions"]):
            save = gr.Button("Save", variant="primary", scale=0, min_width=120)
            status = gr.Markdown(elem_id="notepad-status", elem_classes=["prodio-status"])
        save.click(
            self.save, inputs=[text], outputs=[status], **self.event(api_name="notepad_save")
        )
        self.on_page_load(self.load, outputs=[text, status], api_name="notepad_load")

    @user_facing_errors
    async def load(self, request: gr.Request) -> tuple[str, str]:
        """The saved note and its status line, for the page load."""
        note = await self._read(request)
        return note["text"], describe(note)

    @user_facing_errors
    async def save(self, text: str | None, request: gr.Request) -> str:
        """Store ``text`` as the note, count the save, return the new status line."""
        text = text or ""
        if not isinstance(text, str):
            raise gr.Error("The note must be text.", print_exception=False)
        if len(text) > MAX_NOTE_CHARS:
            raise gr.Error(
                f"The note is {len(text):,} characters long; the limit is "
                f"{MAX_NOTE_CHARS:,}. Shorten it and save again.",
                title="Too long",
                print_exception=False,
            )

        def saved(stored: Any) -> dict[str, Any]:
            return {
                "text": text,
                "saves": read_note(stored)["saves"] + 1,
                "saved_at": time.time(),
            }

        # A compare-and-set on the session: one store call, and two browser tabs saving at
        # the same instant both count (the text of the last save wins).
        note = read_note(await self.notes.modify(request, NOTE_KEY, saved))
        return describe(note)

    async def _read(self, request: gr.Request) -> dict[str, Any]:
        return read_note(await self.notes.get(request, NOTE_KEY))


def read_note(stored: Any) -> dict[str, Any]:
    """The note as stored, with the defaults of an empty one for anything malformed."""
    if not isinstance(stored, dict):
        return {"text": "", "saves": 0, "saved_at": None}
    return {
        "text": stored.get("text") if isinstance(stored.get("text"), str) else "",
        "saves": stored.get("saves") if isinstance(stored.get("saves"), int) else 0,
        "saved_at": stored.get("saved_at"),
    }


def describe(note: dict[str, Any]) -> str:
    """The status line under the note: how often and when it was saved."""
    saves = note["saves"]
    if not saves:
        return "Not saved yet."
    when = note.get("saved_at")
    last = f" · last at {format_utc(when)}" if isinstance(when, int | float) else ""
    return f"Saved {plural(saves, 'time')}{last}."
