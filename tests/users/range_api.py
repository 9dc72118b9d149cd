"""A real local HTTP server in the format of the Pwned Passwords range API, for the tests.

``GET /range/<5 hex>`` answers, one per line, ``<35 hex suffix>:<count>`` for each known
breached password under that prefix, plus padding lines (random suffixes, count 0). It
records every request it gets (request line, headers, body) so tests can check what left
the process. ``mode`` makes it misbehave: ``"slow"`` (waits until :attr:`release` is set
before answering), ``"error"`` (503), ``"garbage"`` (an HTML page), ``"redirect"`` (302 to
elsewhere), ``"huge"`` (an endless-looking answer of valid lines).
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PADDING_LINES = 40


def sha1_upper(password: str) -> str:
    return hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    raw: str  # request line and headers as received
    body: bytes


@dataclass
class RangeApi:
    """The server's state: what it knows, how it behaves, what it saw."""

    breached: dict[str, int] = field(default_factory=dict)
    # Passwords whose suffix is in the answer only as a padding line (count 0).
    padded: list[str] = field(default_factory=list)
    mode: str = "ok"
    requests: list[SeenRequest] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def answer_for(self, prefix: str) -> str:
        lines = [
            f"{digest[5:]}:{count}"
            for password, count in self.breached.items()
            if (digest := sha1_upper(password)).startswith(prefix)
        ]
        lines += [
            f"{digest[5:]}:0"
            for password in self.padded
            if (digest := sha1_upper(password)).startswith(prefix)
        ]
        lines += [f"{secrets.token_hex(18)[:35].upper()}:0" for _ in range(PADDING_LINES)]
        return "\r\n".join(lines)


class _Server(ThreadingHTTPServer):
    # Handler threads are joined at server_close, so no test leaves one running.
    daemon_threads = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe: expected.
        pass


def _handler(api: RangeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            api.requests.append(
                SeenRequest(
                    method=self.command,
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    raw=self.requestline + "\r\n" + str(self.headers),
                    body=body,
                )
            )
            api.entered.set()
            if api.mode == "slow":
                api.release.wait(30)
            if api.mode == "error":
                self._send(503, b"try later", "text/plain")
                return
            if api.mode == "garbage":
                self._send(200, b"<html><body>Welcome!</body></html>", "text/html")
                return
            if api.mode == "redirect":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if api.mode == "huge":
                line = b"0" * 35 + b":0\r\n"
                self._send(200, line * 60_000, "text/plain")
                return
            prefix = self.path.removeprefix("/range/")
            if len(prefix) != 5 or not self.path.startswith("/range/"):
                self._send(400, b"bad prefix", "text/plain")
                return
            self._send(200, api.answer_for(prefix.upper()).encode(), "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(api: RangeApi, *, tls: tuple[Path, Path] | None = None) -> Iterator[RangeApi]:
    """Run ``api`` on a free loopback port until the block ends; over HTTPS with ``tls``
    (certificate file, key file)."""
    server = _Server(("127.0.0.1", 0), _handler(api))
    api.port = server.server_address[1]
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        api.scheme = "https"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield api
    finally:
        api.release.set()
        server.shutdown()
        thread.join()
        server.server_close()
