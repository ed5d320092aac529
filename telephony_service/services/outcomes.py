"""The task page's two use cases: everything an agent needs to see, and the outcome they record.

Opening a task gathers its context in one place so nobody asks the patient twice: the
contact and their consent history, the timeline (inbound calls with the voicemail, texts
with their delivery status, link clicks, replies, notes, status changes, click-to-call
attempts) and the call script. Recording an outcome moves the task along the domain's
transition table (domain.dispositions decides how), writes the note on the timeline and
audits who did it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from telephony_service.db import locked
from telephony_service.domain import dispositions
from telephony_service.domain.dispositions import Disposition
from telephony_service.domain.notes import check_note, clean_note
from telephony_service.domain.statuses import IllegalTransition, TaskStatus, is_open
from telephony_service.models import (
    Call,
    ConsentChange,
    Contact,
    Message,
    Practice,
    Task,
    TaskEvent,
    User,
)
from telephony_service.services import audit, consent
from telephony_service.services.scripts import CallScript, script_for
from telephony_service.services.tasks import change_status

# A next action further out than this is a typo (2062 for 2026), not a plan.
MAX_NEXT_ACTION = timedelta(days=366)

# Timeline entries shown through a richer row of their own (the call with its recording,
# the text with its delivery status) rather than as events.
_SHOWN_WITH_CALLS = frozenset({"voicemail", "call_merged", "transcription"})
_SHOWN_WITH_TEXTS = frozenset(
    {"text_sent", "text_blocked", "text_canceled", "text_failed", "text_undelivered"}
)


class TaskNotFound(LookupError):
    """No such task in this practice (another practice's id included)."""


class OutcomeInvalid(ValueError):
    """The form cannot be recorded as sent; errors by field, in words for the agent."""

    def __init__(self, errors: dict[str, str], *, status: int = 422) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors
        self.status = status


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    # an event's kind, or call | text | call_attempt
    kind: str
    text: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    audio_url: str | None = None


@dataclass(frozen=True)
class TaskPage:
    task: Task
    contact: Contact | None
    consent: list[ConsentChange]
    timeline: list[TimelineItem]
    script: CallScript
    dispositions: tuple[Disposition, ...]
    clinical: bool


def is_clinical(user: User) -> bool:
    """Licensed staff: the only ones who may close a clinical escalation."""
    return user.role == "clinician"


def load_task(session: Session, practice_id: int, task_id: int) -> Task:
    task = session.scalar(
        select(Task)
        .where(Task.id == task_id, Task.practice_id == practice_id)
        .options(
            selectinload(Task.timeline),
            selectinload(Task.contact),
            selectinload(Task.owner),
            selectinload(Task.messages),
        )
    )
    if task is None:
        raise TaskNotFound(task_id)
    return task


def open_task(
    session: Session,
    *,
    practice: Practice,
    user: User,
    task_id: int,
    now: datetime,
    record_view: bool = True,
) -> TaskPage:
    """The task page, audited as viewed (the audit row commits here). A page shown again
    with a form's errors is not another view."""
    task = load_task(session, practice.id, task_id)
    if record_view:
        audit.record(
            session,
            practice_id=practice.id,
            user_id=user.id,
            action="viewed_task",
            now=now,
            task_id=task.id,
        )
        session.commit()
    return TaskPage(
        task=task,
        contact=task.contact,
        consent=consent_history(session, task.contact_id),
        timeline=timeline_of(session, task),
        script=script_for(task, practice=practice, user=user, now=now),
        dispositions=dispositions.available(TaskStatus(task.status), clinical=is_clinical(user)),
        clinical=is_clinical(user),
    )


def live_task(
    session: Session, *, practice: Practice, task_id: int
) -> tuple[Task, list[TimelineItem]]:
    """What the page refreshes in the background: the task and its timeline (not audited:
    the page's own poll is not somebody opening the task)."""
    task = load_task(session, practice.id, task_id)
    return task, timeline_of(session, task)


def consent_history(session: Session, contact_id: int | None) -> list[ConsentChange]:
    if contact_id is None:
        return []
    return list(
        session.scalars(
            select(ConsentChange)
            .where(ConsentChange.contact_id == contact_id)
            .order_by(ConsentChange.at, ConsentChange.id)
        )
    )


def timeline_of(session: Session, task: Task) -> list[TimelineItem]:
    """The task's history, oldest first: its events, merged with the inbound calls and the
    texts, which have rows of their own (a recording; a delivery status that moves on).
    Click-to-call attempts are on it as the events bridging writes (placed, result)."""
    calls = list(
        session.scalars(select(Call).where(Call.task_id == task.id).order_by(Call.created_at))
    )
    messages: list[Message] = list(task.messages)
    user_ids = {
        int(e.data["user_id"])
        for e in task.timeline
        if e.kind == "note" and e.data and e.data.get("user_id") is not None
    }
    names = _user_names(session, user_ids)

    items: list[TimelineItem] = []
    transcriptions = {call.transcription for call in calls if call.transcription}
    message_ids = {message.id for message in messages}
    for event in task.timeline:
        data = dict(event.data or {})
        # The call rows show the voicemail and its transcription; only a transcription no
        # call row carries is still worth an entry of its own.
        if (
            calls
            and event.kind in _SHOWN_WITH_CALLS
            and (event.kind != "transcription" or event.text in transcriptions)
        ):
            continue
        if event.kind in _SHOWN_WITH_TEXTS and data.get("message_id") in message_ids:
            continue
        if event.kind == "note":
            data["user"] = names.get(_int(data.get("user_id")), "someone")
            disposition = data.get("disposition")
            if disposition in set(Disposition):
                data["label"] = dispositions.LABELS[Disposition(disposition)]
        items.append(TimelineItem(at=event.at, kind=event.kind, text=event.text, data=data))
    for call in calls:
        items.append(
            TimelineItem(
                at=call.created_at,
                kind="call",
                text=call.transcription,
                data={
                    "status": call.status,
                    "duration": call.duration,
                    "voicemail": call.recording_sid is not None,
                    "recording_duration": call.recording_duration,
                },
                audio_url=f"{call.recording_url}.mp3" if call.recording_url else None,
            )
        )
    for message in messages:
        items.append(
            TimelineItem(
                at=message.created_at,
                kind="text",
                text=message.body,
                data={
                    "purpose": message.purpose,
                    "kind": message.kind,
                    "status": message.status,
                    "sent_at": message.sent_at,
                    "not_before": message.not_before,
                    "reason": message.defer_reason,
                },
            )
        )
    # Stable: entries at the same instant keep the order they were written in.
    items.sort(key=lambda item: item.at)
    return items


def _user_names(session: Session, ids: set[int]) -> dict[int | None, str]:
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.name, User.email).where(User.id.in_(ids)))
    return {row.id: row.name or row.email.split("@", 1)[0] for row in rows}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- recording an outcome ----------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeForm:
    disposition: str
    note: str
    # As typed in a datetime-local input: the practice's wall clock, "2026-11-18T09:00".
    next_action_at: str = ""


