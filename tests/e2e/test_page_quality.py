"""Browser flow 6 and the checks on how the pages are built: a clean HomePage (no console
error, no failed request, nothing fetched from another host), accessibility (axe-core run in
the page) and the dark colour scheme."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.helpers import (
    ALICE,
    Account,
    NewContext,
    ProdioServer,
    TrafficRecorder,
    computed_rgb,
    expect_home,
    expect_login_page,
    fill_login_form,
    log_in,
    open_tab,
    relative_luminance,
    report_lines,
    run_axe,
    serious_violations,
    submit_login,
)

pytestmark = pytest.mark.e2e

# The icons and manifest the page links. A browser fetches a manifest (and /favicon.ico)
# only when it wants them, so the test fetches each itself to see that it loads.
LINKED_FILES_JS = """() => [...document.querySelectorAll(
  'link[rel~="icon"], link[rel="manifest"], link[rel="apple-touch-icon"]'
)].map((link) => link.href)"""
FETCH_JS = """async (url) => {
  const response = await fetch(url, { cache: "no-store" });
  return {
    status: response.status,
    type: response.headers.get("content-type") || "",
    body: (await response.text()).slice(0, 20000),
  };
}"""


def fetch_in_page(page: Page, path_or_url: str) -> dict[str, Any]:
    return dict(page.evaluate(FETCH_JS, path_or_url))


def test_home_page_has_no_errors_and_stays_on_this_host(
    new_context: NewContext, prodio_server: ProdioServer
) -> None:
    context = new_context(prodio_server)
    traffic = TrafficRecorder().attach(context)
    page = context.new_page()
    log_in(page, ALICE)
    # Every tab once, so that whatever a tab loads when first shown is loaded too.
    for title in ("Text statistics", "Account", "Notepad"):
        open_tab(page, title)
    expect(page.locator("#account-summary")).to_contain_text("Signed in as")

    linked = set(page.evaluate(LINKED_FILES_JS))
    assert prodio_server.url("/manifest.json") in linked
    assert prodio_server.url("/static/favicon.svg") in linked
    wanted = {prodio_server.url("/favicon.ico"), *linked}
    manifest = fetch_in_page(page, "/manifest.json")
    assert manifest["type"].startswith("application/manifest+json")
    wanted.update(prodio_server.url(icon["src"]) for icon in json.loads(manifest["body"])["icons"])
    for url in sorted(wanted):
        answer = fetch_in_page(page, url)
        assert answer["status"] == 200, f"{url} answered {answer['status']}"
        assert answer["body"], f"{url} is empty"
    page.wait_for_load_state("networkidle")

    assert traffic.failures == []
    assert traffic.console_errors == []
    assert traffic.foreign_requests() == []
    # The recorder did see the page: the app, its assets, its events and the files above.
    requested_paths = {
        url.removeprefix(prodio_server.base_url).split("?")[0] for url in traffic.requests
    }
    assert {"/", "/login", "/api/session", "/gradio_api/run/predict"} <= requested_paths
    # (Chromium reports no request event for /favicon.ico: its status was checked above.)
    assert {"/manifest.json", "/static/favicon.svg"} <= requested_paths


def check_colour_scheme(page: Page, scheme: str, selectors: tuple[str, ...]) -> None:
    """Dark backgrounds and light text in the dark scheme; the other way round in light."""
    for selector in selectors:
        background = relative_luminance(computed_rgb(page, selector, "backgroundColor"))
        text = relative_luminance(computed_rgb(page, selector, "color"))
        if scheme == "dark":
            assert background < 0.05, f"{selector}: background not dark ({background:.2f})"
            assert text > 0.5, f"{selector}: text not light ({text:.2f})"
        else:
            assert background > 0.8, f"{selector}: background not light ({background:.2f})"
            assert text < 0.2, f"{selector}: text not dark ({text:.2f})"


def check_axe(page: Page, what: str) -> list[dict[str, Any]]:
    violations = run_axe(page)
    serious = serious_violations(violations)
    assert serious == [], f"{what}: serious or critical axe violations:\n{report_lines(serious)}"
    return violations


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_are_accessible_and_follow_the_colour_scheme(
    new_context: NewContext, prodio_server: ProdioServer, scheme: str
) -> None:
    page = new_context(prodio_server, color_scheme=scheme).new_page()
    page.goto("/login")
    expect_login_page(page)
    check_colour_scheme(page, scheme, ("body", ".prodio-card"))
    findings = {"login page": check_axe(page, f"login page ({scheme})")}

    fill_login_form(page, Account(ALICE.name, "wrong password"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    findings["login page with an error"] = check_axe(page, f"login page with an error ({scheme})")

    submit_login(page, ALICE)
    expect_home(page, ALICE)
    check_colour_scheme(page, scheme, ("body", "gradio-app"))
    if scheme == "dark":
        assert page.evaluate("document.body.classList.contains('dark')")
    findings["HomePage"] = check_axe(page, f"HomePage ({scheme})")
    # Lesser findings do not fail the test; they are listed for the record (pytest -rP).
    for what, violations in findings.items():
        print(f"{what} ({scheme}) axe findings below serious: {report_lines(violations)}")
