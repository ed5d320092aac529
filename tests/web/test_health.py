"""Liveness and readiness."""

from __future__ import annotations

import dataclasses

from telephony_service.web import create_app
from telephony_service.wiring import build_services


def test_it_says_it_is_alive(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_it_is_ready_when_the_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_it_is_not_ready_without_redis(services, clock):
    settings = dataclasses.replace(services.settings, redis_url="redis://127.0.0.1:1/0")
    degraded = build_services(settings, clock=clock)
    response = create_app(services=degraded).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "redis": "unreachable"}
    degraded.engine.dispose()


def test_it_is_not_ready_without_the_database(services, clock, tmp_path):
    url = (
        "postgresql+psycopg://postgres@127.0.0.1:1/none"
        if services.engine.dialect.name == "postgresql"
        else f"sqlite:///{tmp_path}/missing-dir/db.sqlite3"
    )
    degraded = build_services(dataclasses.replace(services.settings, database_url=url), clock=clock)
    response = create_app(services=degraded).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "unreachable", "redis": "ok"}
