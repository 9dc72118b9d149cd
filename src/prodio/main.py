"""Assembly only: build the services, the routes and the middleware stack, then mount the UI."""

from __future__ import annotations

from fastapi import FastAPI

from prodio.config import Settings, load_settings
from prodio.lifespan import lifespan_for
from prodio.middleware.auth import (
    PASSWORD_CHANGE_PATH,
    AuthMiddleware,
    PublicPaths,
    SessionAuthenticator,
)
from prodio.middleware.headers import SecurityHeadersMiddleware
from prodio.middleware.logging import RequestLoggingMiddleware, SessionTagger
from prodio.middleware.origin import OriginCheckMiddleware
from prodio.middleware.session import SessionMiddleware
from prodio.middleware.uploads import UploadOwnershipMiddleware
from prodio.routes import account, api, health, login
from prodio.routes.account import SESSIONS_PATH
from prodio.routes.home import mount_home
from prodio.routes.static import mount_static
from prodio.services import Services, build_services
from prodio.telemetry import fastapi_telemetry

PUBLIC_PATHS = PublicPaths(
    exact={"/login", "/healthz", "/readyz", "/favicon.ico", "/manifest.json"},
    prefixes={"/static/"},
)


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    services = services or build_services(settings)
    app = FastAPI(
        title=settings.app_name,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan_for(services),
        telemetry=fastapi_telemetry(settings),
    )
    app.state.services = services
    for router in (health.router, login.router, account.router):
        app.include_router(router)
    api.add_api_routes(app)
    mount_static(app, app_name=settings.app_name)

    # Added innermost first: a request passes
    # headers -> logging -> session -> auth -> origin -> uploads -> routes.
    # Upload ownership needs the signed-in user, and sees only same-origin uploads.
    app.add_middleware(
        UploadOwnershipMiddleware, registry=services.uploads, mount_path=settings.mount_path
    )
    # The origin check comes after auth: an anonymous request gets the same 401 whatever its
    # origin, and a refusal is logged with the user it was made for.
    app.add_middleware(OriginCheckMiddleware)
    app.add_middleware(
        AuthMiddleware,
        authenticator=SessionAuthenticator(
            services.users, services.sessions, recheck_interval=settings.account_recheck_interval
        ),
        public_paths=PUBLIC_PATHS,
    )
    # One tagger: the audit log (through the session middleware) and the request log name a
    # session by the same tag.
    tagger = SessionTagger(settings.secret())
    app.add_middleware(
        SessionMiddleware,
        store=services.sessions,
        codec=services.tokens,
        cookies=services.cookies,
        tagger=tagger,
    )
    app.add_middleware(RequestLoggingMiddleware, tagger=tagger)
    # Outermost: every response gets the headers, the logging middleware's 500 page too.
    app.add_middleware(
        SecurityHeadersMiddleware,
        hsts=settings.cookie_secure,
        prodio_pages={"/login", "/logout", PASSWORD_CHANGE_PATH, SESSIONS_PATH},
        # Gradio's build assets have content-hashed names and hold no user data.
        cacheable_prefixes=(settings.mount_path.rstrip("/") + "/assets/",),
    )

    # Last: Gradio mounted at "/" would otherwise shadow every route added after it.
    mount_home(app, settings, services.sessions, uploads=services.uploads)
    return app


def create_app_from_env() -> FastAPI:
    """A uvicorn factory (``--factory``) for ``prodio serve --reload``."""
    return create_app(load_settings())
