"""Browser flows: the dev-mode admin changes its generated password at first sign-in, and a
user changes theirs from the Account tab, keeping or ending their other sessions.

A server of its own, started with an empty database in dev mode, so that it makes ``admin``
with a random password the way ``prodio serve`` does for a newcomer (the password is read
from its console log). Its users' passwords change here, which other tests must not see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.helpers import (
    Account,
    NewContext,
    ProdioServer,
    ServerSpec,
    expect_home,
    expect_login_page,
    log_in,
    open_tab,
    path_of,
    report_lines,
    run_axe,
    serious_violations,
    session_cookies,
    submit_login,
)

pytestmark = pytest.mark.e2e

DORA = Account("dora", "dora-e2e-password")
ADMIN_PASSWORD_LINE = re.compile(r"password:\s+(\S+)")
PATH = "/account/password"


@dataclass(frozen=True)
class FreshServer:
    server: ProdioServer
    admin: Account

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshServer]:
    workdir = tmp_path_factory.mktemp("prodio-e2e-password")
    server = ProdioServer(ServerSpec("password", accounts=()), workdir, workdir / "server.log")
    server.launch()
    try:
        server.wait_ready()
        match = ADMIN_PASSWORD_LINE.search(server.log_path.read_text())
        assert match, server.log_tail()
        added = server.add_user(DORA)
        assert added.returncode == 0, added.stderr
        yield FreshServer(server, Account("admin", match.group(1)))
    finally:
        server.stop()


def fill_change_form(page: Page, current: str, new: str) -> None:
    page.get_by_label("Current password", exact=True).fill(current)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("Repeat the new password", exact=True).fill(new)


def submit_change(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Change password").click()


def signed_in(new_context: NewContext, site: FreshServer, account: Account) -> Page:
    page = new_context(site).new_page()
    log_in(page, account)
    return page


def cookie_names(context: BrowserContext) -> list[str]:
    return [cookie["name"] for cookie in context.cookies()]


def test_the_dev_admin_must_choose_its_own_password_first(
    new_context: NewContext, fresh_server: FreshServer
) -> None:
    admin = fresh_server.admin
    page = new_context(fresh_server).new_page()
    page.goto("/")
    submit_login(page, admin)
    assert path_of(page.url) == PATH
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    expect(page.get_by_label("Sign out my other sessions")).to_have_count(0)

    # Nothing else opens until it is done.
    page.goto("/")
    assert path_of(page.url) == PATH
    answer = page.request.get("/api/session")
    assert answer.status == 403
    assert answer.json()["password_change_url"] == PATH

    # The generated password itself is refused as the new one; then a real one works.
    fill_change_form(page, admin.password, admin.password)
    submit_change(page)
    expect(page.get_by_role("alert")).to_contain_text("must not be the current one")
    new_admin = Account("admin", "the admin's own passphrase")
    fill_change_form(page, admin.password, new_admin.password)
    submit_change(page)
    expect_home(page, new_admin)
    assert path_of(page.url) == "/"

    # Logout clears the site's cookies: all of them (Clear-Site-Data), not only the two
    # it expires by name. Then the generated password no longer signs in.
    page.context.add_cookies([{"name": "unrelated", "value": "1", "url": fresh_server.base_url}])
    page.goto("/logout")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    expect_login_page(page)
    assert session_cookies(page.context) == []
    assert "unrelated" not in cookie_names(page.context)
    page.get_by_label("User name").fill(admin.name)
    page.get_by_label("Password").fill(admin.password)
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 401
    submit_login(page, new_admin)
    expect_home(page, new_admin)


def test_a_change_from_the_account_tab_keeps_or_ends_the_other_sessions(
    new_context: NewContext, fresh_server: FreshServer
) -> None:
    laptop = signed_in(new_context, fresh_server, DORA)
    phone = signed_in(new_context, fresh_server, DORA)

    open_tab(laptop, "Account")
    with laptop.expect_navigation():
        laptop.locator("#account-change-password").click()
    assert path_of(laptop.url) == PATH
    expect(laptop.get_by_role("heading", name="Change your password")).to_be_visible()
    serious = serious_violations(run_axe(laptop))
    assert serious == [], report_lines(serious)
    box = laptop.get_by_label("Sign out my other sessions")
    expect(box).to_be_checked()

    # First without signing out the phone.
    box.uncheck()
    second = Account(DORA.name, "dora's second passphrase")
    old_cookies = session_cookies(laptop.context)
    fill_change_form(laptop, DORA.password, second.password)
    submit_change(laptop)
    expect(laptop.get_by_role("status")).to_contain_text("Your password was changed")
    assert session_cookies(laptop.context) != old_cookies  # a new session id
    phone.reload()
    expect_home(phone, DORA)

    # Then with the box ticked, as it is by default: the phone is signed out.
    third = Account(DORA.name, "dora's third passphrase")
    fill_change_form(laptop, second.password, third.password)
    submit_change(laptop)
    expect(laptop.get_by_role("status")).to_contain_text("Your password was changed")
    phone.reload()
    expect_login_page(phone)
    laptop.goto("/")
    expect_home(laptop, third)
