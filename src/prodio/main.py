"""Assembly only: build the services, the routes and the middleware stack, then mount the UI."""

from __future__ import annotations

from fastapi import FastAPI

from prodio.config import Settings, load_settings
from prodio.lifespan import lifespan_for
from prodio.middleware.auth import AuthMiddleware, PublicPaths, SessionAuthenticator
from prodio.middleware.logging import RequestLoggingMiddleware, SessionTagger
from prodio.middleware.session import SessionMiddleware
from prodio.routes import api, health, login
from prodio.routes.home import mount_home
from prodio.routes.static import mount_static
from prodio.services import Services, build_services

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
    )
    app.state.services = services
    for router in (health.router, login.router, api.router):
        app.include_router(router)
    mount_static(app)

    # Added innermost first: a request passes logging -> session -> auth -> routes.
    app.add_middleware(
        AuthMiddleware,
        authenticator=SessionAuthenticator(
            services.users, services.sessions, recheck_interval=settings.account_recheck_interval
        ),
        public_paths=PUBLIC_PATHS,
    )
    app.add_middleware(
        SessionMiddleware, store=services.sessions, codec=services.tokens, cookies=services.cookies
    )
    app.add_middleware(RequestLoggingMiddleware, tagger=SessionTagger(settings.secret()))

    # Last: Gradio mounted at "/" would otherwise shadow every route added after it.
    mount_home(app, settings, services.sessions)
    return app


def create_app_from_env() -> FastAPI:
    """A uvicorn factory (``--factory``) for ``prodio serve --reload``."""
    return create_app(load_settings())
