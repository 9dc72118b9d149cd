"""Browser flows 1 and 2: the login page, wrong and right passwords, ``next``, the keyboard."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from prodio.routes.login import GENERIC_LOGIN_ERROR
from tests.e2e.helpers import (
    ALICE,
    BOB,
    SCREENSHOTS_DIR,
    Account,
    ProdioServer,
    expect_home,
    expect_login_page,
    fill_login_form,
    note_box,
    path_of,
    session_cookies,
    submit_login,
)

pytestmark = pytest.mark.e2e


def test_login_page_then_wrong_password_then_home(page: Page, prodio_server: ProdioServer) -> None:
    page.goto("/")
    expect_login_page(page)
    expect(page.get_by_role("alert")).to_have_count(0)
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS_DIR / "login.png"), full_page=True, animations="disabled")

    # A wrong password and an unknown user get the same single, generic message.
    for wrong in (Account(ALICE.name, "not-the-password"), Account("mallory", BOB.password)):
        fill_login_form(page, wrong)
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 401
        expect_login_page(page)
        expect(page.get_by_role("alert")).to_have_count(1)
        expect(page.get_by_role("alert")).to_have_text(GENERIC_LOGIN_ERROR)
        # The name stays filled in, the password does not.
        expect(page.get_by_label("User name")).to_have_value(wrong.name)
        expect(page.get_by_label("Password")).to_have_value("")
        assert session_cookies(page.context) == []

    submit_login(page, ALICE)
    expect_home(page, ALICE)
    assert path_of(page.url) == "/"
    [cookie] = session_cookies(page.context)
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    expect(page.locator("#notepad-status")).to_have_text("Not saved yet.")
    expect(note_box(page)).to_have_value("")
    page.mouse.move(0, 0)
    page.screenshot(path=str(SCREENSHOTS_DIR / "home.png"), full_page=True, animations="disabled")


@pytest.mark.parametrize("deep_link", ["/?foo=bar", "/api/session"])
def test_deep_link_returns_there_after_login(
    page: Page, prodio_server: ProdioServer, deep_link: str
) -> None:
    page.goto(deep_link)
    expect_login_page(page)
    submit_login(page, ALICE)
    assert path_of(page.url) == deep_link
    if deep_link == "/api/session":
        info = json.loads(page.locator("body").inner_text())
        assert info["user"] == ALICE.name
        assert info["idle_timeout"] == 30 * 60
    else:
        expect_home(page, ALICE)


def test_keyboard_only_login(page: Page, prodio_server: ProdioServer) -> None:
    page.goto("/login")
    expect_login_page(page)
    # The user name field has the focus when the page opens; Tab moves on to the password.
    assert page.evaluate("document.activeElement.id") == "login-username"
    page.keyboard.type(ALICE.name)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "login-password"
    focus = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return {outline: s.outlineStyle, width: s.outlineWidth, shadow: s.boxShadow}; })()"
    )
    outlined = focus["outline"] != "none" and focus["width"] != "0px"
    assert outlined or focus["shadow"] != "none", (
        f"the focused field shows no focus indicator: {focus}"
    )
    page.keyboard.type(ALICE.password)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect_home(page, ALICE)
    assert path_of(page.url) == "/"
