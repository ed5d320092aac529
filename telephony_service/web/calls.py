"""The Call button: place a click-to-call from a task, and its live status."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    request,
    url_for,
)

from telephony_service.services import bridging
from telephony_service.web import workspace

bp = Blueprint("calls", __name__)
workspace.install(bp)


@bp.app_context_processor
def _call_simulator() -> dict[str, Any]:
    # Without Twilio credentials nothing rings: the task page points at /dev/outbox, where
    # "Simulate answer" plays the call through.
    console = "dev" in current_app.blueprints
    return {"call_simulator_url": url_for("dev.outbox") if console else None}


def _wants_json() -> bool:
    return (
        request.headers.get(workspace.BACKGROUND_HEADER) == "1"
        or request.accept_mimetypes.best == "application/json"
    )


def _task_page(task_id: int) -> str:
    return url_for("agent.task", task_id=task_id)


@bp.post("/tasks/<int:task_id>/calls")
@workspace.login_required()
def place(task_id: int) -> Any:
    user = workspace.require_user()
    wired = workspace.services()
    override_reason = (
        request.form.get("override_reason", "") if request.form.get("override") else None
    )
    try:
        attempt = bridging.start_call(
            workspace.db(),
            gateway=wired.gateway,
            base_url=wired.settings.public_base_url,
            task_id=task_id,
            practice=workspace.current_practice(),
            user=user,
            nonce=request.form.get("nonce", ""),
            now=wired.clock(),
            override_reason=override_reason,
        )
    except bridging.TaskNotFound:
        abort(404)
    except bridging.CallRefused as refused:
        if _wants_json():
            body = {"error": refused.message, "override_possible": refused.override_possible}
            return jsonify(body), 409
        flash(refused.message, "error")
        return redirect(_task_page(task_id))
    shown = bridging.view(attempt)
    if _wants_json():
        return jsonify(
            attempt=shown.as_json(), status_url=url_for("calls.status", attempt_id=attempt.id)
        )
    if shown.error:
        flash(shown.error, "error")
    return redirect(_task_page(task_id))


@bp.get("/calls/<int:attempt_id>.json")
@workspace.login_required()
def status(attempt_id: int) -> Response:
    shown = bridging.attempt_status(
        workspace.db(), practice_id=workspace.current_practice().id, attempt_id=attempt_id
    )
    if shown is None:
        abort(404)
    return jsonify(shown.as_json())
