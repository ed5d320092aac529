"""Settings, read once from the environment with strict parsing.

A typo in a setting should stop the process at start, not surface as a wrong callback URL
or an unsigned webhook accepted at three in the morning.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = PROJECT_ROOT / "instance"


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None
    secret_key: str
    public_base_url: str
    twilio_account_sid: str | None
    twilio_auth_token: str | None
    twilio_api_base_url: str
    instance_path: Path
    # Webhook enqueue must never hold up Twilio: Twilio gives up after 15 s and retries,
    # and a slow answer also delays the caller hearing the greeting.
    enqueue_timeout: float = 0.25
    max_form_bytes: int = 64 * 1024
    # Texts per second per sending number (US long codes take 1); None: Twilio queues.
    sms_sender_rate: float | None = None
    # Seconds the Twilio REST client waits for an answer before the outcome is unknown.
    twilio_timeout: float = 10.0
    # A signed-in browser left alone this long is signed out (shared front-desk screens).
    session_idle_minutes: float = 15.0

    @property
    def twilio_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def webhook_auth_token(self) -> str:
        """The key Twilio signs webhooks with.

        Without Twilio credentials (development, the console gateway) webhooks are still
        signature-checked, with the instance's secret key, which is what `telephony simulate`
        signs with; nothing unsigned is ever accepted.
        """
        return self.twilio_auth_token or self.secret_key

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    located = parts.path if parts.scheme == "unix" else parts.netloc
    if parts.scheme not in schemes or not located:
        raise SettingsError(f"{name} must be a {' or '.join(schemes)} URL, got {value!r}")
    return value.rstrip("/")


def _float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if number <= 0:
        raise SettingsError(f"{name} must be positive, got {value!r}")
    return number


def _secret_key(env: Mapping[str, str], instance: Path) -> str:
    if env.get("SECRET_KEY"):
        key = env["SECRET_KEY"]
        if len(key) < 16:
            raise SettingsError("SECRET_KEY must be at least 16 characters")
        return key
    # Development: generate once and keep it, so sessions and simulate signatures
    # survive a restart.
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    instance = Path(env.get("TELEPHONY_INSTANCE_PATH", str(DEFAULT_INSTANCE)))

    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance / 'telephony.sqlite3'}"
    if "://" not in database_url:
        raise SettingsError(f"DATABASE_URL must be an SQLAlchemy URL, got {database_url!r}")
    if database_url.startswith("postgres://"):
        # Heroku-style URLs; SQLAlchemy only knows the long name.
        database_url = "postgresql://" + database_url.removeprefix("postgres://")
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")

    redis_url = env.get("REDIS_URL") or None
    if redis_url is not None:
        redis_url = _url("REDIS_URL", redis_url, ("redis", "rediss", "unix"))

    sid = env.get("TWILIO_ACCOUNT_SID") or None
    token = env.get("TWILIO_AUTH_TOKEN") or None
    if bool(sid) != bool(token):
        raise SettingsError("set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or neither")
    if sid is not None and not (sid.startswith("AC") and len(sid) == 34):
        raise SettingsError("TWILIO_ACCOUNT_SID must look like AC followed by 32 characters")

    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=_secret_key(env, instance),
        public_base_url=_url(
            "PUBLIC_BASE_URL",
            env.get("PUBLIC_BASE_URL", "http://localhost:5000"),
            ("http", "https"),
        ),
        twilio_account_sid=sid,
        twilio_auth_token=token,
        twilio_api_base_url=_url(
            "TWILIO_API_BASE_URL",
            env.get("TWILIO_API_BASE_URL", "https://api.twilio.com"),
            ("http", "https"),
        ),
        instance_path=instance,
        enqueue_timeout=_float("ENQUEUE_TIMEOUT", env.get("ENQUEUE_TIMEOUT", "0.25")),
        sms_sender_rate=(
            _float("SMS_SENDER_RATE", env["SMS_SENDER_RATE"])
            if env.get("SMS_SENDER_RATE")
            else None
        ),
        twilio_timeout=_float("TWILIO_TIMEOUT", env.get("TWILIO_TIMEOUT", "10")),
        session_idle_minutes=_float("SESSION_IDLE_MINUTES", env.get("SESSION_IDLE_MINUTES", "15")),
    )
