"""Where the package keeps its browser assets and templates."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

STATIC_URL = "/static"
CSS_FILE = "prodio.css"
JS_FILE = "prodio.js"


@cache
def asset_version(name: str) -> str:
    """A short content hash of a static file, for cache-busting ``?v=`` query strings."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def asset_url(name: str) -> str:
    """``/static/<name>?v=<hash>``: cached for an hour, refetched as soon as it changes."""
    return f"{STATIC_URL}/{name}?v={asset_version(name)}"
