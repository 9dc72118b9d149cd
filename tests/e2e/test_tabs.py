"""Browser flow 3: every tab renders and its main action works; notes stay with their user."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.helpers import (
    ALICE,
    BOB,
    NewContext,
    ProdioServer,
    expect_home,
    log_in,
    note_box,
    open_tab,
)

pytestmark = pytest.mark.e2e

NOTE = "Buy oat milk.\nCall the plumber — before Friday!"
SAMPLE_TEXT = "The cat sat. The dog ran!\n\nA bird flew?"


def expect_row(page: Page, container: str, name: str, value: str | re.Pattern[str]) -> None:
    """The table row of ``container`` whose first cell reads ``name`` has ``value`` next."""
    first_cell = page.locator("td:first-child", has_text=re.compile(f"^{re.escape(name)}$"))
    row = page.locator(f"{container} tr", has=first_cell)
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text(value)


def test_notepad_keeps_the_note_across_reload_and_tabs(
    page: Page, prodio_server: ProdioServer, new_context: NewContext
) -> None:
    log_in(page, ALICE)
    expect(page.locator("#notepad-status")).to_have_text("Not saved yet.")
    note_box(page).fill(NOTE)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#notepad-status")).to_contain_text("Saved 1 time · last at ")

    page.reload()
    expect_home(page, ALICE)
    expect(note_box(page)).to_have_value(NOTE)
    expect(page.locator("#notepad-status")).to_contain_text("Saved 1 time")

    # Another browser tab of the same browser: same session, same note.
    second_tab = page.context.new_page()
    second_tab.goto("/")
    expect_home(second_tab, ALICE)
    expect(note_box(second_tab)).to_have_value(NOTE)

    # Another browser, another user: an empty notepad.
    other = new_context(prodio_server).new_page()
    log_in(other, BOB)
    expect(other.locator("#notepad-status")).to_have_text("Not saved yet.")
    expect(note_box(other)).to_have_value("")
    # And alice's note is still hers.
    second_tab.reload()
    expect_home(second_tab, ALICE)
    expect(note_box(second_tab)).to_have_value(NOTE)


def test_text_statistics_counts_the_text(page: Page, prodio_server: ProdioServer) -> None:
    log_in(page, ALICE)
    open_tab(page, "Text statistics")
    result = page.locator("#text-stats-result")
    expect(result).to_contain_text("Paste or type some text, then press Analyse.")
    page.locator("#text-stats-input textarea").fill(SAMPLE_TEXT)
    page.get_by_role("button", name="Analyse").click()
    expect(result.locator("table")).to_be_visible()
    for name, value in [
        ("Words", "9"),
        ("Unique words", "8"),
        ("Sentences", "3"),
        ("Lines", "3"),
        ("Paragraphs", "2"),
        ("Characters", str(len(SAMPLE_TEXT))),
        ("Reading time", "under a minute"),
    ]:
        expect_row(page, "#text-stats-result", name, value)


def test_account_shows_the_user_and_the_session_end(
    page: Page, prodio_server: ProdioServer
) -> None:
    log_in(page, BOB)
    open_tab(page, "Account")
    summary = page.locator("#account-summary")
    expect_row(page, "#account-summary", "Signed in as", BOB.name)
    info = page.context.request.get("/api/session").json()
    assert info["user"] == BOB.name
    ends = datetime.fromisoformat(info["absolute_expires_at"].replace("Z", "+00:00"))
    expect_row(
        page,
        "#account-summary",
        "Session ends at the latest",
        # Eight hours from login, less the seconds the page took to load.
        re.compile(re.escape(f"{ends:%Y-%m-%d %H:%M} UTC") + r" \(in (7 h 59 min|8 hours)\)"),
    )
    expect(summary).to_contain_text("Signs out when idle at")
    # Refresh reloads the summary through a Gradio event.
    page.get_by_role("button", name="Refresh").click()
    expect_row(page, "#account-summary", "Signed in as", BOB.name)