@dataclass(frozen=True)
class Recorded:
    task_id: int
    disposition: Disposition
    previous: TaskStatus
    status: TaskStatus


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
    escalation goes to the clinicians' queue unowned; only a clinician may close it.

    Raises TaskNotFound, or OutcomeInvalid with the errors by field (status 403 when only
    the clinical rule refuses it).
    """
    found = session.execute(
        select(Task.id, Task.contact_id).where(Task.id == task_id, Task.practice_id == practice.id)
    ).first()
    if found is None:
        raise TaskNotFound(task_id)
    # Lock order everywhere: contact, then task (stopping the cadence cancels texts).
    if found.contact_id is not None:
        consent.lock_contact(session, found.contact_id)
    task = locked(session, Task, task_id)
    current = TaskStatus(task.status)
    clinical = is_clinical(user)

    errors: dict[str, str] = {}
    disposition = _disposition(form.disposition)
    if disposition is None:
        errors["disposition"] = "Choose what happened on the call."
    problem = check_note(form.note)
    if problem is not None:
        errors["note"] = problem
    next_at = _next_time(form.next_action_at, disposition, practice, now, errors)
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
                    "Only clinical staff can close a clinical escalation. Add a note, or "
                    "leave it for the care team."
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
    if disposition not in dispositions.CLOSING:
        if next_at is not None:
            task.next_action = dispositions.NEXT_ACTION_WITH_TIME.get(disposition)
            task.next_action_at = next_at
        else:
            task.next_action = dispositions.NEXT_ACTION_WITHOUT_TIME.get(disposition)
            task.next_action_at = None
    flag = dispositions.FLAGS.get(disposition)
    if flag is not None:
        task.flag = flag
    if dispositions.stops_cadence(disposition):
        # change_status stops it on the way into a reached status; an outcome recorded on a
        # task already in one (scheduled, scheduled again) must stop it all the same.
        consent.stop_cadence(session, task, at=now, reason="reached")
    if disposition is Disposition.CLINICAL_ESCALATION:
        # To the clinicians' queue: whoever takes it there owns it.
        task.owner_id = None
    elif task.owner_id is None:
        task.owner_id = user.id
    task.updated_at = now
    session.add(
        TaskEvent(
            task_id=task.id,
            at=now,
            kind="note",
            text=clean_note(form.note),
            data={"disposition": disposition.value, "user_id": user.id},
        )
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
