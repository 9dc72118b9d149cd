"""Static files: served with cache headers, never outside their folders, no listings."""

from __future__ import annotations

import io
import json
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from prodio.routes.static import CACHE_CONTROL, mount_static
from prodio.ui.paths import STATIC_DIR

pytestmark = pytest.mark.anyio


def make_app(**kwargs: Any) -> FastAPI:
    app = FastAPI()
    mount_static(app, **kwargs)
    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        return await client.get(path, follow_redirects=True)


async def raw_get(app: FastAPI, raw_path: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a path byte for byte (an HTTP client would normalise ``..`` away)."""
    path = unquote_to_bytes(raw_path.split(b"?")[0]).decode("utf-8", "surrogateescape")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/prodio.css", "text/css"),
        ("/static/prodio.js", "javascript"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/manifest.json", "application/json"),
        ("/favicon.ico", "image/x-icon"),
        ("/manifest.json", "application/manifest+json"),
    ],
)
async def test_files_are_served_with_cache_headers(path: str, content_type: str) -> None:
    response = await get(make_app(), path)
    assert response.status_code == 200
    assert content_type in response.headers["content-type"]
    assert response.headers["cache-control"] == CACHE_CONTROL
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_not_modified_keeps_the_cache_header() -> None:
    app = make_app()
    first = await get(app, "/static/prodio.css")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        again = await client.get(
            "/static/prodio.css", headers={"if-none-match": first.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.headers["cache-control"] == CACHE_CONTROL


async def test_gradio_static_files_are_reachable_under_static() -> None:
    """A Gradio app mounted at / loads /static/js/...; prodio's mount must not hide it."""
    response = await get(make_app(), "/static/js/iframeResizer.contentWindow.min.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == CACHE_CONTROL


async def test_prodio_files_win_over_gradio_files() -> None:
    response = await get(make_app(), "/static/prodio.css")
    assert response.content == (STATIC_DIR / "prodio.css").read_bytes()


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/static/../config.py",
        b"/static/../../prodio/config.py",
        b"/static/%2e%2e/config.py",
        b"/static/%2E%2E/%2E%2E/prodio/config.py",
        b"/static/..%2fconfig.py",
        b"/static/..%2Fconfig.py",
        b"/static/%2e%2e%2fconfig.py",
        b"/static/..%5cconfig.py",
        b"/static//etc/passwd",
        b"/static/%2fetc%2fpasswd",
        b"/static/fonts/../../../../routes.py",
        b"/static/prodio.css%00.txt",
    ],
)
async def test_traversal_is_refused(raw_path: bytes) -> None:
    status, _, body = await raw_get(make_app(), raw_path)
    assert status == 404
    assert b"import" not in body
    assert b"root:" not in body


@pytest.mark.parametrize("path", ["/static/", "/static", "/static/fonts/", "/static/img"])
async def test_directories_are_not_listed(path: str) -> None:
    response = await get(make_app(), path)
    assert response.status_code == 404
    assert "prodio.css" not in response.text


async def test_only_get_and_head() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app()), base_url="http://testserver"
    ) as client:
        assert (await client.post("/static/prodio.css")).status_code == 405
        assert (await client.head("/static/prodio.css")).status_code == 200


async def test_favicon_ico_is_a_real_icon() -> None:
    response = await get(make_app(), "/favicon.ico")
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "ICO"
    assert {(16, 16), (32, 32)} <= set(image.info["sizes"])


async def test_manifest_is_named_after_the_app() -> None:
    default = (await get(make_app(), "/manifest.json")).json()
    named = (await get(make_app(app_name="Acme Reports"), "/manifest.json")).json()
    assert default["name"] == "prodio"
    assert named["name"] == "Acme Reports"
    assert named["short_name"] == "Acme Reports"
    assert all(not icon["src"].startswith("http") for icon in named["icons"])


def test_static_files_reference_no_external_host() -> None:
    for path in STATIC_DIR.iterdir():
        if path.suffix in {".css", ".js", ".json", ".svg"}:
            text = path.read_text("utf-8")
            for marker in ("http://", "https://", "//fonts.", "@import"):
                allowed = path.suffix == ".svg" and marker == "http://"  # the SVG namespace
                assert allowed or marker not in text, f"{path.name} contains {marker}"


def test_manifest_file_is_valid_json() -> None:
    data = json.loads((STATIC_DIR / "manifest.json").read_text("utf-8"))
    assert data["start_url"] == "/"
