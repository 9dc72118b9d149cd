"""Security headers through the whole app: every kind of response carries them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from prodio.middleware.headers import (
    BASE_HEADERS,
    GRADIO_PAGE_POLICY,
    HSTS_VALUE,
    NON_DOCUMENT_POLICY,
    PRODIO_PAGE_POLICY,
)
from tests.apptest import FETCH, ORIGIN, PAGE, AppUnderTest, running_app

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AppUnderTest]:
    async with running_app(tmp_path_factory.mktemp("app")) as app_env:
        app_env.add_user("alice", PASSWORD)
        yield app_env


@pytest.fixture
async def alice(env: AppUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with env.new_client() as client:
        assert (await env.login("alice", PASSWORD, client=client)).status_code == 303
        yield client


@pytest.fixture
async def anonymous(env: AppUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with env.new_client() as client:
        yield client


def assert_base_headers(response: httpx.Response) -> None:
    for name, value in BASE_HEADERS:
        assert response.headers.get_list(name) == [value], name
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "strict-transport-security" not in response.headers


async def test_login_page(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/login", headers=PAGE)
    assert response.status_code == 200
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == PRODIO_PAGE_POLICY
    assert response.headers["cache-control"] == "no-store"


async def test_failed_login_page(env: AppUnderTest, anonymous: httpx.AsyncClient) -> None:
    response = await env.login("alice", "wrong password", client=anonymous)
    assert response.status_code == 401
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == PRODIO_PAGE_POLICY


async def test_home_page(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/", headers=PAGE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == GRADIO_PAGE_POLICY
    assert response.headers["cache-control"] == "no-store"


async def test_logout_page(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/logout", headers=PAGE)
    assert response.status_code == 200
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == PRODIO_PAGE_POLICY
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/", "/config", "/gradio_api/queue/join", "/api/session"])
async def test_401_answers(anonymous: httpx.AsyncClient, path: str) -> None:
    response = await anonymous.get(path, headers=FETCH)
    assert response.status_code == 401
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == NON_DOCUMENT_POLICY


async def test_redirect_to_login(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/", headers=PAGE)
    assert response.status_code == 303
    assert_base_headers(response)


async def test_403_page_for_a_cross_site_navigation(alice: httpx.AsyncClient) -> None:
    headers = {**PAGE, "origin": "http://evil.example", "sec-fetch-site": "cross-site"}
    response = await alice.post("/gradio_api/upload", headers=headers, content=b"")
    assert response.status_code == 403
    assert_base_headers(response)
    assert response.headers["content-security-policy"] == PRODIO_PAGE_POLICY


@pytest.mark.parametrize("path", ["/static/prodio.css", "/favicon.ico", "/manifest.json"])
async def test_static_files_keep_their_caching(
    anonymous: httpx.AsyncClient, alice: httpx.AsyncClient, path: str
) -> None:
    for client in (anonymous, alice):
        response = await client.get(path)
        assert response.status_code == 200
        assert_base_headers(response)
        assert response.headers["content-security-policy"] == NON_DOCUMENT_POLICY
        assert response.headers.get_list("cache-control") == ["public, max-age=3600"]


@pytest.mark.parametrize("path", ["/api/session", "/config", "/gradio_api/info", "/theme.css"])
async def test_authenticated_answers_are_never_stored(alice: httpx.AsyncClient, path: str) -> None:
    response = await alice.get(path, headers=FETCH)
    assert response.status_code == 200
    assert_base_headers(response)
    assert response.headers.get_list("cache-control") == ["no-store"]


async def test_an_uploaded_file_is_never_stored(alice: httpx.AsyncClient) -> None:
    headers = {**ORIGIN, "sec-fetch-site": "same-origin"}
    upload = await alice.post(
        "/gradio_api/upload", files={"files": ("a.txt", b"private", "text/plain")}, headers=headers
    )
    [path] = upload.json()
    response = await alice.get(f"/gradio_api/file={path}")
    assert response.status_code == 200
    assert response.content == b"private"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == NON_DOCUMENT_POLICY


async def test_a_ranged_file_answer_does_not_echo_the_session_cookie(
    alice: httpx.AsyncClient,
) -> None:
    """Gradio copies the request's headers into a ranged file response; HttpOnly means the
    page's scripts must never see the session cookie, so it must not come back."""
    headers = {**ORIGIN, "sec-fetch-site": "same-origin"}
    upload = await alice.post(
        "/gradio_api/upload", files={"files": ("a.txt", b"private", "text/plain")}, headers=headers
    )
    [path] = upload.json()
    response = await alice.get(f"/gradio_api/file={path}", headers={"range": "bytes=0-3"})
    assert response.status_code == 206
    assert response.content == b"priv"
    session = alice.cookies.get("prodio_session")
    assert session
    assert "cookie" not in response.headers
    assert all(session not in value for value in response.headers.values())


async def test_gradio_build_assets_stay_cacheable(alice: httpx.AsyncClient) -> None:
    page = await alice.get("/", headers=PAGE)
    script = page.text.split('<script type="module" crossorigin src="./', 1)[1].split('"', 1)[0]
    assert script.startswith("assets/")
    response = await alice.get("/" + script)
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("cache-control", "")
    assert_base_headers(response)


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "CONNECT"])
@pytest.mark.parametrize("path", ["/", "/login", "/gradio_api/queue/join", "/static/prodio.css"])
async def test_trace_and_friends_get_405(alice: httpx.AsyncClient, method: str, path: str) -> None:
    response = await alice.request(method, path, headers={"x-probe": "echo me"})
    assert response.status_code == 405
    assert "echo me" not in response.text
    assert "allow" in response.headers
    assert method not in response.headers["allow"]
    assert_base_headers(response)


async def test_hsts_only_when_cookies_are_secure(tmp_path: Path) -> None:
    async with running_app(tmp_path / "plain") as plain:
        response = await plain.client.get("/login")
        assert "strict-transport-security" not in response.headers
    async with running_app(tmp_path / "secure", cookie_secure=True) as secure:
        for path in ("/login", "/healthz", "/static/prodio.css", "/config"):
            response = await secure.client.get(path)
            assert response.headers["strict-transport-security"] == HSTS_VALUE, path
