"""The apps prodio is compared with, measured in the same run on the same core.

- :func:`fastapi_ping`: a bare FastAPI app, ``GET /ping`` -> ``{"status": "ok"}``.
- :func:`gradio_app`: a bare Gradio app (no auth, no middleware) with the Notepad's Save
  event, once without any state and once keeping the note in ``gr.State``. These exist only
  as yardsticks: prodio's own pages never use ``gr.State``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

# The api_name of the Notepad save event in prodio, so one lookup finds both.
SAVE_API_NAME = "notepad_save"


def fastapi_ping() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ping")
    async def ping() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def _status_line(saves: int, saved_at: float | None) -> str:
    # The same work as prodio's Notepad status line, so only the state handling differs.
    if not saves:
        return "Not saved yet."
    when = time.strftime(" · last at %Y-%m-%d %H:%M UTC", time.gmtime(saved_at or 0))
    return f"Saved {saves:,} time{'' if saves == 1 else 's'}{when}."


async def save_without_state(text: str | None) -> str:
    """The bare event: takes the note, keeps nothing, answers a status line."""
    return _status_line(1 if text is not None else 0, time.time())


async def save_with_state(
    text: str | None, note: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """The same event keeping the note in ``gr.State`` (one copy per Gradio session)."""
    saves = int((note or {}).get("saves", 0)) + 1
    note = {"text": text or "", "saves": saves, "saved_at": time.time()}
    return _status_line(saves, note["saved_at"]), note


def gradio_app(*, with_state: bool) -> FastAPI:
    """A FastAPI app with a bare Gradio app mounted at ``/`` and a ``GET /ping``."""
    import gradio as gr

    with gr.Blocks(title="bench", analytics_enabled=False) as blocks:
        text = gr.Textbox(label="Your note", lines=10)
        save = gr.Button("Save")
        status = gr.Markdown()
        if with_state:
            note = gr.State(None)
            save.click(
                save_with_state,
                inputs=[text, note],
                outputs=[status, note],
                queue=False,
                api_name=SAVE_API_NAME,
            )
        else:
            save.click(
                save_without_state,
                inputs=[text],
                outputs=[status],
                queue=False,
                api_name=SAVE_API_NAME,
            )
    app = fastapi_ping()
    # The options prodio mounts its pages with, minus authentication.
    mounted: FastAPI = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        ssr_mode=False,
        run_history=False,
        show_error=False,
        footer_links=[],
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
    )
    return mounted
