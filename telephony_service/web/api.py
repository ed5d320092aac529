"""The JSON API for web forms and integrations, authenticated by a practice API key."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, request

from telephony_service.models import Practice
from telephony_service.services.intake import (
    IdempotencyConflict,
    InquiryInvalid,
    create_inquiry_task,
    parse_inquiry,
)
from telephony_service.services.practices import practice_for_api_key
from telephony_service.services.tasks import (
    BadFilter,
    get_task,
    list_tasks,
    parse_filter,
    task_resource,
)
from telephony_service.web.openapi import openapi_document
from telephony_service.wiring import Services

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_IDEMPOTENCY_KEY = 200


def _services() -> Services:
    services: Services = current_app.extensions["telephony"]
    return services


@bp.before_request
def _authenticate() -> Any:
    if request.endpoint == "api.openapi":
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return _error(401, "send the practice API key as 'Authorization: Bearer <key>'")
    session = _services().session_factory()
    g.api_session = session
    practice = practice_for_api_key(session, key.strip())
    if practice is None:
        return _error(401, "the API key is unknown or revoked")
    g.practice = practice
    return None


@bp.teardown_request
def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("api_session", None)
    if session is not None:
        session.close()


def _error(status: int, detail: str, errors: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"error": detail}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(_services().settings.public_base_url))


@bp.post("/inquiries")
def create_inquiry() -> Response:
    practice: Practice = g.practice
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        return _error(422, "invalid Idempotency-Key", {"Idempotency-Key": "1 to 200 characters"})
    payload = request.get_json(silent=True)
    try:
        inquiry = parse_inquiry(payload)
        task, created = create_inquiry_task(
            g.api_session,
            practice,
            inquiry,
            idempotency_key=key,
            now=_services().clock(),
            base_url=_services().settings.public_base_url,
        )
    except InquiryInvalid as exc:
        return _error(422, "the inquiry has invalid fields", exc.errors)
    except IdempotencyConflict as exc:
        return _error(409, str(exc))
    response = jsonify(task_resource(task, practice))
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/api/v1/tasks/{task.id}"
    return response


@bp.get("/tasks")
def tasks() -> Response:
    practice: Practice = g.practice
    try:
        flt = parse_filter(request.args.to_dict(flat=True))
    except BadFilter as exc:
        return _error(422, "invalid query parameters", exc.errors)
    rows, next_cursor = list_tasks(g.api_session, practice.id, flt)
    return jsonify(tasks=[task_resource(t, practice) for t in rows], next_cursor=next_cursor)


@bp.get("/tasks/<int:task_id>")
def task(task_id: int) -> Response:
    practice: Practice = g.practice
    found = get_task(g.api_session, practice.id, task_id) if task_id < 2**63 else None
    if found is None:
        abort(404, "no such task")
    return jsonify(task_resource(found, practice))
