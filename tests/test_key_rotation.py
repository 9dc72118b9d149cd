"""Rotating the secret key keeps people signed in for the overlap, and not after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prodio.session.base import SessionTimeouts
from prodio.session.memory import InMemorySessionStore
from tests.apptest import FETCH, SECRET, running_app, session_cookie_of

PASSWORD = "correct horse battery"
NEW_SECRET = "rotated-secret-" + "y" * 40


@pytest.mark.anyio
async def test_cookie_signed_with_the_previous_key_works_until_the_overlap_ends(
    tmp_path: Path,
) -> None:
    # Instances share the session store, as they would share Redis; all stay up, since
    # closing an app closes its store.
    store = InMemorySessionStore(SessionTimeouts(1800, 28800))
    overlap = {
        "secret_key": NEW_SECRET,
        "previous_secret_keys": [SECRET],
        "previous_secret_keys_until": datetime.now(UTC) + timedelta(hours=8),
    }
    ended = {**overlap, "previous_secret_keys_until": datetime.now(UTC) - timedelta(seconds=1)}
    async with (
        running_app(tmp_path, sessions=store) as before,
        running_app(tmp_path, sessions=store, **overlap) as rotated,
        running_app(tmp_path, sessions=store, **ended) as after,
    ):
        before.add_user("alice", PASSWORD)
        cookie = session_cookie_of(await before.login("alice", PASSWORD))
        assert cookie

        rotated.client.cookies.set("prodio_session", cookie)
        assert (await rotated.client.get("/api/session", headers=FETCH)).status_code == 200

        after.client.cookies.set("prodio_session", cookie)
        assert (await after.client.get("/api/session", headers=FETCH)).status_code == 401
        # A cookie signed with the new key works everywhere the new key is current.
        fresh = session_cookie_of(await rotated.login("alice", PASSWORD))
        assert fresh
        async with after.new_client() as browser:
            browser.cookies.set("prodio_session", fresh)
            assert (await browser.get("/api/session", headers=FETCH)).status_code == 200


@pytest.mark.anyio
async def test_without_the_previous_key_old_cookies_are_refused(tmp_path: Path) -> None:
    store = InMemorySessionStore(SessionTimeouts(1800, 28800))
    async with (
        running_app(tmp_path, sessions=store) as before,
        running_app(tmp_path, sessions=store, secret_key=NEW_SECRET) as rotated,
    ):
        before.add_user("alice", PASSWORD)
        cookie = session_cookie_of(await before.login("alice", PASSWORD))
        assert cookie
        assert (await before.client.get("/api/session", headers=FETCH)).status_code == 200
        rotated.client.cookies.set("prodio_session", cookie)
        assert (await rotated.client.get("/api/session", headers=FETCH)).status_code == 401


@pytest.mark.anyio
async def test_deployments_sharing_a_secret_refuse_each_others_cookies(tmp_path: Path) -> None:
    """Same secret, same session store, different ``PRODIO_JWT_AUDIENCE``: the audience
    alone keeps a staging cookie out of production (ASVS 9.2.3)."""
    store = InMemorySessionStore(SessionTimeouts(1800, 28800))
    async with (
        running_app(tmp_path, sessions=store, jwt_audience="shop-staging") as staging,
        running_app(tmp_path, sessions=store, jwt_audience="shop") as production,
    ):
        staging.add_user("alice", PASSWORD)
        cookie = session_cookie_of(await staging.login("alice", PASSWORD))
        assert cookie
        assert (await staging.client.get("/api/session", headers=FETCH)).status_code == 200

        production.client.cookies.set("prodio_session", cookie)
        assert (await production.client.get("/api/session", headers=FETCH)).status_code == 401
