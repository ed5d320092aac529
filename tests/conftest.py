"""Test wiring: a real PostgreSQL database and a real Redis db index for each run.

TEST_DATABASE_URL picks the server (default: the local PostgreSQL); `sqlite` runs the same
suite on SQLite, the development default. TEST_REDIS_URL picks the Redis server; the run
claims the first free db index from 1 to 12 (bench/ uses 14) and flushes it around each test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import requests.adapters
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from telephony_service.cache import clear_all as clear_caches
from telephony_service.migrate import upgrade
from telephony_service.models import Base
from telephony_service.settings import Settings
from telephony_service.web import create_app
from telephony_service.wiring import Services, build_services

# Twilio's Messages API faked with `responses`: the `twilio_messages` fixture.
pytest_plugins = ["tests.sms_support"]

PUBLIC_BASE_URL = "https://callbacks.example.test"
ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "test-auth-token-0123456789abcdef"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def _admin_url() -> str:
    return os.environ.get(
        "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin = _admin_url()
    if admin == "sqlite":
        path = tmp_path_factory.mktemp("db") / "test.sqlite3"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
        return
    name = f"telephony_test_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis db index of this run's own: two runs on one machine must not flush each other.

    TEST_REDIS_URL names the server (its db index is ignored); the first free index from 1
    up is claimed with a key that expires if the run dies.
    """
    server = make_url_redis(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    claim = f"telephony-test-run-{uuid.uuid4().hex}"
    for index in range(1, 13):
        connection = Redis.from_url(f"{server}/{index}")
        if connection.set("telephony-test-claim", claim, nx=True, ex=3600):
            try:
                yield f"{server}/{index}"
            finally:
                if connection.get("telephony-test-claim") == claim.encode():
                    connection.delete("telephony-test-claim")
                connection.close()
            return
        connection.close()
    raise RuntimeError("no free Redis db index (1-12) for this test run")


def make_url_redis(url: str) -> str:
    # redis://host:port/db -> redis://host:port
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the internet: Twilio is faked with `responses` (which patches
    the same method while active) or by a local server; anything else fails loudly."""
    real_send = requests.adapters.HTTPAdapter.send

    def send(self: requests.adapters.HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
        if urlsplit(request.url).hostname in _LOCAL_HOSTS:
            return real_send(self, request, *args, **kwargs)
        raise requests.exceptions.ConnectionError(f"network disabled in tests: {request.url}")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)


@pytest.fixture
def clock() -> FakeClock:
    # A Tuesday at 10:00 in New York: inside business hours, away from any holiday.
    return FakeClock(datetime(2026, 11, 17, 15, 0, tzinfo=UTC))


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key="test-secret-key-0123456789",
        public_base_url=PUBLIC_BASE_URL,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url="https://api.twilio.com",
        instance_path=tmp_path,
    )


def _clean(engine: Engine) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our table names


# FLUSHDB and the claim's return in one step: between the two, another run on this machine
# would find the index free, claim it, and the two runs would flush each other's jobs.
_FLUSH_KEEPING_CLAIM = """
local claim = redis.call('GET', KEYS[1])
redis.call('FLUSHDB')
if claim then redis.call('SET', KEYS[1], claim, 'EX', ARGV[1]) end
return claim
"""


def flush_redis(redis: Redis) -> None:
    """Empty this run's db index, keeping its claim on it."""
    redis.eval(_FLUSH_KEEPING_CLAIM, 1, "telephony-test-claim", 3600)


@pytest.fixture
def services(settings: Settings, clock: FakeClock) -> Iterator[Services]:
    wired = build_services(settings, clock=clock)
    # Ids restart in every test: a practice cached by an earlier test is not this one.
    clear_caches()
    flush_redis(wired.redis)
    _clean(wired.engine)
    yield wired
    wired.dispatcher.close()
    flush_redis(wired.redis)
    wired.engine.dispose()


@pytest.fixture
def app(services: Services) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def worker_redis(redis_url: str) -> Iterator[Redis]:
    connection = Redis.from_url(redis_url)
    yield connection
    connection.close()


def twilio_signature(path: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(PUBLIC_BASE_URL + path, params))
