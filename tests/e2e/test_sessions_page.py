"""Browser flow of the sessions page (ASVS 7.5.2): from the Account tab, a user sees where
they are signed in and ends a session elsewhere, all the others, and finally this one.

On the shared ``main`` server, under an account of this module's own (added with the CLI
while the server runs), so that its wrong password and ended sessions touch no other test.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.helpers import (
    Account,
    NewContext,
    ProdioServer,
    expect_login_page,
    log_in,
    open_tab,
    path_of,
    report_lines,
    run_axe,
    serious_violations,
    session_cookies,
)

pytestmark = pytest.mark.e2e

ERIN = Account("erin", "erin-e2e-sessions-password")
PATH = "/account/sessions"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
LAPTOP_AGENT = f"{CHROME} Safari/537.36 e2e-laptop"
PHONE_AGENT = f"{CHROME} Mobile Safari/537.36 e2e-phone"
TABLET_AGENT = f"{CHROME} Safari/537.36 e2e-tablet"


@pytest.fixture(scope="module")
def erin(prodio_server: ProdioServer) -> Account:
    added = prodio_server.add_user(ERIN)
    assert added.returncode == 0, added.stderr
    return ERIN


def signed_in(
    new_context: NewContext, server: ProdioServer, account: Account, user_agent: str
) -> Page:
    page = new_context(server, user_agent=user_agent).new_page()
    log_in(page, account)
    return page


def is_signed_in(page: Page) -> bool:
    return page.request.get("/api/session").status == 200


def end_session_of(page: Page, user_agent: str, password: str) -> None:
    """Open the "End this session" form of the session with ``user_agent`` and send it."""
    row = page.locator("#sessions-list > li", has_text=user_agent)
    if row.locator("details[open]").count() == 0:
        row.locator("summary").click()
    row.get_by_label("Current password").fill(password)
    with page.expect_navigation():
        row.get_by_role("button", name="End this session").click()


def test_a_user_ends_a_session_elsewhere_then_the_others_then_this_one(
    new_context: NewContext, prodio_server: ProdioServer, erin: Account
) -> None:
    laptop = signed_in(new_context, prodio_server, erin, LAPTOP_AGENT)
    phone = signed_in(new_context, prodio_server, erin, PHONE_AGENT)

    # The way there: the Account tab's link.
    open_tab(laptop, "Account")
    with laptop.expect_navigation():
        laptop.locator("#account-sessions").click()
    assert path_of(laptop.url) == PATH
    expect(laptop.get_by_role("heading", name="Your sessions")).to_be_visible()
    rows = laptop.locator("#sessions-list > li")
    expect(rows).to_have_count(2)
    this_one = laptop.locator('#sessions-list > li[aria-current="true"]')
    expect(this_one).to_contain_text("This session")
    expect(this_one).to_contain_text(LAPTOP_AGENT)
    expect(laptop.locator("#sessions-list > li", has_text=PHONE_AGENT)).to_contain_text("127.0.0.1")
    serious = serious_violations(run_axe(laptop))
    assert serious == [], report_lines(serious)

    # A wrong password ends nothing.
    end_session_of(laptop, PHONE_AGENT, "not the password")
    expect(laptop.get_by_role("alert")).to_contain_text("The current password is not right.")
    # The refused form is open again, its password field ready to retype.
    phone_row = laptop.locator("#sessions-list > li", has_text=PHONE_AGENT)
    expect(phone_row.get_by_label("Current password")).to_be_focused()
    expect(rows).to_have_count(2)
    assert is_signed_in(phone)

    end_session_of(laptop, PHONE_AGENT, erin.password)
    expect(laptop.get_by_role("status")).to_contain_text("1 session was ended.")
    expect(rows).to_have_count(1)
    assert not is_signed_in(phone)
    phone.reload()
    expect_login_page(phone)

    # All the others, at once; this one stays.
    tablet = signed_in(new_context, prodio_server, erin, TABLET_AGENT)
    other_laptop = signed_in(new_context, prodio_server, erin, LAPTOP_AGENT)
    laptop.reload()
    expect(rows).to_have_count(3)
    laptop.get_by_label("Current password").last.fill(erin.password)
    with laptop.expect_navigation():
        laptop.get_by_role("button", name="End all other sessions").click()
    expect(laptop.get_by_role("status")).to_contain_text("2 sessions were ended.")
    expect(rows).to_have_count(1)
    expect(laptop.get_by_text("This is your only session.")).to_be_visible()
    assert not is_signed_in(tablet)
    assert not is_signed_in(other_laptop)
    assert is_signed_in(laptop)

    # And this one: the browser is signed out, as by Logout.
    end_session_of(laptop, LAPTOP_AGENT, erin.password)
    expect_login_page(laptop)
    assert session_cookies(laptop.context) == []
    laptop.goto("/")
    expect_login_page(laptop)
