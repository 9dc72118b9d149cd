"""Settings: defaults for dev, refusals outside it, messages that say how to fix things."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from prodio.config import Environment, SettingsError, load_settings

GOOD_SECRET = "s" * 48


def test_dev_defaults(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.env is Environment.DEV
    assert settings.session_backend == "memory"
    assert settings.session_idle_timeout == 1800
    assert settings.session_absolute_timeout == 8 * 3600
    assert settings.effective_database_url == f"sqlite:///{(tmp_path / 'users.db').resolve()}"
    assert settings.temporary_password_lifetime == 72 * 3600


def test_dev_secret_is_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    first = load_settings(data_dir=tmp_path).secret()
    second = load_settings(data_dir=tmp_path).secret()
    assert first == second
    assert len(first) >= 32
    mode = (tmp_path / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_environment_variables_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PRODIO_SESSION_IDLE_TIMEOUT", "60")
    monkeypatch.setenv("PRODIO_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.session_idle_timeout == 60
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"env": "prod"}, "PRODIO_SECRET_KEY is required"),
        ({"env": "prod", "secret_key": "short", "cookie_secure": True}, "at least 32"),
        ({"env": "prod", "secret_key": GOOD_SECRET}, "PRODIO_COOKIE_SECURE must be true"),
        ({"secret_key": "short"}, "secrets.token_urlsafe"),
        ({"session_idle_timeout": 0}, "PRODIO_SESSION_IDLE_TIMEOUT"),
        ({"session_idle_timeout": 100, "session_absolute_timeout": 50}, "at least"),
        ({"session_backend": "redis"}, "PRODIO_REDIS_URL"),
        ({"session_backend": "memcached"}, "PRODIO_SESSION_BACKEND"),
        ({"env": "staging"}, "PRODIO_ENV"),
        ({"port": 70000}, "PRODIO_PORT"),
        ({"mount_path": "app"}, "PRODIO_MOUNT_PATH"),
        ({"log_format": "xml"}, "PRODIO_LOG_FORMAT"),
        ({"session_idle_timeout": "soon"}, "PRODIO_SESSION_IDLE_TIMEOUT"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(data_dir=tmp_path, **overrides)
    assert message in str(error.value)
    assert "short" not in str(error.value) or "secret" in message


def refusal_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    """The error for ``variable=value``, checked to be one line that names the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings(data_dir=tmp_path)
    message = str(error.value)
    assert message.startswith(f"invalid configuration: {variable}: ")
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", ["0", "-1", "2592001", "72h", "1.5", ""])
def test_a_bad_temporary_password_lifetime_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = refusal_of(tmp_path, monkeypatch, "PRODIO_TEMPORARY_PASSWORD_LIFETIME", value)
    if value.lstrip("-").isdigit():
        assert "seconds from 1 to 2592000 (30 days)" in message


@pytest.mark.parametrize(("value", "seconds"), [("1", 1), ("3600", 3600), ("2592000", 2592000)])
def test_a_temporary_password_lifetime_up_to_30_days_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, seconds: int
) -> None:
    monkeypatch.setenv("PRODIO_TEMPORARY_PASSWORD_LIFETIME", value)
    assert load_settings(data_dir=tmp_path).temporary_password_lifetime == seconds


def test_prod_with_safe_values_starts(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, env="prod", secret_key=GOOD_SECRET, cookie_secure=True
    )
    assert settings.secret() == GOOD_SECRET.encode()
    assert not (tmp_path / "secret_key").exists()


def test_secret_never_appears_in_repr(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secret_key=GOOD_SECRET)
    assert GOOD_SECRET not in repr(settings)
    assert GOOD_SECRET not in str(settings.model_dump())


def test_unwritable_data_dir_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SettingsError, match="PRODIO_DATA_DIR"):
        load_settings(data_dir=blocker / "data")


def test_mount_path_is_normalized(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path, mount_path="/app/").mount_path == "/app"


@pytest.mark.parametrize(
    "raw", ['["10.0.0.1", "10.0.0.2"]', "10.0.0.1,10.0.0.2", " 10.0.0.1 , 10.0.0.2 "]
)
def test_trusted_proxies_from_json_or_commas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("PRODIO_TRUSTED_PROXIES", raw)
    assert load_settings(data_dir=tmp_path).trusted_proxies == ["10.0.0.1", "10.0.0.2"]


def test_broken_json_list_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODIO_TRUSTED_PROXIES", '["10.0.0.1"')
    with pytest.raises(SettingsError, match="PRODIO_TRUSTED_PROXIES"):
        load_settings(data_dir=tmp_path)


def test_previous_keys_need_an_end_and_a_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODIO_PREVIOUS_SECRET_KEYS", "p" * 48)
    with pytest.raises(SettingsError, match="PRODIO_PREVIOUS_SECRET_KEYS_UNTIL"):
        load_settings(data_dir=tmp_path)
    monkeypatch.setenv("PRODIO_PREVIOUS_SECRET_KEYS_UNTIL", "2026-12-01T18:00:00")
    settings = load_settings(data_dir=tmp_path)
    assert settings.previous_secrets() == [b"p" * 48]
    assert settings.previous_secret_keys_until is not None
    assert settings.previous_secret_keys_until.utcoffset() is not None
    assert "p" * 48 not in repr(settings)
    monkeypatch.setenv("PRODIO_PREVIOUS_SECRET_KEYS", "short")
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_settings(data_dir=tmp_path)


