"""Cookies of an HTTPS deployment: ``__Host-`` names, ``Secure``, no ``Domain``, small."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.apptest import PAGE, form_fields, running_app

pytestmark = pytest.mark.anyio

SECURE_BASE = "https://prodio.test"
PASSWORD = "correct horse battery"


def attributes(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    pair, *parts = [part.strip() for part in set_cookie.split(";")]
    name, _, value = pair.partition("=")
    flags = {}
    for part in parts:
        key, _, flag_value = part.partition("=")
        flags[key.lower()] = flag_value
    return name, value, flags


def assert_host_only_secure_cookie(set_cookie: str, base_name: str) -> None:
    name, value, flags = attributes(set_cookie)
    assert name == f"__Host-{base_name}"
    assert "secure" in flags
    assert "httponly" in flags
    assert flags["path"] == "/"
    assert "domain" not in flags
    assert flags["samesite"] == "Lax"
    assert len(name) + len(value) < 4096


async def test_secure_deployment_cookies(tmp_path: Path) -> None:
    async with running_app(tmp_path, cookie_secure=True) as env:
        env.add_user("alice", PASSWORD)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=env.app), base_url=SECURE_BASE
        ) as client:
            page = await client.get("/login", headers=PAGE)
            [csrf_cookie] = page.headers.get_list("set-cookie")
            assert_host_only_secure_cookie(csrf_cookie, "prodio_csrf")
            assert page.headers["strict-transport-security"].startswith("max-age=31536000")

            response = await client.post(
                "/login",
                data={
                    "username": "alice",
                    "password": PASSWORD,
                    "csrf_token": form_fields(page.text)["csrf_token"],
                },
                headers={**PAGE, "origin": SECURE_BASE, "sec-fetch-site": "same-origin"},
            )
            assert response.status_code == 303, response.text
            cookies = response.headers.get_list("set-cookie")
            [session_cookie] = [c for c in cookies if c.startswith("__Host-prodio_session=")]
            assert_host_only_secure_cookie(session_cookie, "prodio_session")
            assert "max-age" in attributes(session_cookie)[2]

            home = await client.get("/", headers=PAGE)
            assert home.status_code == 200
            assert home.headers["cache-control"] == "no-store"
