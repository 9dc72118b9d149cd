"""The Jinja2 templates, rendered the way the lead's routes render them."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.templating import Jinja2Templates
from starlette.requests import Request

from prodio.ui.paths import TEMPLATES_DIR

XSS = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=TEMPLATES_DIR)


def render(templates: Jinja2Templates, name: str, **context: Any) -> str:
    return templates.get_template(name).render(**context)


class Elements(HTMLParser):
    """Collects start tags with their attributes (and checks the HTML parses)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            found
            for name, found in self.tags
            if name == tag and all(found.get(k) == v for k, v in attrs.items())
        ]


def elements(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def login_context(**overrides: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "app_name": "Acme",
        "csrf_token": "tok-123",
        "next": "/app/?tab=notes",
        "error": None,
        "username": "",
    }
    context.update(overrides)
    return context


def test_login_form_posts_to_login_with_hidden_fields(templates: Jinja2Templates) -> None:
    page = elements(render(templates, "login.html", **login_context()))
    (form,) = page.find("form")
    assert form["method"] == "post"
    assert form["action"] == "/login"
    assert page.find("input", type="hidden", name="csrf_token", value="tok-123")
    assert page.find("input", type="hidden", name="next", value="/app/?tab=notes")


def test_login_fields_have_labels_and_autocomplete(templates: Jinja2Templates) -> None:
    page = elements(render(templates, "login.html", **login_context()))
    (user,) = page.find("input", name="username")
    (password,) = page.find("input", name="password")
    assert user["autocomplete"] == "username"
    assert password["autocomplete"] == "current-password"
    assert password["type"] == "password"
    assert page.find("label", **{"for": str(user["id"])})
    assert page.find("label", **{"for": str(password["id"])})
    assert page.find("link", rel="stylesheet", href="/static/prodio.css")
    assert not page.find("script")  # works without JavaScript


def test_error_is_an_alert_and_escaped(templates: Jinja2Templates) -> None:
    html = render(templates, "login.html", **login_context(error=XSS))
    assert XSS not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    page = elements(html)
    (alert,) = page.find("div", role="alert")
    (form,) = page.find("form")
    assert form["aria-describedby"] == alert["id"]


def test_no_alert_without_error(templates: Jinja2Templates) -> None:
    assert not elements(render(templates, "login.html", **login_context())).find(
        "div", role="alert"
    )


def test_username_prefill_is_escaped(templates: Jinja2Templates) -> None:
    hostile = '"><script>alert(1)</script>'
    html = render(templates, "login.html", **login_context(username=hostile))
    assert "<script>alert(1)" not in html
    (user,) = elements(html).find("input", name="username")
    assert user["value"] == hostile  # the parser unescapes: the value round-trips intact
    # With a name filled in, the password field gets the focus.
    (password,) = elements(html).find("input", name="password")
    assert "autofocus" in password


def test_next_is_escaped_in_its_hidden_field(templates: Jinja2Templates) -> None:
    hostile = '/x" onfocus="alert(1)'
    html = render(templates, "login.html", **login_context(next=hostile))
    assert 'onfocus="alert(1)' not in html
    assert elements(html).find("input", type="hidden", name="next", value=hostile)


@pytest.mark.parametrize("empty", ["", None])
def test_empty_next_and_username(templates: Jinja2Templates, empty: str | None) -> None:
    html = render(templates, "login.html", **login_context(next=empty, username=empty))
    assert "None" not in html
    assert elements(html).find("input", type="hidden", name="next", value="")


def test_app_name_is_escaped_everywhere(templates: Jinja2Templates) -> None:
    for name, context in [
        ("login.html", login_context(app_name=XSS)),
        ("logout.html", {"app_name": XSS, "csrf_token": "t", "user": "bob"}),
        ("error.html", {"app_name": XSS, "status_code": 404, "title": "t", "message": "m"}),
    ]:
        html = render(templates, name, **context)
        assert XSS not in html, name
        assert "&lt;script&gt;" in html, name


def test_logout_is_a_one_button_form(templates: Jinja2Templates) -> None:
    html = render(templates, "logout.html", app_name="Acme", csrf_token="tok-9", user="<b>bob</b>")
    page = elements(html)
    (form,) = page.find("form")
    assert (form["method"], form["action"]) == ("post", "/logout")
    assert page.find("input", type="hidden", name="csrf_token", value="tok-9")
    assert len(page.find("button")) == 1
    assert "&lt;b&gt;bob&lt;/b&gt;" in html


def test_error_page_shows_status_title_message_escaped(templates: Jinja2Templates) -> None:
    html = render(
        templates,
        "error.html",
        app_name="Acme",
        status_code=503,
        title="Service unavailable",
        message=f"Try again {XSS}",
    )
    assert "Error 503" in html
    assert '<h1 id="error-title">Service unavailable</h1>' in html
    assert XSS not in html
    assert "<title>Service unavailable · Acme</title>" in html


def test_templates_render_through_a_response(templates: Jinja2Templates) -> None:
    """As the lead's routes call them: TemplateResponse with a request in the context."""
    request = Request({"type": "http", "method": "GET", "path": "/login", "headers": []})
    response = templates.TemplateResponse(request, "login.html", login_context(error=XSS))
    assert response.status_code == 200
    assert XSS.encode() not in bytes(response.body)