# -- the optional breach check of new passwords -----------------------------------------


def test_the_breach_check_is_off_by_default(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.password_breach_api is None
    assert settings.password_breach_api_timeout == 3.0
    assert settings.password_breach_api_on_error == "allow"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("   ", None),
        ("https://api.pwnedpasswords.com", "https://api.pwnedpasswords.com"),
        (" https://api.pwnedpasswords.com/ ", "https://api.pwnedpasswords.com"),
        ("https://mirror.example:8443/pwned/", "https://mirror.example:8443/pwned"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),  # dev mode: a local server
    ],
)
def test_breach_api_values_that_are_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API", value)
    monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "1.5")
    monkeypatch.setenv("PRODIO_PASSWORD_BREACH_API_ON_ERROR", "refuse")
    settings = load_settings(data_dir=tmp_path)
    assert settings.password_breach_api == expected
    assert settings.password_breach_api_timeout == 1.5
    assert settings.password_breach_api_on_error == "refuse"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PRODIO_PASSWORD_BREACH_API", "api.pwnedpasswords.com", "needs https:// and a host"),
        ("PRODIO_PASSWORD_BREACH_API", "ftp://api.pwnedpasswords.com", "needs https://"),
        ("PRODIO_PASSWORD_BREACH_API", "https://", "needs https:// and a host"),
        ("PRODIO_PASSWORD_BREACH_API", "https://[::1", "not a valid URL"),
        ("PRODIO_PASSWORD_BREACH_API", "https://host:99999", "not a valid URL"),
        ("PRODIO_PASSWORD_BREACH_API", "https://me:hunter2@host", "without a user name"),
        ("PRODIO_PASSWORD_BREACH_API", "https://host/range?x=1", "without a query"),
        ("PRODIO_PASSWORD_BREACH_API", "https://host/#top", "without a query"),
        ("PRODIO_PASSWORD_BREACH_API", "https://host/a b", "without spaces"),
        ("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "0", "PRODIO_PASSWORD_BREACH_API_TIMEOUT"),
        ("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "31", "PRODIO_PASSWORD_BREACH_API_TIMEOUT"),
        ("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "soon", "PRODIO_PASSWORD_BREACH_API_TIMEOUT"),
        ("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "nan", "seconds above 0 and at most 30"),
        ("PRODIO_PASSWORD_BREACH_API_TIMEOUT", "inf", "seconds above 0 and at most 30"),
        ("PRODIO_PASSWORD_BREACH_API_ON_ERROR", "ignore", "'allow' or 'refuse'"),
    ],
)
def test_bad_breach_api_settings_are_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings(data_dir=tmp_path)
    text = str(error.value)
    assert text.startswith(f"invalid configuration: {variable}: ")
    assert message in text
    assert "\n" not in text
    assert "hunter2" not in text
    if variable == "PRODIO_PASSWORD_BREACH_API":
        # How to fix it: what the value should look like, and how to turn the check off.
        assert "for example https://api.pwnedpasswords.com" in text
        assert "or empty to turn the breach check off" in text


def test_prod_needs_https_for_the_breach_api(tmp_path: Path) -> None:
    prod = {"env": "prod", "secret_key": GOOD_SECRET, "cookie_secure": True}
    with pytest.raises(SettingsError) as error:
        load_settings(data_dir=tmp_path, password_breach_api="http://pwned.internal", **prod)
    text = str(error.value)
    assert "PRODIO_PASSWORD_BREACH_API must be an https:// URL when PRODIO_ENV=prod" in text
    assert "for example https://api.pwnedpasswords.com" in text
    settings = load_settings(
        data_dir=tmp_path, password_breach_api="https://pwned.internal/", **prod
    )
    assert settings.password_breach_api == "https://pwned.internal"


@pytest.mark.parametrize("value", ["", "shop staging", "a" * 101, "naïve", "tab\tname"])
def test_a_bad_jwt_audience_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    message = refusal_of(tmp_path, monkeypatch, "PRODIO_JWT_AUDIENCE", value)
    assert "naming this deployment" in message


def test_the_jwt_audience_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(data_dir=tmp_path).jwt_audience == "prodio"
    monkeypatch.setenv("PRODIO_JWT_AUDIENCE", "shop-staging")
    assert load_settings(data_dir=tmp_path).jwt_audience == "shop-staging"


@pytest.mark.parametrize("value", ["-1", "6", "soon"])
def test_a_bad_log_flush_interval_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    refusal_of(tmp_path, monkeypatch, "PRODIO_LOG_FLUSH_INTERVAL", value)


@pytest.mark.parametrize("value", ["maybe", "2", "on please"])
def test_a_bad_opentelemetry_switch_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    refusal_of(tmp_path, monkeypatch, "PRODIO_OPENTELEMETRY", value)


def test_opentelemetry_is_off_unless_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(data_dir=tmp_path).opentelemetry is False
    monkeypatch.setenv("PRODIO_OPENTELEMETRY", "true")
    assert load_settings(data_dir=tmp_path).opentelemetry is True
