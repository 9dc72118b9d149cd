"""Start one server of the benchmark under uvicorn, with the options ``prodio serve`` uses.

``prodio`` is built exactly as ``prodio serve`` builds it (settings from ``PRODIO_*``,
logging configured, one request log line per request); the baselines get the same uvicorn
options. Only the event loop and the HTTP parser are chosen here, since the targets are
stated for both uvloop + httptools and asyncio + h11.

    python bench/serve.py prodio --port 8001 --loop uvloop --http httptools
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn

APPS = ("prodio", "ping", "gradio-bare", "gradio-state")


def build_app(name: str) -> Any:
    if name == "prodio":
        from prodio.cli import prepare_serve
        from prodio.config import load_settings
        from prodio.logs import configure_logging
        from prodio.main import create_app

        settings = load_settings()
        configure_logging(settings)
        from prodio.cli import freeze_startup_objects

        prepare_serve(settings, stderr=sys.stderr)
        app = create_app(settings)
        freeze_startup_objects()  # as prodio serve does
        return app

    from baseline_apps import fastapi_ping, gradio_app

    if name == "ping":
        return fastapi_ping()
    return gradio_app(with_state=name == "gradio-state")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--http", choices=("httptools", "h11"), default="httptools")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.app),
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=args.http,
        # As prodio serve: prodio logs each request itself; uvicorn's access log is off.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=True,
    )


if __name__ == "__main__":
    main()
