"""Recording a call's outcome from the task page.

The outcome moves the task along the domain's transition table (domain.dispositions
decides how), writes the note on the timeline and audits who did it. What the page shows
is assembled in services.task_page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.db import locked
from telephony_service.domain import dispositions
from telephony_service.domain.dispositions import Disposition
from telephony_service.domain.notes import check_note, clean_note
from telephony_service.domain.statuses import IllegalTransition, TaskStatus, is_open
from telephony_service.models import Practice, Task, TaskEvent, User
from telephony_service.services import audit, consent, followups
from telephony_service.services.tasks import change_status

# A next action further out than this is a typo (2062 for 2026), not a plan.
MAX_NEXT_ACTION = timedelta(days=366)
# Longer than any nonce a rendered form carries (services.task_page): the rest is noise.
_NONCE_CHARS = 64


class TaskNotFound(LookupError):
    """No such task in this practice (another practice's id included)."""


class OutcomeInvalid(ValueError):
    """The form cannot be recorded as sent; errors by field, in words for the agent."""

    def __init__(self, errors: dict[str, str], *, status: int = 422) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors
        self.status = status


def is_clinical(user: User) -> bool:
    """Licensed staff: the only ones who may move a clinical escalation on or close it."""
    return user.role == "clinician"


# --- recording an outcome ----------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeForm:
    disposition: str
    note: str
    # As typed in a datetime-local input: the practice's wall clock, "2026-11-18T09:00".
    next_action_at: str = ""
    # The rendered form's one-time value: the same form sent twice records one outcome.
    nonce: str = ""


@dataclass(frozen=True)
class Recorded:
    task_id: int
    disposition: Disposition
    previous: TaskStatus
    status: TaskStatus
    # This form's outcome was already recorded; nothing was done this time.
    duplicate: bool = False


def parse_local(text: str, zone: ZoneInfo) -> datetime | None:
    """A datetime-local value read on the practice's clock; None if it is not one."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        return None
    return parsed.replace(tzinfo=zone)


def record_outcome(
    session: Session,
    *,
    practice: Practice,
    user: User,
    task_id: int,
    form: OutcomeForm,
    now: datetime,
) -> Recorded:
    """Record a call's outcome and its note. Commits.

    Reached outcomes stop the automated cadence (the patient has been spoken to); not-reached
    ones never stop it and never restart one that something else stopped. A clinical
    escalation goes to the clinicians' queue unowned; only a clinician may move it on or
    close it, and an agent's missed call on it is a note that leaves its owner and next
    action as they are. A form whose nonce is already on the timeline is not recorded again.

    Raises TaskNotFound, or OutcomeInvalid with the errors by field (status 403 when only
    the clinical rule refuses it).
    """
    found = session.execute(
        select(Task.id, Task.contact_id).where(Task.id == task_id, Task.practice_id == practice.id)
    ).first()
    if found is None:
        raise TaskNotFound(task_id)
    # Lock order everywhere: contact, then task (stopping the cadence cancels texts).
    contact = consent.lock_contact(session, found.contact_id) if found.contact_id else None
    task = locked(session, Task, task_id)
    current = TaskStatus(task.status)
    nonce = form.nonce.strip()[:_NONCE_CHARS]
    # Under the task's lock, so a second post of the form waits for the first and finds it.
    earlier = _recorded_with(session, task.id, nonce) if nonce else None
    if earlier is not None:
        session.rollback()
        return Recorded(task.id, earlier, current, current, duplicate=True)
    clinical = is_clinical(user)
    note_only = dispositions.note_only(current, clinical=clinical)

    errors: dict[str, str] = {}
    disposition = _disposition(form.disposition)
    if disposition is None:
        errors["disposition"] = "Choose what happened on the call."
    problem = check_note(form.note)
    if problem is not None:
        errors["note"] = problem
    # A note-only outcome sets no next action: the care team's stands.
    next_at = (
        None if note_only else _next_time(form.next_action_at, disposition, practice, now, errors)
    )
    status = 422
    moves: tuple[TaskStatus, ...] = ()
    if disposition is not None:
        try:
            moves = dispositions.plan(
                disposition, current, clinical=clinical, has_next_time=next_at is not None
            )
        except IllegalTransition as exc:
            if dispositions.is_clinical_refusal(disposition, current):
                status = 403
                errors["disposition"] = (
                    "Only clinical staff can move a clinical escalation on or close it. "
                    "Record a call that did not reach the patient, or leave it for the care team."
                )
            elif not is_open(current):
                errors["disposition"] = "This task is closed; its outcome can't be changed."
            else:
                errors["disposition"] = (
                    f"{dispositions.LABELS[disposition]} can't be recorded on this task ({exc})."
                )
    if errors:
        session.rollback()
        raise OutcomeInvalid(errors, status=status)
    assert disposition is not None

    for target in moves:
        change_status(session, task, target, now=now, clinical=clinical)
    if not note_only:
        _route(task, disposition, next_at, user)
        if disposition in dispositions.NOT_REACHED and next_at is not None:
            # The agent's next attempt time is when the automated follow-ups go on from.
            followups.follow_agent(session, practice, task, contact, now=now, next_at=next_at)
    flag = dispositions.FLAGS.get(disposition)
    if flag is not None:
        task.flag = flag
    if dispositions.stops_cadence(disposition):
        # change_status stops it on the way into a reached status; an outcome recorded on a
        # task already in one (scheduled, scheduled again) must stop it all the same.
        if disposition in dispositions.REACHED:
            consent.contact_made(session, task, at=now, reason="reached")
        else:
            # A closing outcome without contact (a wrong number) ends this task's texts only.
            consent.stop_cadence(session, task, at=now, reason="reached")
    task.updated_at = now
    data: dict[str, object] = {"disposition": disposition.value, "user_id": user.id}
    if nonce:
        data["nonce"] = nonce
    session.add(
        TaskEvent(task_id=task.id, at=now, kind="note", text=clean_note(form.note), data=data)
    )
    audit.record(
        session,
        practice_id=practice.id,
        user_id=user.id,
        action="changed_task",
        now=now,
        task_id=task.id,
        # Never the note itself: the log says who changed what, not what the patient said.
        data={"disposition": disposition.value, "from": current.value, "to": task.status},
    )
    session.commit()
    return Recorded(task.id, disposition, current, TaskStatus(task.status))


def _route(task: Task, disposition: Disposition, next_at: datetime | None, user: User) -> None:
    """Who has the task next and what they do, after this outcome."""
    if disposition not in dispositions.CLOSING:
        if next_at is not None:
            task.next_action = dispositions.NEXT_ACTION_WITH_TIME.get(disposition)
            task.next_action_at = next_at
        else:
            task.next_action = dispositions.NEXT_ACTION_WITHOUT_TIME.get(disposition)
            task.next_action_at = None
    if disposition is Disposition.CLINICAL_ESCALATION:
        # To the clinicians' queue: whoever takes it there owns it.
        task.owner_id = None
    elif task.owner_id is None:
        task.owner_id = user.id


def _recorded_with(session: Session, task_id: int, nonce: str) -> Disposition | None:
    """The outcome a form with this nonce already recorded on the task, if one did."""
    # A task has a handful of notes: reading them beats a JSON query each dialect spells
    # differently.
    for data in session.scalars(
        select(TaskEvent.data).where(TaskEvent.task_id == task_id, TaskEvent.kind == "note")
    ):
        if data and data.get("nonce") == nonce:
            # Written below with the outcome, so always a disposition's value.
            return Disposition(data["disposition"])
    return None


def _disposition(value: str) -> Disposition | None:
    try:
        return Disposition(value.strip())
    except ValueError:
        return None


def _next_time(
    text: str,
    disposition: Disposition | None,
    practice: Practice,
    now: datetime,
    errors: dict[str, str],
) -> datetime | None:
    if disposition in dispositions.CLOSING:
        return None  # the task closes: there is no next action
    if not text.strip():
        if disposition in dispositions.NEEDS_NEXT_ACTION_TIME:
            errors["next_action_at"] = "Set when the next attempt should happen."
        return None
    at = parse_local(text, ZoneInfo(practice.timezone))
    if at is None:
        errors["next_action_at"] = "Enter a date and a time."
        return None
    if at <= now:
        errors["next_action_at"] = "Pick a time in the future."
        return None
    if at - now > MAX_NEXT_ACTION:
        errors["next_action_at"] = "Pick a time within the next year."
        return None
    return at
