"""The task page: context, script, outcome, texts and the Call button."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from telephony_service import formatting
from telephony_service.domain import dispositions, statuses
from telephony_service.services import manual_texts, outcomes, task_page
from telephony_service.web import workspace
from telephony_service.web.workspace import current_practice, db, login_required, require_user

bp = Blueprint("agent", __name__)
workspace.install(bp)

TEXT_FLASH = {
    "queued": "message",
    "deferred": "warning",
    "blocked": "error",
    "duplicate": "warning",
}
# What CSRF protection answers too: a form rendered without its one-time value is stale.
EXPIRED = "This form has expired. Reload the page and try again."


# --- the page ------------------------------------------------------------------------------


@bp.get("/tasks/<int:task_id>")
@login_required()
def task(task_id: int) -> Any:
    return _page(task_id)


def _page(
    task_id: int,
    *,
    form: MultiDict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    record_view: bool = True,
) -> tuple[str, int]:
    wired = workspace.services()
    now = wired.clock()
    practice = current_practice()
    try:
        page = task_page.open_task(
            db(),
            practice=practice,
            user=require_user(),
            task_id=task_id,
            now=now,
            base_url=wired.settings.public_base_url,
            record_view=record_view,
        )
    except outcomes.TaskNotFound:
        abort(404)
    html = render_template(
        "workspace/task.html",
        page=page,
        task=page.task,
        form=form or MultiDict(),
        errors=errors or {},
        **formatting.helpers(practice.timezone, now),
    )
    return html, status


@bp.get("/tasks/<int:task_id>/live")
@login_required()
def live(task_id: int) -> Response:
    """Status and timeline, for the page's refresh (every few seconds and after a call)."""
    practice = current_practice()
    try:
        task, timeline = task_page.live_task(
            db(), practice=practice, task_id=task_id, now=workspace.services().clock()
        )
    except outcomes.TaskNotFound:
        abort(404)
    html = render_template(
        "workspace/_task_live.html",
        task=task,
        timeline=timeline,
        **formatting.helpers(practice.timezone, workspace.services().clock()),
    )
    return jsonify(status=task.status, html=html)


# --- outcome ---------------------------------------------------------------------------


@bp.post("/tasks/<int:task_id>/outcome")
@login_required()
def outcome(task_id: int) -> Any:
    nonce = request.form.get("nonce", "").strip()
    if not nonce:
        abort(400, EXPIRED)
    form = outcomes.OutcomeForm(
        disposition=request.form.get("disposition", ""),
        note=request.form.get("note", ""),
        next_action_at=request.form.get("next_action_at", ""),
        nonce=nonce,
    )
    try:
        recorded = outcomes.record_outcome(
            db(),
            practice=current_practice(),
            user=require_user(),
            task_id=task_id,
            form=form,
            now=workspace.services().clock(),
        )
    except outcomes.TaskNotFound:
        abort(404)
    except outcomes.OutcomeInvalid as invalid:
        return _page(
            task_id,
            form=request.form,
            errors=invalid.errors,
            status=invalid.status,
            record_view=False,
        )
    if recorded.duplicate:
        flash(f"Task #{recorded.task_id}: this outcome was already recorded.", "warning")
    else:
        flash(
            f"Task #{recorded.task_id}: {dispositions.LABELS[recorded.disposition]} recorded; "
            f"status {statuses.label(recorded.status)}.",
            "message",
        )
    return redirect(url_for("queue.queue"), code=303)


# --- texts -----------------------------------------------------------------------------


@bp.post("/tasks/<int:task_id>/texts")
@login_required()
def send_text(task_id: int) -> Any:
    # Without the form's nonce a double press could not be told from two texts.
    nonce = request.form.get("nonce", "").strip()
    if not nonce:
        abort(400, EXPIRED)
    wired = workspace.services()
    try:
        result = manual_texts.send_text(
            db(),
            practice=current_practice(),
            user=require_user(),
            task_id=task_id,
            template=request.form.get("template", ""),
            nonce=nonce,
            now=wired.clock(),
            base_url=wired.settings.public_base_url,
            enqueue=wired.work.enqueue_send,
        )
    except outcomes.TaskNotFound:
        abort(404)
    except manual_texts.TextRefused:
        return _page(
            task_id,
            form=request.form,
            errors={"template": "Choose one of the texts below."},
            status=422,
            record_view=False,
        )
    flash(result.words, TEXT_FLASH[result.outcome])
    return redirect(url_for("agent.task", task_id=task_id, _anchor="texts"), code=303)
