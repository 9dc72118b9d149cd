"""Run Gradio's build steps with an event loop running in the thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_with_running_loop(fn: Callable[[], T]) -> T:
    """Call ``fn()`` with an asyncio event loop running in this thread, and return its result.

    Building a ``gr.Blocks`` and mounting it create asyncio locks; without a running loop,
    Gradio makes a new event loop for each lock and never closes it (a ``ResourceWarning``
    per loop when it is collected). With a running loop it makes none, so a synchronous
    caller (``create_app`` from a uvicorn factory, a test) gets one short-lived loop that
    is closed properly. Locks are bound to a loop only when first used, so the app works
    in the server's loop afterwards.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return fn()

    async def call() -> T:
        return fn()

    with asyncio.Runner() as runner:
        return runner.run(call())
