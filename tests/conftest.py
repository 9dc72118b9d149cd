"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def require_binary(name: str) -> str:
    """Path of an executable the test needs: skip locally without it, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
