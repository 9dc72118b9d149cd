"""Settings: read from ``PRODIO_*`` environment variables and an optional ``.env``.

Settings are built once, in the CLI or by the caller of :func:`prodio.main.create_app`,
and injected from there; nothing here runs at import time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32
SECRET_FILE_NAME = "secret_key"
MAX_LOGIN_FAILURE_WINDOW = 30 * 24 * 60 * 60
MIN_UPLOAD_LIFETIME = 60
MAX_UPLOAD_LIFETIME = 30 * 24 * 60 * 60
DEFAULT_TEMPORARY_PASSWORD_LIFETIME = 72 * 60 * 60
MAX_TEMPORARY_PASSWORD_LIFETIME = 30 * 24 * 60 * 60
DEFAULT_PASSWORD_BREACH_API_TIMEOUT = 3.0
MAX_PASSWORD_BREACH_API_TIMEOUT = 30.0
PASSWORD_BREACH_API_EXAMPLE = "https://api.pwnedpasswords.com"
SENTINEL_ADDRESS_EXAMPLE = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
_IPV6_FIRST = re.compile(r"\s*\[\s*[0-9A-Fa-f:]")
HOW_TO_MAKE_A_SECRET = (
    'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))" '
    "and set it as PRODIO_SECRET_KEY"
)


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class SettingsError(Exception):
    """The configuration cannot be used; the message says how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PRODIO_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    env: Environment = Environment.DEV
    app_name: Annotated[str, Field(min_length=1, max_length=60)] = "prodio"
    secret_key: SecretStr | None = None
    # Key rotation: tokens signed with these still verify until the moment below.
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    previous_secret_keys_until: datetime | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None

    session_backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    redis_socket_timeout: Annotated[float, Field(gt=0)] = 2.0
    redis_connect_timeout: Annotated[float, Field(gt=0)] = 2.0
    redis_max_connections: Annotated[int, Field(ge=1)] = 50
    redis_health_check_interval: Annotated[int, Field(ge=0)] = 30
    # Near cache of the Redis store (session/redis_cache.py): how long this instance may
    # answer from memory a session Redis's invalidation channel has not announced a change
    # of; 0 turns it off (every request asks Redis).
    redis_local_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    redis_key_prefix: Annotated[str, Field(min_length=1, max_length=64)] = "prodio:"
    # Redis Sentinel: the Sentinels to ask where the master of the service is. With them,
    # PRODIO_REDIS_URL is optional and gives only the master's credentials, database and TLS
    # options (no host: the Sentinels name it, and name the new one after a failover).
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_service: str | None = None
    redis_sentinel_password: SecretStr | None = None
    session_idle_timeout: Annotated[int, Field(gt=0)] = 30 * 60
    session_absolute_timeout: Annotated[int, Field(gt=0)] = 8 * 60 * 60
    session_cleanup_interval: Annotated[float, Field(gt=0)] = 60.0
    # How stale an instance's view of an account (disabled, removed, new password) may be.
    account_recheck_interval: Annotated[float, Field(ge=0)] = 30.0
    # Login throttling, kept in the session backend so that every instance shares it: after
    # this many failed logins for one account (whatever the source) or from one client IP
    # (whatever the account) within the window, further attempts are refused (429) until
    # a whole window after the failure that reached the limit.
    login_max_failures: Annotated[int, Field(ge=1)] = 5
    login_max_failures_per_ip: Annotated[int, Field(ge=1)] = 50
    login_failure_window: Annotated[float, Field(gt=0, le=MAX_LOGIN_FAILURE_WINDOW)] = 15 * 60.0
    # Attempts whose password is still being checked: at most this many at once per account
    # and per client (429 "busy" beyond, never a lock), and how long an attempt that was
    # never reported (its process died) stays in flight before it counts as a failure.
    login_max_in_flight: Annotated[int, Field(ge=1)] = 3
    login_max_in_flight_per_ip: Annotated[int, Field(ge=1)] = 10
    login_attempt_timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # How long an address the account signed in from stays exempt from that account's lock
    # (its own limit still applies); 0 turns the exemption off.
    login_known_client_ttl: Annotated[float, Field(ge=0, le=365 * 24 * 3600)] = 30 * 24 * 3600.0
    # How long a temporary password (the dev admin's, `--temporary`) signs in after it was
    # set; after that it is refused like a wrong one, until an administrator sets another.
    temporary_password_lifetime: int = DEFAULT_TEMPORARY_PASSWORD_LIFETIME
    # Optional breach check of new passwords (users/breach.py): the base URL of a range API
    # in the Pwned Passwords format (GET <base>/range/<first 5 hex of the SHA-1>); empty:
    # no check. Only the 5-character prefix of the hash is ever sent.
    password_breach_api: str | None = None
    # Seconds a lookup may take: the whole of it on the password page (async); in the CLI,
    # each of connecting and reading the answer.
    password_breach_api_timeout: float = DEFAULT_PASSWORD_BREACH_API_TIMEOUT
    # When the API cannot be asked (down, slow, malformed answer): "allow" accepts the
    # password without the check and logs a warning; "refuse" refuses to set any password
    # until it answers again (503 on the password page, an error in the CLI).
    password_breach_api_on_error: Literal["allow", "refuse"] = "allow"

    cookie_secure: bool = False
    cookie_samesite: Literal["lax", "strict"] = "lax"
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    # The session JWT's ``aud``: give each deployment its own (e.g. "shop-staging") so a
    # cookie from one is refused by another even if they share a secret. Changing it signs
    # everyone out.
    jwt_audience: str = "prodio"

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    mount_path: str = "/"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Words refused as passwords with digits or symbols added (ASVS 6.1.2), besides the
    # user's own name, the application's name and "prodio": the organisation, the product,
    # the city (comma-separated or a JSON list).
    password_context_words: Annotated[list[str], NoDecode] = Field(default_factory=list)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # How long request lines (one per request) may wait in memory before they are written;
    # everything else is written at once. 0 writes each line as it comes.
    log_flush_interval: Annotated[float, Field(ge=0, le=5)] = 0.2
    # FastAPI's built-in OpenTelemetry spans and metrics (telemetry.py says why it is off
    # unless asked for).
    opentelemetry: bool = False

    # Uploads: the largest file Gradio accepts (413 beyond), and how long it keeps an uploaded
    # or generated file before deleting it (all of them when the instance shuts down). An
    # upload is served to the users who uploaded it only, for as long as it exists.
    max_file_size: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    upload_lifetime: Annotated[int, Field(ge=MIN_UPLOAD_LIFETIME, le=MAX_UPLOAD_LIFETIME)] = (
        24 * 60 * 60
    )
    show_api: bool = False

    @field_validator("jwt_audience")
    @classmethod
    def _check_jwt_audience(cls, value: str) -> str:
        if not 1 <= len(value) <= 100 or not all("!" <= c <= "~" for c in value):
            raise ValueError(
                "1 to 100 printable ASCII characters without spaces, naming this "
                "deployment (e.g. shop-staging)"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "trusted_proxies", "previous_secret_keys", "password_context_words", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        # From the environment: a JSON list, or the more usual comma-separated values.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("is not a valid JSON list") from None
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        # As _split_list, except that "[::1]:26379,..." is IPv6 in brackets, not JSON.
        if isinstance(value, str) and _IPV6_FIRST.match(value):
            return [item.strip() for item in value.split(",") if item.strip()]
        return cls._split_list(value)

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinel_addresses(cls, value: list[str]) -> list[str]:
        return [join_host_port(*split_host_port(item)) for item in value]

    @field_validator("redis_sentinel_service")
    @classmethod
    def _check_sentinel_service(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip()
        if not name or any(character.isspace() for character in name):
            raise ValueError(
                "must be the name of the master that the Sentinels monitor (the name in "
                "their 'sentinel monitor' line, for example mymaster), without spaces"
            )
        return name

    @field_validator("temporary_password_lifetime")
    @classmethod
    def _check_temporary_password_lifetime(cls, value: int) -> int:
        # Checked here rather than with Field bounds, to say the unit and the range at once.
        if not 0 < value <= MAX_TEMPORARY_PASSWORD_LIFETIME:
            raise ValueError(
                f"must be a number of seconds from 1 to {MAX_TEMPORARY_PASSWORD_LIFETIME} "
                f"(30 days), not {value}; the default is {DEFAULT_TEMPORARY_PASSWORD_LIFETIME} "
                "(72 hours)"
            )
        return value

    @field_validator("password_breach_api", mode="before")
    @classmethod
    def _check_password_breach_api(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return normalize_breach_api_url(value)

    @field_validator("password_breach_api_timeout")
    @classmethod
    def _check_password_breach_api_timeout(cls, value: float) -> float:
        if not 0 < value <= MAX_PASSWORD_BREACH_API_TIMEOUT:
            raise ValueError(
                f"must be a number of seconds above 0 and at most "
                f"{MAX_PASSWORD_BREACH_API_TIMEOUT:g}, not {value:g}; the default is "
                f"{DEFAULT_PASSWORD_BREACH_API_TIMEOUT:g}"
            )
        return value

    @field_validator("previous_secret_keys_until")
    @classmethod
    def _aware_until(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("mount_path")
    @classmethod
    def _check_mount_path(cls, value: str) -> str:
        if not value.startswith("/") or "//" in value or any(c in value for c in "?#\\ "):
            raise ValueError("must be a path such as / or /app")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.session_absolute_timeout < self.session_idle_timeout:
            raise ValueError(
                "PRODIO_SESSION_ABSOLUTE_TIMEOUT must be at least PRODIO_SESSION_IDLE_TIMEOUT"
            )
        self._check_sentinel_consistency()
        if self.session_backend == "redis" and not self.redis_url and not self.redis_sentinels:
            raise ValueError(
                "PRODIO_SESSION_BACKEND=redis needs PRODIO_REDIS_URL, or PRODIO_REDIS_SENTINELS "
                "with PRODIO_REDIS_SENTINEL_SERVICE for Redis Sentinel"
            )
        if self.env is Environment.PROD:
            if self.secret_key is None:
                raise ValueError(
                    f"PRODIO_SECRET_KEY is required when PRODIO_ENV=prod; {HOW_TO_MAKE_A_SECRET}"
                )
            if not self.cookie_secure:
                raise ValueError(
                    "PRODIO_COOKIE_SECURE must be true when PRODIO_ENV=prod "
                    "(serve over HTTPS, or behind a proxy that terminates TLS)"
                )
        for previous in self.previous_secret_keys:
            if len(previous.get_secret_value().encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"each of PRODIO_PREVIOUS_SECRET_KEYS needs at least {MIN_SECRET_BYTES} bytes"
                )
        if self.previous_secret_keys and self.previous_secret_keys_until is None:
            raise ValueError(
                "PRODIO_PREVIOUS_SECRET_KEYS needs PRODIO_PREVIOUS_SECRET_KEYS_UNTIL: the moment "
                "(ISO 8601, e.g. 2026-12-01T18:00:00Z) after which tokens signed with them are "
                "refused; at least PRODIO_SESSION_ABSOLUTE_TIMEOUT after the rotation"
            )
        if self.secret_key is not None:
            size = len(self.secret_key.get_secret_value().encode())
            if size < MIN_SECRET_BYTES:
                raise ValueError(
                    f"PRODIO_SECRET_KEY is {size} bytes; it needs at least "
                    f"{MIN_SECRET_BYTES}: {HOW_TO_MAKE_A_SECRET}"
                )
        return self

    @model_validator(mode="after")
    def _check_password_breach_api_scheme(self) -> Self:
        api = self.password_breach_api
        if api is not None and not self.is_dev and not api.startswith("https://"):
            raise ValueError(
                "PRODIO_PASSWORD_BREACH_API must be an https:// URL when PRODIO_ENV=prod "
                f"(for example {PASSWORD_BREACH_API_EXAMPLE}): the first characters of "
                "password hashes must not cross the network in clear text; http:// is for "
                "a local test server in dev mode only"
            )
        return self

    def _check_sentinel_consistency(self) -> None:
        if not self.redis_sentinels:
            # Sentinel options without Sentinels would be silently ignored: refuse them.
            if self.redis_sentinel_service is not None or self.redis_sentinel_password:
                raise ValueError(
                    "PRODIO_REDIS_SENTINEL_SERVICE and PRODIO_REDIS_SENTINEL_PASSWORD need "
                    f"PRODIO_REDIS_SENTINELS, for example {SENTINEL_ADDRESS_EXAMPLE}"
                )
            return
        if self.redis_sentinel_service is None:
            raise ValueError(
                "PRODIO_REDIS_SENTINELS needs PRODIO_REDIS_SENTINEL_SERVICE: the name of the "
                "master they monitor (the name in their 'sentinel monitor' line, for "
                "example mymaster)"
            )
        if self.redis_url:
            # Never echo the URL: it may hold the master's password.
            parts = urlsplit(self.redis_url)
            if parts.scheme not in ("redis", "rediss"):
                raise ValueError(
                    "with PRODIO_REDIS_SENTINELS, PRODIO_REDIS_URL must start with redis:// or "
                    "rediss://"
                )
            if parts.netloc.rpartition("@")[2]:
                raise ValueError(
                    "with PRODIO_REDIS_SENTINELS, PRODIO_REDIS_URL gives only the master's "
                    "password, database and TLS options, not its host, which the Sentinels "
                    "name: for example redis://:PASSWORD@/0, or leave PRODIO_REDIS_URL unset"
                )

    @property
    def is_dev(self) -> bool:
        return self.env is Environment.DEV

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'users.db').resolve()}"

    def context_words(self) -> list[str]:
        """Every word refused as a password with digits or symbols added, the user's name
        apart (see :func:`prodio.users.passwords.check_password_policy`)."""
        return ["prodio", self.app_name, *self.password_context_words]

    def previous_secrets(self) -> list[bytes]:
        return [key.get_secret_value().encode() for key in self.previous_secret_keys]

    def secret(self) -> bytes:
        """The signing key. Call :func:`with_dev_secret` first in dev mode."""
        if self.secret_key is None:
            raise SettingsError(f"no secret key: {HOW_TO_MAKE_A_SECRET}")
        return self.secret_key.get_secret_value().encode()


def split_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:26379"`` for IPv6) as a pair; ``ValueError`` if malformed."""
    entry = text.strip()
    example = f"for example {SENTINEL_ADDRESS_EXAMPLE}"
    if "@" in entry or "/" in entry:
        # Never echo it: a URL may hold a password.
        raise ValueError(f"takes host:port pairs, not URLs, {example}")
    if entry.startswith("["):
        host, bracket, port_text = entry[1:].partition("]:")
        if not bracket or ":" not in host:
            raise ValueError(f"{entry!r} is not [IPv6 address]:port, for example [::1]:26379")
    else:
        host, colon, port_text = entry.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{entry!r} is not host:port, {example}")
        if ":" in host:
            raise ValueError(f"{entry!r}: put an IPv6 address in brackets, for example [::1]:26379")
    if any(character.isspace() for character in host):
        raise ValueError(f"{entry!r} has a space in its host name, {example}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{entry!r} has no valid port (1-65535), {example}")
    return host, int(port_text)


def normalize_breach_api_url(text: str) -> str | None:
    """The base URL of a Pwned Passwords range API, without a trailing slash; ``None`` for
    an empty value (no check). ``ValueError`` saying what is expected otherwise."""
    value = text.strip()
    if not value:
        return None
    expected = (
        f"must be the base URL of a Pwned Passwords range API, for example "
        f"{PASSWORD_BREACH_API_EXAMPLE} (prodio asks <base>/range/<5 hex characters>), "
        "or empty to turn the breach check off"
    )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{expected}; this is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{expected}; it needs https:// and a host name")
    if "@" in parts.netloc:
        # Never echo it: the part before "@" may be a password.
        raise ValueError(f"{expected}; without a user name or password in it")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"{expected}; without a query (?) or fragment (#)")
    if any(character.isspace() or ord(character) < 0x21 for character in value):
        raise ValueError(f"{expected}; without spaces or control characters")
    if port == 0:
        raise ValueError(f"{expected}; port 0 is no port")
    return value.rstrip("/")


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one readable message."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    return with_dev_secret(settings)


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = "_".join(str(part) for part in error["loc"]).upper()
        name = f"PRODIO_{location}: " if location else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}{message}")
    return "invalid configuration: " + "; ".join(problems)


def with_dev_secret(settings: Settings) -> Settings:
    """In dev mode without a secret, use one kept in the data folder (made on first use)."""
    if settings.secret_key is not None or not settings.is_dev:
        return settings
    path = settings.data_dir / SECRET_FILE_NAME
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        secret = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"cannot keep the dev secret key in {path}: {exc.strerror}; "
            f"set PRODIO_DATA_DIR to a writable folder or set PRODIO_SECRET_KEY"
        ) from None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes; "
            "delete the file to make a new one"
        )
    return settings.model_copy(update={"secret_key": SecretStr(secret)})
