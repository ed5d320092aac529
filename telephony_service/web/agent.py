"""The task page: context, script, outcome, texts and the Call button."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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

from telephony_service.domain import dispositions
from telephony_service.domain.categories import LABELS as CATEGORY_LABELS
from telephony_service.domain.categories import Category
from telephony_service.domain.phones import display_number
from telephony_service.domain.statuses import TaskStatus, is_open
from telephony_service.models import Practice, User
from telephony_service.services import bridging, manual_texts, outcomes
from telephony_service.web import workspace
from telephony_service.web.workspace import current_practice, db, login_required

bp = Blueprint("agent", __name__)
workspace.install(bp)

STATUS_LABELS = {
    "new": "New",
    "first_attempted": "First attempt made",
    "left_voicemail": "Left voicemail",
    "second_attempt_scheduled": "Second attempt scheduled",
    "reached": "Reached",
    "scheduled": "Scheduled",
    "needs_insurance_followup": "Needs insurance follow-up",
    "needs_clinical_escalation": "Needs clinical escalation",
    "closed_no_response": "Closed: no response",
    "closed_resolved": "Closed: resolved",
    "closed_opted_out": "Closed: opted out",
    "merged": "Merged",
}
NEXT_ACTION_LABELS = {
    "call_back": "Call back",
    "await_reply": "Wait for a reply",
    "call_manually": "Call (texts don't reach this number)",
    "follow_up": "Follow up",
    "insurance_followup": "Insurance follow-up",
    "clinical_review": "Clinical review",
}
FLAG_LABELS = {
    "sms_undeliverable": "Texts don't reach this number",
    "wrong_number": "Wrong number",
}
TEXT_FLASH = {
    "queued": "message",
    "deferred": "warning",
    "blocked": "error",
    "duplicate": "warning",
}


def _user() -> User:
    user = workspace.current_user()
    if user is None:  # login_required has already answered
        abort(401)
    return user


def _now() -> datetime:
    return workspace.services().clock()


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
    user = _user()
    practice = current_practice()
    now = _now()
    wired = workspace.services()
    try:
        page = outcomes.open_task(
            db(),
            practice=practice,
            user=user,
            task_id=task_id,
            now=now,
            record_view=record_view,
        )
    except outcomes.TaskNotFound:
        abort(404)
    call_panel = bridging.call_panel(db(), task=page.task, user=user, practice=practice, now=now)
    html = render_template(
        "workspace/task.html",
        page=page,
        task=page.task,
        call_panel=call_panel,
        form=form or MultiDict(),
        errors=errors or {},
        texts=manual_texts.previews(practice, wired.settings.public_base_url),
        text_nonce=manual_texts.new_nonce(),
        **_helpers(practice, now),
    )
    return html, status


@bp.get("/tasks/<int:task_id>/live")
@login_required()
def live(task_id: int) -> Response:
    """Status and timeline, for the page's refresh (every few seconds and after a call)."""
    practice = current_practice()
    now = _now()
    try:
        task, timeline = outcomes.live_task(db(), practice=practice, task_id=task_id)
    except outcomes.TaskNotFound:
        abort(404)
    html = render_template(
        "workspace/_task_live.html", task=task, timeline=timeline, **_helpers(practice, now)
    )
    return jsonify(status=task.status, html=html)


# --- outcome ---------------------------------------------------------------------------


@bp.post("/tasks/<int:task_id>/outcome")
@login_required()
def outcome(task_id: int) -> Any:
    form = outcomes.OutcomeForm(
        disposition=request.form.get("disposition", ""),
        note=request.form.get("note", ""),
        next_action_at=request.form.get("next_action_at", ""),
    )
    try:
        recorded = outcomes.record_outcome(
            db(),
            practice=current_practice(),
            user=_user(),
            task_id=task_id,
            form=form,
            now=_now(),
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
    flash(
        f"Task #{recorded.task_id}: {dispositions.LABELS[recorded.disposition]} recorded; "
        f"status {STATUS_LABELS.get(recorded.status, recorded.status)}.",
        "message",
    )
    return redirect(url_for("queue.queue"), code=303)


# --- texts -----------------------------------------------------------------------------


@bp.post("/tasks/<int:task_id>/texts")
@login_required()
def send_text(task_id: int) -> Any:
    wired = workspace.services()
    try:
        result = manual_texts.send_text(
            db(),
            practice=current_practice(),
            user=_user(),
            task_id=task_id,
            template=request.form.get("template", ""),
            nonce=request.form.get("nonce") or manual_texts.new_nonce(),
            now=_now(),
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


# --- presentation ----------------------------------------------------------------------


def _helpers(practice: Practice, now: datetime) -> dict[str, Any]:
    zone = ZoneInfo(practice.timezone)

    def local(at: datetime | None) -> str:
        if at is None:
            return ""
        shown = at.astimezone(zone)
        return f"{shown:%a %b} {shown.day}, {_clock(shown)} {shown:%Z}"

    def local_iso(text: str) -> str:
        try:
            return local(datetime.fromisoformat(text))
        except (TypeError, ValueError):
            return text

    def local_input(at: datetime | None) -> str:
        return "" if at is None else at.astimezone(zone).strftime("%Y-%m-%dT%H:%M")

    return {
        "local": local,
        "local_input": local_input,
        "local_iso": local_iso,
        "relative": lambda at: relative(at, now),
        "is_overdue": lambda task: is_open(TaskStatus(task.status)) and task.due_at <= now,
        "now": now,
        "zone_name": practice.timezone,
        "status_label": lambda value: STATUS_LABELS.get(value, value.replace("_", " ")),
        "next_action_label": lambda value: NEXT_ACTION_LABELS.get(
            value, (value or "").replace("_", " ").capitalize()
        ),
        "flag_label": lambda value: FLAG_LABELS.get(value, value.replace("_", " ").capitalize()),
        "category_label": _category_label,
        "disposition_label": lambda d: dispositions.LABELS[d],
        "reached": dispositions.REACHED,
        "needs_time": dispositions.NEEDS_NEXT_ACTION_TIME,
        "closing": dispositions.CLOSING,
        "phone": display_number,
        "text_label": lambda purpose: manual_texts.LABELS.get(
            purpose, purpose.replace("_", " ").capitalize()
        ),
    }


def _category_label(value: str) -> str:
    try:
        return CATEGORY_LABELS[Category(value)]
    except ValueError:
        return value.replace("_", " ").capitalize()


def _clock(at: datetime) -> str:
    return f"{at.hour % 12 or 12}:{at:%M} {'AM' if at.hour < 12 else 'PM'}"


def relative(at: datetime | None, now: datetime) -> str:
    """ "12 min ago", "in 3 h 5 min", "2 days ago": how far a moment is from now."""
    if at is None:
        return ""
    delta = at - now
    span = abs(delta)
    if span < timedelta(minutes=1):
        return "just now"
    minutes = int(span.total_seconds() // 60)
    if minutes < 60:
        amount = f"{minutes} min"
    elif minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        amount = f"{hours} h {rest} min" if rest and hours < 10 else f"{hours} h"
    else:
        amount = f"{minutes // (24 * 60)} days"
    return f"in {amount}" if delta > timedelta(0) else f"{amount} ago"
