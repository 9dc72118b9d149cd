"""Browser flows 4 and 5: the session ends while the page is open; logout from the header."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Response, expect

from tests.e2e.helpers import (
    ALICE,
    BOB,
    CAROL,
    SHORT_IDLE_TIMEOUT,
    NewContext,
    ProdioServer,
    expect_home,
    expect_login_page,
    gradio_errors_seen,
    log_in,
    note_box,
    path_of,
    session_cookies,
    submit_login,
    watch_for_gradio_errors,
)

pytestmark = pytest.mark.e2e

# Where prodio.js sends a signed-out HomePage: the login page, then back to "/".
LOGIN_THEN_HOME = re.compile(r"/login\?next=%2F$")

# Stops prodio.js's session clock, which would otherwise send the page to the login page by
# itself when the idle time is up. With it stopped, the page is like one whose timers did
# not run (a laptop that slept) or whose session ended behind its back: the only thing
# left to notice the end is the interceptor, on the next request.
STOP_SESSION_CLOCK = """() => {
  const clock = window.prodio.sessionClock;
  clock.schedule = () => {};
  clearTimeout(clock.noticeTimer);
  clearTimeout(clock.expiryTimer);
  clock.hideNotice();
}"""


def is_gradio_event(response: Response) -> bool:
    return "/gradio_api/" in response.url and response.request.method == "POST"


def wait_until_idle_expired() -> None:
    """Let the short server's idle timeout pass with no request from the page."""
    time.sleep(SHORT_IDLE_TIMEOUT + 1.5)


def test_expired_session_next_click_goes_to_login(
    new_context: NewContext, short_session_server: ProdioServer
) -> None:
    context = new_context(short_session_server)
    watch_for_gradio_errors(context)
    page = context.new_page()
    log_in(page, CAROL)
    page.evaluate(STOP_SESSION_CLOCK)
    note_box(page).fill("written while the session ran out")
    wait_until_idle_expired()

    with page.expect_response(is_gradio_event) as event:
        page.get_by_role("button", name="Save").click()
    assert event.value.status == 401
    expect(page).to_have_url(LOGIN_THEN_HOME)
    expect_login_page(page)
    assert gradio_errors_seen(page) == []

    submit_login(page, CAROL)
    expect_home(page, CAROL)
    assert path_of(page.url) == "/"
    assert gradio_errors_seen(page) == []


def test_idle_page_is_warned_then_sent_to_login(
    new_context: NewContext, short_session_server: ProdioServer
) -> None:
    context = new_context(short_session_server)
    watch_for_gradio_errors(context)
    page = context.new_page()
    log_in(page, CAROL)

    # The idle timeout is shorter than the notice's lead time: the notice shows at once.
    notice = page.locator(".prodio-notice")
    expect(notice).to_have_attribute("role", "alert")
    expect(notice).to_contain_text(re.compile(r"You will be signed out in \d+ seconds?"))
    with page.expect_response(lambda r: r.url.endswith("/api/session")) as refreshed:
        notice.get_by_role("button", name="Stay signed in").click()
    assert refreshed.value.status == 200

    # Left alone, the page goes to the login page by itself once the idle time is up.
    expect(page).to_have_url(LOGIN_THEN_HOME)
    expect_login_page(page)
    assert gradio_errors_seen(page) == []
    submit_login(page, CAROL)
    expect_home(page, CAROL)


def test_without_the_interceptor_gradio_shows_an_error(
    new_context: NewContext, prodio_server: ProdioServer
) -> None:
    """The control for the tests above: without prodio.js a 401 shows Gradio's "Error",
    and the watcher sees it."""
    context = new_context(prodio_server)
    watch_for_gradio_errors(context)
    context.route(
        re.compile(r".*/static/prodio\.js(\?.*)?$"),
        lambda route: route.fulfill(
            status=200, content_type="text/javascript", body="/* left out */"
        ),
    )
    page = context.new_page()
    log_in(page, BOB)
    context.clear_cookies()
    with page.expect_response(is_gradio_event) as event:
        page.get_by_role("button", name="Save").click()
    assert event.value.status == 401
    expect(page.locator('#notepad-status [data-testid="status-tracker"] .error')).to_have_text(
        "Error"
    )
    assert gradio_errors_seen(page) == ["Error"]
    assert path_of(page.url) == "/"


def test_logout_from_the_header(new_context: NewContext, prodio_server: ProdioServer) -> None:
    context = new_context(prodio_server)
    page = context.new_page()
    log_in(page, ALICE)
    other_tab = context.new_page()
    other_tab.goto("/")
    expect_home(other_tab, ALICE)
    [old_cookie] = session_cookies(context)

    page.locator("#prodio-logout").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect_login_page(page)
    assert session_cookies(context) == []

    # Back: the HomePage is not shown again, the login page is.
    page.go_back()
    expect_login_page(page)
    expect(page.locator("#prodio-header-user")).to_have_count(0)

    # The other tab is still showing the HomePage; its next click leads to the login page.
    with other_tab.expect_response(is_gradio_event) as event:
        other_tab.get_by_role("button", name="Save").click()
    assert event.value.status == 401
    expect(other_tab).to_have_url(LOGIN_THEN_HOME)

    # The old cookie, put back into a fresh browser, opens nothing.
    replay = new_context(prodio_server)
    replay.add_cookies([old_cookie])
    replayed = replay.new_page()
    replayed.goto("/")
    expect_login_page(replayed)
    answer = replay.request.get("/api/session")
    assert answer.status == 401
    assert answer.json()["detail"] == "not authenticated"
