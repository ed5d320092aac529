"""Settings parse strictly: a typo stops the process at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from telephony_service.settings import SettingsError, load_settings


def _load(tmp_path: Path, **env: str):
    return load_settings({"TELEPHONY_INSTANCE_PATH": str(tmp_path), **env})


def test_it_defaults_to_sqlite_an_embedded_redis_and_the_console_gateway(tmp_path):
    settings = _load(tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path}/telephony.sqlite3"
    assert settings.redis_url is None
    assert settings.public_base_url == "http://localhost:5000"
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert not settings.twilio_enabled


def test_it_generates_a_secret_key_once_and_keeps_it(tmp_path):
    first = _load(tmp_path).secret_key
    assert len(first) >= 32
    assert _load(tmp_path).secret_key == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_it_uses_the_psycopg_driver_for_postgres_urls(tmp_path):
    for url in ("postgres://u@db/x", "postgresql://u@db/x"):
        assert _load(tmp_path, DATABASE_URL=url).database_url == "postgresql+psycopg://u@db/x"


def test_it_signs_webhooks_with_the_auth_token_when_twilio_is_configured(tmp_path):
    settings = _load(
        tmp_path, TWILIO_ACCOUNT_SID="AC" + "0" * 32, TWILIO_AUTH_TOKEN="tok", SECRET_KEY="s" * 20
    )
    assert settings.twilio_enabled
    assert settings.webhook_auth_token == "tok"
    assert _load(tmp_path, SECRET_KEY="k" * 20).webhook_auth_token == "k" * 20


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PUBLIC_BASE_URL": "callbacks.example.com"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "ftp://x"}, "PUBLIC_BASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"TWILIO_API_BASE_URL": "api.twilio.com"}, "TWILIO_API_BASE_URL"),
        ({"TWILIO_ACCOUNT_SID": "AC" + "0" * 32}, "both"),
        ({"TWILIO_AUTH_TOKEN": "x"}, "both"),
        ({"TWILIO_ACCOUNT_SID": "SK123", "TWILIO_AUTH_TOKEN": "x"}, "TWILIO_ACCOUNT_SID"),
        ({"DATABASE_URL": "telephony.db"}, "DATABASE_URL"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"ENQUEUE_TIMEOUT": "soon"}, "ENQUEUE_TIMEOUT"),
        ({"ENQUEUE_TIMEOUT": "0"}, "ENQUEUE_TIMEOUT"),
    ],
)
def test_it_refuses_a_bad_setting_with_its_name(tmp_path, env, message):
    with pytest.raises(SettingsError, match=message):
        _load(tmp_path, **env)


def test_it_accepts_a_unix_socket_redis_url(tmp_path):
    settings = _load(tmp_path, REDIS_URL="unix:///run/redis.sock")
    assert settings.redis_url == "unix:///run/redis.sock"


def test_it_strips_a_trailing_slash_from_the_public_url(tmp_path):
    settings = _load(tmp_path, PUBLIC_BASE_URL="https://callbacks.example.com/")
    assert settings.public_base_url == "https://callbacks.example.com"
