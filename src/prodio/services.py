"""The application's long-lived objects, built once from the settings in ``create_app``.

Routes reach them through the typed dependencies in :mod:`prodio.routes.deps`; middleware
gets them as constructor arguments. Nothing here is built at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi.templating import Jinja2Templates

from prodio.config import Settings
from prodio.routes.csrf import CsrfTokens
from prodio.session import SessionStore, build_session_store
from prodio.session.cookies import CookiePolicy
from prodio.session.factory import build_login_throttle
from prodio.session.handles import SessionHandles
from prodio.session.throttle import LoginThrottle
from prodio.session.tokens import SessionTokenCodec
from prodio.uploads import UploadRegistry, build_upload_registry
from prodio.users import build_user_store
from prodio.users.authenticate import PasswordAuthenticator
from prodio.users.base import UserStore
from prodio.users.breach import build_breach_check
from prodio.users.passwords import PasswordHasher

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    sessions: SessionStore
    throttle: LoginThrottle
    uploads: UploadRegistry
    users: UserStore
    tokens: SessionTokenCodec
    session_handles: SessionHandles
    csrf: CsrfTokens
    cookies: CookiePolicy
    passwords: PasswordAuthenticator
    templates: Jinja2Templates


def build_services(
    settings: Settings,
    *,
    sessions: SessionStore | None = None,
    users: UserStore | None = None,
    hasher: PasswordHasher | None = None,
    throttle: LoginThrottle | None = None,
    uploads: UploadRegistry | None = None,
) -> Services:
    """Build every service from ``settings``; tests may pass ready-made stores, a hasher, a
    throttle or an upload registry. The login throttle and the upload registry follow the
    session store: in Redis when the sessions are, in this process otherwise."""
    secret = settings.secret()
    user_store = users if users is not None else build_user_store(settings)
    session_store = sessions if sessions is not None else build_session_store(settings)
    if throttle is None:
        throttle = build_login_throttle(settings, session_store)
    if uploads is None:
        uploads = build_upload_registry(settings, session_store)
    return Services(
        settings=settings,
        sessions=session_store,
        throttle=throttle,
        uploads=uploads,
        users=user_store,
        tokens=SessionTokenCodec(
            secret,
            settings.jwt_algorithm,
            audience=settings.jwt_audience,
            previous_keys=settings.previous_secrets(),
            previous_keys_valid_until=(
                settings.previous_secret_keys_until.timestamp()
                if settings.previous_secret_keys_until
                else None
            ),
        ),
        session_handles=SessionHandles(secret),
        csrf=CsrfTokens(secret),
        cookies=CookiePolicy.from_settings(settings),
        passwords=PasswordAuthenticator(
            user_store,
            hasher
            or PasswordHasher(
                breach_check=build_breach_check(settings),
                context_words=settings.context_words(),
            ),
            temporary_password_lifetime=settings.temporary_password_lifetime,
        ),
        templates=Jinja2Templates(directory=str(TEMPLATES_DIR)),
    )
