"""Liveness and readiness for the process supervisor and the load balancer."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from telephony_service.wiring import Services

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    services: Services = current_app.extensions["telephony"]
    checks: dict[str, str] = {}
    try:
        with services.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Bounded, so a wedged database makes us unready instead of hanging.
                connection.execute(text("SET LOCAL statement_timeout = 1000"))
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
    try:
        # The client's socket timeout (ENQUEUE_TIMEOUT) bounds this call.
        services.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        log.warning("readiness: redis unreachable: %s", type(exc).__name__)
        checks["redis"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "unready", checks=checks), 200 if ready else 503
