"""Gradio's upload and file routes through the whole app, with real Gradio and two users.

Part one: a user cannot reach a file another user uploaded, however the path is spelled,
neither on the file routes nor as the input of an event (the home page here has a tab with
file inputs, as an app built on prodio may have).
Part two: the behaviour of Gradio's own that prodio relies on (size limit, multipart
limits, active content served as a download, paths outside the uploads refused), pinned so
that a Gradio upgrade that changes it fails here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import anyio
import gradio as gr
import httpx
import pytest
from fastapi import FastAPI
from gradio import processing_utils
from starlette.routing import BaseRoute, Mount

import prodio.main
from prodio.audit import AUDIT_LOGGER
from prodio.config import Settings
from prodio.middleware.headers import NON_DOCUMENT_POLICY
from prodio.middleware.uploads import (
    EVENT_ROUTES,
    FILE_ROUTES,
    INVALID_JSON_DETAIL,
    MAX_EVENT_BODY_BYTES,
    NOT_FOUND_DETAIL,
    REASON_NOT_OWNER,
    TOO_LARGE_DETAIL,
    UPLOAD_NOT_FOUND,
    UPLOAD_PROGRESS_ROUTE,
    UPLOAD_ROUTE,
)
from prodio.pages.base import Page, Tab
from prodio.pages.home import HomePage
from prodio.routes.home import mount_home
from prodio.session.base import SessionStore, SessionTimeouts
from prodio.session.redis import RedisSessionStore
from prodio.ui.mount import file_lifetime, mount_page
from prodio.ui.state import UserState
from prodio.uploads import cleanup_interval
from prodio.uploads.base import UploadRegistry
from tests.apptest import (
    BASE_URL,
    FETCH,
    ORIGIN,
    PAGE,
    PASSWORD,
    SECRET,
    AppUnderTest,
    running_app,
    signed_in,
    signed_in_fixture,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SAME_ORIGIN = {**ORIGIN, "sec-fetch-site": "same-origin"}
MAX_FILE_SIZE = 64 * 1024
USERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


# What the file inputs' handlers were given: the bytes of each file they read.
HANDLED: list[bytes] = []


def read_file(path: str | None) -> str:
    if path is None:
        return ""
    content = Path(path).read_bytes()
    HANDLED.append(content)
    return content.decode()


def read_gallery(images: list[tuple[str, str | None]] | None) -> str:
    return "|".join(read_file(path) for path, _ in images or [])


class FileInputTab(Tab):
    """File inputs whose handlers answer with the content of the files they are given."""

    title = "Files"
    slug = "file_input"

    def build(self, state: UserState) -> None:
        file = gr.File(label="A file")
        gallery = gr.Gallery(label="Images")
        content = gr.Textbox(label="Content")
        gr.Button("Read").click(
            read_file, inputs=[file], outputs=[content], **self.event(api_name="file_echo")
        )
        gr.Button("Read in turn").click(
            read_file,
            inputs=[file],
            outputs=[content],
            **self.event(api_name="file_echo_queued", queue=True),
        )
        gr.Button("Read the images").click(
            read_gallery, inputs=[gallery], outputs=[content], **self.event(api_name="gallery_echo")
        )


class FilesPage(Page):
    title = "Files"
    tab_classes: ClassVar[Sequence[type[Tab]]] = (FileInputTab,)


@asynccontextmanager
async def app_with_file_inputs(
    data_dir: Path, *, extra_page: tuple[str, Page] | None = None, **overrides: Any
) -> AsyncIterator[AppUnderTest]:
    """The app with :class:`FileInputTab` on its home page, and ``extra_page`` (mount path,
    page) mounted as docs/extending.md does it. Pages are built as the app is."""
    async with AsyncExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(HomePage, "tab_classes", [*HomePage.tab_classes, FileInputTab])
            if extra_page is not None:
                page_path, page = extra_page

                def mount_pages(
                    app: FastAPI,
                    settings: Settings,
                    store: SessionStore,
                    *,
                    uploads: UploadRegistry | None = None,
                ) -> None:
                    # Just before the home page, as docs/extending.md shows.
                    mount_page(app, settings, store, page, page_path, uploads=uploads)
                    mount_home(app, settings, store, uploads=uploads)

                patch.setattr(prodio.main, "mount_home", mount_pages)
            app_env = await stack.enter_async_context(running_app(data_dir, **overrides))
        yield app_env


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AppUnderTest]:
    # One app for the module: building the Gradio app is the slow part.
    async with app_with_file_inputs(
        tmp_path_factory.mktemp("app"), max_file_size=MAX_FILE_SIZE
    ) as app_env:
        for user in USERS:
            app_env.add_user(user, PASSWORD)
        yield app_env


alice = signed_in_fixture("alice")
bob = signed_in_fixture("bob")
carol = signed_in_fixture("carol")


def secret_bytes() -> bytes:
    """Content no other test (or concurrent test run) uploads: a path of its own."""
    return f"private {uuid.uuid4()}".encode()


async def upload(
    client: httpx.AsyncClient,
    content: bytes,
    name: str = "private.txt",
    *,
    query: str = "",
    prefix: str = "",
) -> str:
    response = await client.post(
        f"{prefix}/gradio_api/upload{query}",
        files={"files": (name, content, "application/octet-stream")},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 200, response.text
    [path] = response.json()
    assert isinstance(path, str)
    return path


def gradio_app(env: AppUnderTest) -> Any:
    for route in env.app.routes:
        if hasattr(getattr(route, "app", None), "get_blocks"):
            return route.app  # type: ignore[attr-defined]
    raise AssertionError("no Gradio app mounted")


def upload_dir(env: AppUnderTest) -> Path:
    return Path(gradio_app(env).uploaded_file_dir)


def files_holding(folder: Path, content: bytes) -> list[Path]:
    """Every file under ``folder`` whose bytes start with ``content``."""
    found = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and path.read_bytes().startswith(content):
                found.append(path)
        except OSError:
            continue  # deleted meanwhile by another app's clean-up
    return found


# --- part one: each user's uploads are theirs --------------------------------------------


async def test_another_user_cannot_fetch_an_upload(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    content = secret_bytes()
    path = await upload(alice, content)
    mine = await alice.get(f"/gradio_api/file={path}")
    assert mine.status_code == 200
    assert mine.content == content
    theirs = await bob.get(f"/gradio_api/file={path}")
    assert theirs.status_code == 404
    assert content not in theirs.content
    assert theirs.json() == {"detail": NOT_FOUND_DETAIL}


def _relative_to_cwd(path: str) -> str:
    return os.path.relpath(path, Path.cwd())


def _sha_dir_and_name(path: str) -> tuple[str, str, str]:
    folder, sha, name = path.rsplit("/", 2)
    return folder, sha, name


# Each spelling names the same file: (id, URL of the request, extra request headers).
ALIASES: list[tuple[str, Callable[[str], str], dict[str, str]]] = [
    ("plain", lambda p: f"/gradio_api/file={p}", {}),
    ("deprecated-route", lambda p: f"/gradio_api/file/{p}", {}),
    ("ranged", lambda p: f"/gradio_api/file={p}", {"range": "bytes=0-6"}),
    ("encoded-slashes", lambda p: "/gradio_api/file=" + quote(p, safe=""), {}),
    ("encoded-equals-sign", lambda p: f"/gradio_api/file%3D{p}", {}),
    ("dot-segment", lambda p: "/gradio_api/file=" + quote(p.replace("/", "/./"), safe=""), {}),
    (
        "dot-dot-segment",
        lambda p: (
            "/gradio_api/file=" + quote("{0}/{1}/../{1}/{2}".format(*_sha_dir_and_name(p)), safe="")
        ),
        {},
    ),
    (
        "double-slashes",
        lambda p: "/gradio_api/file=/" + quote(p[1:].replace("/", "//"), safe=""),
        {},
    ),
    ("trailing-slash", lambda p: f"/gradio_api/file={p}/", {}),
    ("trailing-newline", lambda p: f"/gradio_api/file={p}%0A", {}),
    ("relative-to-cwd", lambda p: "/gradio_api/file=" + quote(_relative_to_cwd(p), safe=""), {}),
    ("proc-self-root", lambda p: f"/gradio_api/file=/proc/self/root{p}", {}),
]
# Gradio answers HEAD on file= only (405 on the deprecated route, for everybody).
ALIAS_REQUESTS = [
    pytest.param(method, url, headers, id=f"{method}-{name}")
    for method in ("GET", "HEAD")
    for name, url, headers in ALIASES
    if not (method == "HEAD" and name == "deprecated-route")
]


@pytest.mark.parametrize(("method", "url", "headers"), ALIAS_REQUESTS)
async def test_no_spelling_of_the_path_reaches_another_users_upload(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    method: str,
    url: Callable[[str], str],
    headers: dict[str, str],
) -> None:
    content = secret_bytes()
    path = await upload(alice, content)
    # The spelling really reaches the file: its owner gets it through it.
    mine = await alice.request(method, url(path), headers=headers)
    assert mine.status_code in (200, 206), mine.text
    if method == "GET":
        assert content.startswith(mine.content)
    theirs = await bob.request(method, url(path), headers=headers)
    assert theirs.status_code == 404
    assert content[:7] not in theirs.content


async def test_an_upload_through_another_spelling_of_the_route_is_recorded(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Starlette's route patterns end in ``$``, which matches before a final newline too:
    Gradio takes ``/gradio_api/upload%0A`` for its upload route."""
    content = secret_bytes()
    response = await alice.post(
        UPLOAD_ROUTE + "%0A",
        files={"files": ("private.txt", content, "text/plain")},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 200
    [path] = response.json()
    assert (await alice.get(f"/gradio_api/file={path}")).content == content
    assert (await bob.get(f"/gradio_api/file={path}")).status_code == 404


async def test_a_refusal_looks_like_a_missing_file(
    env: AppUnderTest, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Gradio answers 403 for a missing file; prodio answers 404 for both, alike."""
    path = await upload(alice, secret_bytes())
    missing = str(upload_dir(env) / ("0" * 64) / "private.txt")
    for headers in (FETCH, PAGE):
        theirs = await bob.get(f"/gradio_api/file={path}", headers=headers)
        nothing = await bob.get(f"/gradio_api/file={missing}", headers=headers)
        assert theirs.status_code == nothing.status_code == 404
        assert theirs.content == nothing.content
        assert theirs.headers["content-type"] == nothing.headers["content-type"]


async def test_a_refusal_is_audited(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    path = await upload(alice, secret_bytes())
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    await bob.get(f"/gradio_api/file={path}")
    [record] = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    fields = vars(record)
    assert (fields["event"], fields["outcome"], fields["user"]) == (
        "access.denied",
        "failure",
        "bob",
    )
    assert (fields["status"], fields["reason"]) == (404, REASON_NOT_OWNER)
    assert record.levelno == logging.WARNING


async def test_the_same_file_uploaded_by_two_users_belongs_to_both(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, carol: httpx.AsyncClient
) -> None:
    content = secret_bytes()
    path = await upload(alice, content)
    assert await upload(bob, content) == path  # content-addressed: one file
    for owner in (alice, bob):
        response = await owner.get(f"/gradio_api/file={path}")
        assert (response.status_code, response.content) == (200, content)
    assert (await carol.get(f"/gradio_api/file={path}")).status_code == 404


async def test_an_upload_stays_its_owners_in_another_session(
    env: AppUnderTest, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    content = secret_bytes()
    path = await upload(alice, content)
    async with signed_in(env, "alice") as other_browser:
        response = await other_browser.get(f"/gradio_api/file={path}")
        assert (response.status_code, response.content) == (200, content)
    assert (await bob.get(f"/gradio_api/file={path}")).status_code == 404


async def test_another_users_upload_progress_is_not_found(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """The progress stream names the file being uploaded."""
    upload_id = uuid.uuid4().hex
    await upload(alice, secret_bytes(), "quarterly-results.txt", query=f"?upload_id={upload_id}")
    theirs = await bob.get(f"{UPLOAD_PROGRESS_ROUTE}?upload_id={upload_id}")
    assert theirs.status_code == 404
    assert theirs.content == UPLOAD_NOT_FOUND
    mine = await alice.get(f"{UPLOAD_PROGRESS_ROUTE}?upload_id={upload_id}")
    assert mine.status_code == 200
    assert '"msg": "done"' in mine.text


async def test_an_anonymous_upload_is_refused_and_stores_nothing(env: AppUnderTest) -> None:
    content = secret_bytes()
    async with env.new_client() as anonymous:
        response = await anonymous.post(
            UPLOAD_ROUTE, files={"files": ("a.txt", content, "text/plain")}, headers=SAME_ORIGIN
        )
    assert response.status_code == 401
    assert files_holding(upload_dir(env), content) == []


async def test_files_nobody_uploaded_keep_gradios_rules(
    env: AppUnderTest, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """A file Gradio wrote itself (an event's output, a cached example) is not an upload:
    whoever the page shows it to can fetch it, as before."""
    content = secret_bytes()
    output = processing_utils.save_bytes_to_cache(content, "output.txt", str(upload_dir(env)))
    for user in (alice, bob):
        response = await user.get(f"/gradio_api/file={output}")
        assert (response.status_code, response.content) == (200, content)


async def test_the_pages_keep_working(bob: httpx.AsyncClient) -> None:
    config = (await bob.get("/config", headers=FETCH)).json()

    async def call(api_name: str, data: list[Any]) -> Any:
        [index] = [d["id"] for d in config["dependencies"] if d["api_name"] == api_name]
        body = {"fn_index": index, "data": data, "session_hash": "pages"}
        response = await bob.post("/gradio_api/run/predict", json=body, headers=SAME_ORIGIN)
        assert response.status_code == 200, response.text
        return response.json()["data"][0]

    assert (await bob.get("/", headers=PAGE)).status_code == 200
    assert (await call("notepad_save", ["kept"])).startswith("Saved")
    assert await call("notepad_load", []) == "kept"
    assert "**bob**" in await call("account_summary", [])
    assert "<strong>bob</strong>" in await call("header_user", [])


# --- event inputs: another user's upload never reaches a handler -------------------------

JSON = {**SAME_ORIGIN, "content-type": "application/json"}


def file_data(path: str, **extra: object) -> dict[str, object]:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, **extra}


def event_body(*data: object, fn_index: int | None = None, session: bool = False) -> bytes:
    """An event's body. Without ``session`` it names no Gradio session (the run routes do
    not need one), so one body may be sent by two users: a session hash belongs to the
    first user who sends it (tests/test_security_gradio_sessions.py)."""
    body: dict[str, object] = {"data": list(data), "event_data": None}
    if session:
        body["session_hash"] = uuid.uuid4().hex
    if fn_index is not None:
        body["fn_index"] = fn_index
    return json.dumps(body).encode()


async def fn_index(client: httpx.AsyncClient, api_name: str) -> int:
    config = (await client.get("/config", headers=FETCH)).json()
    [index] = [d["id"] for d in config["dependencies"] if d["api_name"] == api_name]
    return int(index)


async def handled(content: bytes, times: int = 1) -> bool:
    """Whether a handler was given ``content`` ``times`` times, waiting for queued events."""
    for _ in range(500):  # the handler runs in a worker thread: polled, up to 10 s
        if HANDLED.count(content) >= times:
            return True
        await anyio.sleep(0.02)
    return False


async def test_another_users_upload_is_no_input(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    content = secret_bytes()
    path = await upload(alice, content)
    body = event_body(file_data(path))
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    theirs = await bob.post("/gradio_api/run/file_echo", content=body, headers=JSON)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": NOT_FOUND_DETAIL}
    assert content not in HANDLED
    [record] = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    fields = vars(record)
    assert (fields["event"], fields["user"], fields["status"], fields["reason"]) == (
        "access.denied",
        "bob",
        404,
        REASON_NOT_OWNER,
    )
    mine = await alice.post("/gradio_api/run/file_echo", content=body, headers=JSON)
    assert (mine.status_code, mine.json()["data"]) == (200, [content.decode()])
    assert HANDLED.count(content) == 1


# Each spelling of a file that Gradio takes as an input file (its owner's request through it
# runs the handler on the file): (id, body of the event for the file's path).
INPUT_SPELLINGS: list[tuple[str, Callable[[str], bytes]]] = [
    (
        "dot-dot",
        lambda p: event_body(file_data("{0}/{1}/../{1}/{2}".format(*_sha_dir_and_name(p)))),
    ),
    ("proc-self-root", lambda p: event_body(file_data(f"/proc/self/root{p}"))),
    ("relative-to-cwd", lambda p: event_body(file_data(_relative_to_cwd(p)))),
    # Spellings that a check of the raw bytes for "path" would miss: json.loads reads both.
    ("escaped-key", lambda p: event_body(file_data(p)).replace(b'"path"', b'"\\u0070ath"')),
    ("utf-16", lambda p: event_body(file_data(p)).decode().encode("utf-16")),
]


@pytest.mark.parametrize("spell", [pytest.param(spell, id=name) for name, spell in INPUT_SPELLINGS])
async def test_no_spelling_of_the_path_makes_another_users_upload_an_input(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, spell: Callable[[str], bytes]
) -> None:
    content = secret_bytes()
    body = spell(await upload(alice, content))
    theirs = await bob.post("/gradio_api/run/file_echo", content=body, headers=JSON)
    assert theirs.status_code == 404
    assert content not in HANDLED
    mine = await alice.post("/gradio_api/run/file_echo", content=body, headers=JSON)
    assert (mine.status_code, mine.json()["data"]) == (200, [content.decode()])


async def test_another_users_upload_is_no_input_of_any_event_route(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    content = secret_bytes()
    path = await upload(alice, content)
    direct = await fn_index(bob, "file_echo")
    queued = await fn_index(bob, "file_echo_queued")
    attempts = [
        ("/gradio_api/run/predict", event_body(file_data(path), fn_index=direct)),
        ("/gradio_api/api/file_echo", event_body(file_data(path))),
        ("/gradio_api/run/file_echo/", event_body(file_data(path))),
        ("/gradio_api/call/file_echo_queued", event_body(file_data(path))),
        ("/gradio_api/call/v2/file_echo_queued", json.dumps({"path": file_data(path)}).encode()),
        ("/gradio_api/queue/join", event_body(file_data(path), fn_index=queued, session=True)),
        (
            "/gradio_api/queue/join%0A",
            event_body(file_data(path), fn_index=queued, session=True),
        ),
        ("/gradio_api/run/gallery_echo", event_body([{"image": file_data(path), "caption": None}])),
    ]
    for route, body in attempts:
        response = await bob.post(route, content=body, headers=JSON)
        assert response.status_code == 404, route
    # The queued event of its owner runs; none of the attempts above ran before it.
    joined = await alice.post(
        "/gradio_api/queue/join",
        content=event_body(file_data(path), fn_index=queued, session=True),
        headers=JSON,
    )
    assert joined.status_code == 200
    assert await handled(content)
    gallery = event_body([{"image": file_data(path), "caption": None}])
    mine = await alice.post("/gradio_api/run/gallery_echo", content=gallery, headers=JSON)
    assert (mine.status_code, mine.json()["data"]) == (200, [content.decode()])
    assert HANDLED.count(content) == 2


async def test_a_url_naming_another_users_upload_is_refused(
    env: AppUnderTest, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Gradio reads an input file from its ``path`` and, for a local app, ignores its
    ``url``, or fetches an http ``path`` without the user's cookie; a request that names
    another user's upload in either is refused all the same."""
    content = secret_bytes()
    path = await upload(alice, content)
    output = processing_utils.save_bytes_to_cache(secret_bytes(), "out.txt", str(upload_dir(env)))
    for data in (
        file_data(output, url=f"/gradio_api/file={path}"),
        file_data(output, url=f"{BASE_URL}/gradio_api/file={quote(path)}"),
        file_data(f"{BASE_URL}/gradio_api/file={path}"),
    ):
        response = await bob.post(
            "/gradio_api/run/file_echo", content=event_body(data), headers=JSON
        )
        assert response.status_code == 404, data
    assert content not in HANDLED
    mine = event_body(file_data(output, url=f"/gradio_api/file={path}"))
    assert (
        await alice.post("/gradio_api/run/file_echo", content=mine, headers=JSON)
    ).status_code == 200


async def test_files_gradio_wrote_stay_inputs_for_anybody(
    env: AppUnderTest, bob: httpx.AsyncClient
) -> None:
    """An event's output fed back as an input, a cached example: no upload, Gradio's rules."""
    content = secret_bytes()
    output = processing_utils.save_bytes_to_cache(content, "output.txt", str(upload_dir(env)))
    body = event_body(file_data(output))
    response = await bob.post("/gradio_api/run/file_echo", content=body, headers=JSON)
    assert (response.status_code, response.json()["data"]) == (200, [content.decode()])


async def test_an_event_body_gradio_cannot_read_gets_a_4xx(bob: httpx.AsyncClient) -> None:
    malformed = await bob.post(
        "/gradio_api/run/file_echo", content=b'{"data": [{"path": ', headers=JSON
    )
    assert malformed.status_code == 422  # Gradio's own answer
    deep = b'{"path": "x", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    too_deep = await bob.post("/gradio_api/run/file_echo", content=deep, headers=JSON)
    assert too_deep.status_code == 400
    assert too_deep.json() == {"detail": INVALID_JSON_DETAIL}
    big = b'{"data": ["' + b"x" * MAX_EVENT_BODY_BYTES + b'"]}'
    too_large = await bob.post("/gradio_api/run/file_echo", content=big, headers=JSON)
    assert too_large.status_code == 413
    assert too_large.json() == {"detail": TOO_LARGE_DETAIL}


async def test_isolation_holds_on_every_page(tmp_path: Path) -> None:
    """A second page (docs/extending.md) is a Gradio app of its own at its own path, and
    shares the temp folder: its file routes, uploads and events are checked too."""
    async with app_with_file_inputs(tmp_path, extra_page=("/files", FilesPage())) as app_env:
        app_env.add_user("alice", PASSWORD)
        app_env.add_user("bob", PASSWORD)
        async with signed_in(app_env, "alice") as alice, signed_in(app_env, "bob") as bob:
            content = secret_bytes()
            home_path = await upload(alice, content)
            page_path = await upload(alice, secret_bytes(), prefix="/files")
            for path in (home_path, page_path):
                for mount in ("", "/files"):
                    url = f"{mount}/gradio_api/file={path}"
                    assert (await alice.get(url)).status_code == 200, url
                    assert (await bob.get(url)).status_code == 404, url
            body = event_body(file_data(home_path))
            theirs = await bob.post("/files/gradio_api/run/file_echo", content=body, headers=JSON)
            assert theirs.status_code == 404
            mine = await alice.post("/files/gradio_api/run/file_echo", content=body, headers=JSON)
            assert (mine.status_code, mine.json()["data"]) == (200, [content.decode()])


async def test_an_upload_does_not_outlive_its_instance(tmp_path: Path) -> None:
    """Gradio deletes the files an instance wrote when it stops: no file outlives the
    in-memory record that guarded it."""
    async with running_app(tmp_path, upload_lifetime=600) as app_env:
        assert gradio_app(app_env).get_blocks().delete_cache == (cleanup_interval(600), 600)
        assert file_lifetime(app_env.services.settings) == (cleanup_interval(600), 600)
        app_env.add_user("alice", PASSWORD)
        async with signed_in(app_env, "alice") as client:
            path = anyio.Path(await upload(client, secret_bytes()))
        assert await path.exists()
    assert not await path.exists()


async def test_isolation_holds_at_another_mount_path(tmp_path: Path) -> None:
    async with running_app(tmp_path, mount_path="/app") as app_env:
        app_env.add_user("alice", PASSWORD)
        app_env.add_user("bob", PASSWORD)
        content = secret_bytes()
        async with signed_in(app_env, "alice") as alice, signed_in(app_env, "bob") as bob:
            response = await alice.post(
                "/app" + UPLOAD_ROUTE,
                files={"files": ("private.txt", content, "text/plain")},
                headers=SAME_ORIGIN,
            )
            [path] = response.json()
            mine = await alice.get(f"/app/gradio_api/file={path}")
            assert (mine.status_code, mine.content) == (200, content)
            assert (await bob.get(f"/app/gradio_api/file={path}")).status_code == 404


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[str]:
    for route in routes:
        if hasattr(route, "original_router") and hasattr(route, "include_context"):
            yield from _walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            yield from _walk(list(route.routes), prefix + route.path)
        elif hasattr(route, "path"):
            yield prefix + route.path


# Gradio routes that take a path or a file name but serve no uploaded file, and why.
SERVE_NO_UPLOAD = {
    "/svelte/{path:path}": "Gradio's own frontend build, joined safely under its folder",
    "/static/{path:path}": "Gradio's own static files",
    "/assets/{path:path}": "Gradio's own build assets",
    "/gradio_api/custom_component/{id}/{environment}/{type}/{file_name}": "component code",
    "/gradio_api/proxy={url_path:path}": "remote files of apps loaded with gr.load only",
    "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file": (
        "a streaming output's media, found by Gradio session, not by path"
    ),
}


async def test_every_gradio_route_that_serves_a_path_is_known(env: AppUnderTest) -> None:
    """A route that a Gradio upgrade adds, and that takes a path, fails here until it is
    checked by the middleware or listed above with the reason it serves no upload."""
    templates = set(_walk(list(env.app.routes)))
    checked = {template for template, _ in FILE_ROUTES}
    assert {UPLOAD_ROUTE, UPLOAD_PROGRESS_ROUTE} | checked <= templates
    serving_paths = {t for t in templates if ":path}" in t or "file" in t.lower()}
    assert serving_paths == checked | set(SERVE_NO_UPLOAD)


def _post_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[str]:
    for route in routes:
        if hasattr(route, "original_router") and hasattr(route, "include_context"):
            yield from _post_routes(
                route.original_router.routes, prefix + route.include_context.prefix
            )
        elif isinstance(route, Mount):
            yield from _post_routes(list(route.routes), prefix + route.path)
        elif "POST" in (getattr(route, "methods", None) or ()):
            yield prefix + getattr(route, "path", "")


# Gradio's POST routes that run no event on data of the request, and why.
TAKE_NO_EVENT_DATA = {
    "/gradio_api/stream/{event_id}/close": "ends a stream: no data",
    "/gradio_api/cancel": "cancels an event by id: no data",
    "/gradio_api/reset": "a no-op",
    "/gradio_api/reset/": "a no-op",
    "/gradio_api/process_recording": "a screen recording's bytes (multipart), no path",
    "/gradio_api/vibe-edit": "vibe mode only (off): a prompt",
    "/gradio_api/vibe-edit/": "vibe mode only (off): a prompt",
    "/gradio_api/undo-vibe-edit": "vibe mode only (off)",
    "/gradio_api/undo-vibe-edit/": "vibe mode only (off)",
    "/gradio_api/vibe-code": "vibe mode only (off): code",
    "/gradio_api/vibe-code/": "vibe mode only (off): code",
    "/gradio_api/vibe-starter-queries": "vibe mode only (off)",
    "/gradio_api/vibe-starter-queries/": "vibe mode only (off)",
    "/login": "Gradio's login form, shadowed by prodio's /login",
    "/login/": "Gradio's login form (Gradio's auth is off: prodio signs users in)",
}


async def test_every_gradio_route_that_takes_event_data_is_checked(env: AppUnderTest) -> None:
    """A POST route that a Gradio upgrade adds fails here until the middleware reads its
    body or it is listed above with the reason it hands no file to a handler."""
    gradio = set(_post_routes(list(gradio_app(env).routes)))
    assert set(EVENT_ROUTES) <= gradio
    assert gradio - set(EVENT_ROUTES) - {UPLOAD_ROUTE} == set(TAKE_NO_EVENT_DATA)


async def test_instances_sharing_redis_share_the_owners(tmp_path: Path) -> None:
    """Several instances behind a load balancer, one Redis, one GRADIO_TEMP_DIR: an upload
    through one instance is refused to another user on every other instance."""
    with RedisServer(tmp_path / "redis") as server:
        timeouts = SessionTimeouts(idle=600, absolute=3600)
        stores = [RedisSessionStore.from_url(server.url, timeouts) for _ in range(2)]
        data = tmp_path / "data"
        async with (
            running_app(
                data, sessions=stores[0], session_backend="redis", redis_url=server.url
            ) as one,
            running_app(
                data, sessions=stores[1], session_backend="redis", redis_url=server.url
            ) as two,
        ):
            one.add_user("alice", PASSWORD)
            one.add_user("bob", PASSWORD)
            content = secret_bytes()
            async with signed_in(one, "alice") as alice_on_one:
                path = await upload(alice_on_one, content)
                alice_cookies = alice_on_one.cookies
            async with signed_in(one, "bob") as bob_on_one:
                bob_cookies = bob_on_one.cookies
            async with two.new_client() as alice_on_two, two.new_client() as bob_on_two:
                alice_on_two.cookies = alice_cookies
                bob_on_two.cookies = bob_cookies
                mine = await alice_on_two.get(f"/gradio_api/file={path}")
                assert (mine.status_code, mine.content) == (200, content)
                assert (await bob_on_two.get(f"/gradio_api/file={path}")).status_code == 404
            with server.client() as client:
                records = list(client.scan_iter(match="prodio:f:*"))
                assert records
                assert all(client.pttl(key) > 0 for key in records)


# --- part two: Gradio's behaviour that prodio relies on ----------------------------------


async def test_an_upload_over_the_limit_gets_413_and_stores_nothing(
    env: AppUnderTest, alice: httpx.AsyncClient
) -> None:
    marker = secret_bytes()
    response = await alice.post(
        UPLOAD_ROUTE,
        files={"files": ("big.bin", marker + b"x" * MAX_FILE_SIZE, "application/octet-stream")},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 413
    assert files_holding(upload_dir(env), marker) == []
    exactly = marker + b"x" * (MAX_FILE_SIZE - len(marker))
    assert await anyio.Path(await upload(alice, exactly, "limit.bin")).read_bytes() == exactly


def _multipart(part_headers: str) -> bytes:
    return (
        f"--b0undary\r\n{part_headers}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b0undary--\r\n"
    ).encode()


DISPOSITION = 'Content-Disposition: form-data; name="files"; filename="a.txt"'


@pytest.mark.parametrize(
    "part_headers",
    [
        pytest.param(
            f'Content-Disposition: form-data; name="files"; filename="{"a" * 200_000}.txt"',
            id="long-file-name",
        ),
        pytest.param(f"{DISPOSITION}\r\nX-Padding: {'p' * 200_000}", id="long-header"),
        pytest.param(
            DISPOSITION + "".join(f"\r\nX-H{n}: v" for n in range(20_000)), id="many-headers"
        ),
    ],
)
async def test_over_large_multipart_headers_get_a_4xx(
    alice: httpx.AsyncClient, part_headers: str
) -> None:
    response = await alice.post(
        UPLOAD_ROUTE,
        content=_multipart(part_headers),
        headers={**SAME_ORIGIN, "content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert 400 <= response.status_code < 500, response.status_code
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "name",
    ["page.html", "page.HTM", "page.xhtml", "image.svg", "script.js", "data.xml", "no-extension"],
)
@pytest.mark.parametrize("ranged", [False, True], ids=["whole", "ranged"])
async def test_active_content_is_served_as_a_download(
    alice: httpx.AsyncClient, name: str, ranged: bool
) -> None:
    content = b"<script>alert(document.domain)</script>" + secret_bytes()
    path = await upload(alice, content, name)
    headers = {"range": "bytes=0-15"} if ranged else {}
    response = await alice.get(f"/gradio_api/file={path}", headers=headers)
    assert response.status_code == (206 if ranged else 200)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == NON_DOCUMENT_POLICY


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A local TCP port: Gradio must never connect to it for a file."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def was_connected(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


@dataclass(frozen=True)
class Outside:
    uploads: str
    secret_file: Path
    port: int


PASSWD = b"root:"
PROJECT = b"[project]"
# (id, the path as sent, the bytes of its target that must not come back)
OUTSIDE: list[tuple[str, Callable[[Outside], str], bytes]] = [
    ("absolute", lambda o: "/etc/passwd", PASSWD),
    ("encoded-absolute", lambda o: quote("/etc/passwd", safe=""), PASSWD),
    (
        "traversal-from-uploads",
        lambda o: quote(f"{o.uploads}/../../../../../etc/passwd", safe=""),
        PASSWD,
    ),
    ("relative-traversal", lambda o: quote("../" * 12 + "etc/passwd", safe=""), PASSWD),
    ("encoded-dots", lambda o: "%2E%2E/" * 12 + "etc/passwd", PASSWD),
    ("double-encoded", lambda o: quote(quote("/etc/passwd", safe=""), safe=""), PASSWD),
    ("nul-byte", lambda o: "/etc/passwd%00.txt", PASSWD),
    ("backslashes", lambda o: quote(o.uploads + "\\..\\..\\etc\\passwd", safe=""), PASSWD),
    ("secret-key", lambda o: quote(str(o.secret_file), safe=""), SECRET.encode()),
    ("working-directory", lambda o: "pyproject.toml", PROJECT),
    ("absolute-source", lambda o: quote(str(Path("pyproject.toml").resolve()), safe=""), PROJECT),
    ("proc-environ", lambda o: "/proc/self/environ", b"PATH="),
    ("file-url", lambda o: "file:///etc/passwd", PASSWD),
    ("local-url", lambda o: f"http://127.0.0.1:{o.port}/secret", b"HTTP"),
    ("localhost-url", lambda o: f"http://localhost:{o.port}/secret", b"HTTP"),
    ("ipv6-loopback-url", lambda o: f"http://[::1]:{o.port}/secret", b"HTTP"),
]


@pytest.mark.parametrize(
    ("path", "target"), [pytest.param(path, target, id=name) for name, path, target in OUTSIDE]
)
@pytest.mark.parametrize("route", ["/gradio_api/file=", "/gradio_api/file/"])
async def test_paths_outside_the_uploads_are_refused(
    env: AppUnderTest,
    alice: httpx.AsyncClient,
    listener: socket.socket,
    path: Callable[[Outside], str],
    target: bytes,
    route: str,
) -> None:
    secret_file = env.services.settings.data_dir / "secret_key"
    secret_file.write_text(SECRET)
    where = Outside(str(upload_dir(env)), secret_file, listener.getsockname()[1])
    with anyio.fail_after(30):
        response = await alice.get(route + path(where))
    assert response.status_code == 404, response.status_code
    assert target not in response.content
    assert not was_connected(listener)
