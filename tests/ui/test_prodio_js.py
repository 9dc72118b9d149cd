"""static/prodio.js under node, with a stubbed window (see prodio_js_driver.cjs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from prodio.ui.paths import STATIC_DIR
from tests.conftest import require_binary

DRIVER = Path(__file__).with_name("prodio_js_driver.cjs")
PAGE_NEXT = "next=%2Fapp%2F%3Ftab%3Dnotes%26x%3D1"  # /app/?tab=notes&x=1, the stub page


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    node = require_binary("node")
    completed = subprocess.run(
        [node, str(DRIVER), str(STATIC_DIR / "prodio.js")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    data: dict[str, Any] = json.loads(completed.stdout)
    return data


def scenario(results: dict[str, Any], name: str) -> Any:
    outcome = results[name]
    assert outcome["ok"], outcome.get("error")
    return outcome["value"]


def test_401_from_fetch_goes_to_login_with_the_current_page(results: dict[str, Any]) -> None:
    value = scenario(results, "fetch_401_redirects_to_login")
    assert value["assigned"] == [f"/login?{PAGE_NEXT}"]
    assert value["settled"] is False  # Gradio never sees the 401: no error toast


def test_401_without_json_body_still_goes_to_login(results: dict[str, Any]) -> None:
    assert scenario(results, "fetch_401_without_json_body")["assigned"] == [f"/login?{PAGE_NEXT}"]


def test_200_does_not_redirect(results: dict[str, Any]) -> None:
    value = scenario(results, "fetch_200_does_not_redirect")
    assert value["assigned"] == []
    assert value["status"] == 200
    assert value["body"] == {"data": ["ok"]}


def test_other_errors_are_left_to_gradio(results: dict[str, Any]) -> None:
    value = scenario(results, "fetch_500_is_left_to_gradio")
    assert (value["assigned"], value["status"]) == ([], 500)


def test_cross_origin_401_is_left_alone(results: dict[str, Any]) -> None:
    value = scenario(results, "cross_origin_401_is_left_alone")
    assert (value["assigned"], value["status"]) == ([], 401)


def test_login_url_to_another_site_is_not_followed(results: dict[str, Any]) -> None:
    assert scenario(results, "foreign_login_url_is_not_followed")["assigned"] == [
        f"/login?{PAGE_NEXT}"
    ]


def test_login_url_path_and_parameters_are_kept(results: dict[str, Any]) -> None:
    assert scenario(results, "custom_login_path_is_kept")["assigned"] == [
        f"/auth/login?x=1&{PAGE_NEXT}"
    ]


def test_many_401s_redirect_once(results: dict[str, Any]) -> None:
    assert len(scenario(results, "several_401s_redirect_once")["assigned"]) == 1


def test_401_from_xhr_goes_to_login(results: dict[str, Any]) -> None:
    assert scenario(results, "xhr_401_redirects")["assigned"] == [f"/login?{PAGE_NEXT}"]


def test_200_from_xhr_does_not_redirect(results: dict[str, Any]) -> None:
    value = scenario(results, "xhr_200_does_not_redirect")
    assert (value["assigned"], value["status"]) == ([], 200)


def test_closed_event_source_checks_the_session(results: dict[str, Any]) -> None:
    value = scenario(results, "event_source_error_checks_the_session")
    assert value["wrapped"] is True
    assert value["assigned"] == [f"/login?{PAGE_NEXT}"]


def test_logout_submits_a_post_form_with_the_csrf_token(results: dict[str, Any]) -> None:
    value = scenario(results, "logout_posts_the_csrf_form")
    (form,) = value["forms"]
    assert (form["method"], form["action"], form["submitted"]) == ("post", "/logout", True)
    (field,) = form["children"]
    assert (field["type"], field["name"], field["value"]) == ("hidden", "csrf_token", "csrf-abc")
    assert value["assigned"] == []


def test_logout_falls_back_to_the_confirmation_page(results: dict[str, Any]) -> None:
    value = scenario(results, "logout_falls_back_to_the_confirmation_page")
    assert value == {"assigned": ["/logout"], "forms": 0}


def test_idle_notice_a_minute_before_and_stay_signed_in(results: dict[str, Any]) -> None:
    value = scenario(results, "idle_notice_and_stay_signed_in")
    # Idle timeout 120 s: the notice after 60 s, the redirect a quarter second after expiry.
    assert value["delays"] == [60_000, 120_250]
    (notice,) = value["shown"]
    assert notice["className"] == "prodio-notice"
    assert notice["role"] == "alert"
    text, button = notice["children"]
    assert "signed out in" in text["text"]
    assert button["text"] == "Stay signed in"
    # The button calls GET /api/session (which extends the session) and hides the notice.
    assert value["sessionCallsAfter"] == value["sessionCallsBefore"] + 1
    assert value["remaining"] == 0
    assert value["assigned"] == []


def test_absolute_end_cannot_be_postponed(results: dict[str, Any]) -> None:
    (notice,) = scenario(results, "absolute_end_notice_has_no_stay_button")["shown"]
    text, button = notice["children"]
    assert "sign in again" in text["text"]
    assert button["text"] == "Dismiss"


def test_activity_in_the_app_hides_the_notice(results: dict[str, Any]) -> None:
    value = scenario(results, "activity_hides_the_idle_notice")
    assert (value["before"], value["after"]) == (1, 0)
    assert sorted(value["liveDelays"]) == [60_000, 120_250]


def test_loading_twice_installs_once(results: dict[str, Any]) -> None:
    assert scenario(results, "loaded_twice_installs_once")["same"] is True
