"""Security response headers on every response, and 405 for methods no route may use.

Pure ASGI: only the ``http.response.start`` message is touched, bodies pass through as they
come (Gradio streams server-sent events through here). Each header is added only when the
response does not carry it already: a route that set one did so on purpose, and replacing it
could break that route (Gradio's file routes set ``X-Content-Type-Options`` and
``Content-Disposition`` themselves; ``/static`` sets a public ``Cache-Control``).

Which Content-Security-Policy a response gets:

* :data:`GRADIO_PAGE_POLICY` for a successful HTML page that is not one of prodio's own pages,
  that is, the Gradio app page. It is as tight as Gradio 6's frontend allows; the comments on
  it say why each source is there.
* :data:`PRODIO_PAGE_POLICY` for prodio's own pages (login, logout) and for every HTML error
  page: those are server-rendered templates without scripts or inline styles.
* :data:`NON_DOCUMENT_POLICY` for everything that is not HTML (JSON, files, scripts, images):
  such a response must never run anything, even when opened directly in a tab.

One thing is removed rather than added: ``Cookie`` and ``Authorization`` headers in a
response (Gradio's ranged file responses echo the request's headers, session cookie
included, where page scripts can read them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prodio.logs import escape_control
from prodio.middleware.http import send_json

logger = logging.getLogger("prodio.security")


def _policy(*directives: str) -> str:
    return "; ".join(directives)


# The Gradio app page. Measured in Chromium against gradio 6.31's frontend
# (templates/frontend): with prodio's pages and with a page of Image, Audio, Video, File,
# Gallery, Markdown with LaTeX, Chatbot, Dataframe, Code and HTML components, this policy
# reports no violation, and each source below is one that removing caused a violation for or
# that Gradio's bundle visibly uses.
GRADIO_PAGE_POLICY = _policy(
    "default-src 'none'",
    # 'unsafe-inline': index.html carries five inline scripts, and the first one holds the
    # per-user app config (user name included), so no fixed hash can allow it; a nonce would
    # mean rewriting Gradio's HTML on the way out. 'unsafe-eval': event handlers given as
    # ``js=`` (prodio's Logout button) are built with the AsyncFunction constructor, and
    # gr.HTML renders its templates with Function(); without it the page does not render.
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    # Inline <style> in index.html, style="" attributes everywhere, and <style> elements
    # that Gradio inserts at run time (theme, gr.HTML's css_template).
    "style-src 'self' 'unsafe-inline'",
    # data: SVG icons in Gradio's CSS and components; blob: previews of picked files.
    "img-src 'self' data: blob:",
    # blob: the audio waveform player plays a blob copy of the file.
    "media-src 'self' blob:",
    # data: fonts inlined in the bundle (KaTeX).
    "font-src 'self' data:",
    # Requests to this site only; blob:/data: because components read back the object
    # URLs and data URLs of picked or recorded media (fetch(blob:...)) before uploading.
    "connect-src 'self' blob: data:",
    # Workers of the workflow canvas and the 3D viewers are started from blob: URLs.
    "worker-src 'self' blob:",
    "manifest-src 'self'",
    "object-src 'none'",
    # index.html has <base href="./">: 'none' would block it (a violation on every load);
    # 'self' still stops an injected <base> from pointing relative URLs at another host.
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)

# prodio's own templates (login, logout, error pages): a stylesheet, icons and a form.
PRODIO_PAGE_POLICY = _policy(
    "default-src 'none'",
    "style-src 'self'",
    "img-src 'self'",
    "manifest-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "object-src 'none'",
    "frame-ancestors 'none'",
)

# Not a page: nothing may run. The browser's own viewer for an image, audio or video opened
# in a tab still works: it loads the file itself (img-src, media-src) and styles itself
# with inline styles; Chromium blocks both under a bare default-src 'none'.
NON_DOCUMENT_POLICY = _policy(
    "default-src 'none'",
    "img-src 'self'",
    "media-src 'self'",
    "style-src 'unsafe-inline'",
    "frame-ancestors 'none'",
)

# One year and every subdomain: what ASVS 5.0 (3.4.1) asks of a level-2 application.
HSTS_VALUE = "max-age=31536000; includeSubDomains"
NO_STORE = "no-store"
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_ALLOW_HEADER = ", ".join(ALLOWED_METHODS).encode()
_MAX_LOGGED_METHOD = 32

# Sent on every response when missing. Referrer-Policy "same-origin" is stricter than
# "strict-origin-when-cross-origin" (nothing at all leaves for other sites); "no-referrer"
# would be stricter still but makes browsers send "Origin: null" on our own form posts,
# which the origin check must refuse.
BASE_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    # Another site may not embed our responses (<img>, <script>, <video>) with the user's
    # cookie; our own pages are same-origin and unaffected.
    ("cross-origin-resource-policy", "same-origin"),
)


# Request headers that have no meaning in a response. Gradio's ranged file responses copy
# every request header into the response, so a script in the page could read the HttpOnly
# session cookie from ``fetch(file_url, {headers: {Range: ...}})``: they are removed.
_REQUEST_CREDENTIAL_HEADERS = frozenset({b"cookie", b"authorization", b"proxy-authorization"})


BASE_HEADERS_RAW = tuple((name.encode(), value.encode()) for name, value in BASE_HEADERS)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response; refuse unusual methods with 405.

    ``hsts`` adds ``Strict-Transport-Security`` (turn it on only when the site is served
    over HTTPS: settings.cookie_secure). ``prodio_pages`` are the exact paths of prodio's
    own HTML pages. ``cacheable_prefixes`` are paths whose responses stay cacheable for
    signed-in users when the route set no ``Cache-Control`` (Gradio's content-hashed build
    assets); every other response to a signed-in user gets ``Cache-Control: no-store``
    unless its route chose a policy of its own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool,
        prodio_pages: Iterable[str] = (),
        cacheable_prefixes: Iterable[str] = (),
        page_policy: str = GRADIO_PAGE_POLICY,
    ) -> None:
        self.app = app
        self.hsts = hsts
        self.prodio_pages = frozenset(prodio_pages)
        self.cacheable_prefixes = tuple(cacheable_prefixes)
        self.page_policy = page_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._add_headers(scope, message)
            await send(message)

        if scope["method"] not in ALLOWED_METHODS:
            # TRACE would echo the request (cookies included) back; TRACK and CONNECT have no
            # business here either. Refused before any other middleware or route sees them.
            logger.warning(
                "method not allowed",
                extra={
                    "method": escape_control(scope["method"][:_MAX_LOGGED_METHOD]),
                    "path": escape_control(scope.get("root_path", "") + scope["path"]),
                },
            )
            await send_json(
                send_with_headers,
                405,
                {"detail": "method not allowed"},
                [(b"allow", _ALLOW_HEADER)],
            )
            return
        await self.app(scope, receive, send_with_headers)

    def _add_headers(self, scope: Scope, message: Message) -> None:
        # One pass over the response's headers (not one per header added or removed): this
        # runs for every response, and MutableHeaders.setdefault scans them all each time.
        raw: list[tuple[bytes, bytes]] = []
        present: set[bytes] = set()
        content_type = ""
        for name, value in message.get("headers", ()):
            lowered = bytes(name).lower()
            if lowered in _REQUEST_CREDENTIAL_HEADERS:
                continue
            raw.append((name, value))
            present.add(lowered)
            if lowered == b"content-type" and not content_type:
                content_type = bytes(value).decode("latin-1")
        message["headers"] = raw
        for name, value in BASE_HEADERS_RAW:
            if name not in present:
                raw.append((name, value))
        if message.get("status") != 304 and b"content-security-policy" not in present:
            # A 304 updates the headers of the cached response; the policy chosen for a body
            # that is not there could replace the right one.
            policy = self._policy_for(scope, message, content_type)
            raw.append((b"content-security-policy", policy.encode()))
        if self.hsts and b"strict-transport-security" not in present:
            raw.append((b"strict-transport-security", HSTS_VALUE.encode()))
        if (
            b"cache-control" not in present
            and self._is_authenticated(scope)
            and not self._is_cacheable(scope)
        ):
            # An authenticated answer may hold the user's data: no browser or proxy cache
            # may keep it (back button after logout, shared computers, shared proxies).
            raw.append((b"cache-control", NO_STORE.encode()))

    def _policy_for(self, scope: Scope, message: Message, content_type: str) -> str:
        if _media_type(content_type) != "text/html":
            return NON_DOCUMENT_POLICY
        status = int(message.get("status", 200))
        if not 200 <= status < 300 or scope["path"] in self.prodio_pages:
            return PRODIO_PAGE_POLICY
        return self.page_policy

    @staticmethod
    def _is_authenticated(scope: Scope) -> bool:
        return bool(scope.get("state", {}).get("user"))

    def _is_cacheable(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if "/." in path or "\\" in path:
            return False
        return path.startswith(self.cacheable_prefixes) if self.cacheable_prefixes else False
