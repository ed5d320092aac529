"""The task page: everything an agent needs to see about one task, in one object.

Opening a task gathers its context in one place so nobody asks the patient twice: the
contact and their consent history, the timeline (inbound calls with the voicemail, texts
with their delivery status, link clicks, replies, notes, status changes, click-to-call
attempts), the call script, the Call panel, the texts an agent may send and the outcomes
this user may record (services.outcomes records them).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.domain import dispositions
from telephony_service.domain.dispositions import Disposition
from telephony_service.domain.statuses import TaskStatus, is_open
from telephony_service.models import (
    Call,
    ConsentChange,
    Contact,
    Message,
    Practice,
    Task,
    User,
)
from telephony_service.parsing import int_or_none
from telephony_service.services import audit, bridging, manual_texts
from telephony_service.services.bridging import CallPanel
from telephony_service.services.manual_texts import Preview
from telephony_service.services.outcomes import TaskNotFound, is_clinical
from telephony_service.services.scripts import CallScript, script_for
from telephony_service.services.tasks import get_task

# Timeline entries shown through a richer row of their own (the call with its recording,
# the text with its delivery status) rather than as events.
_SHOWN_WITH_CALLS = frozenset({"voicemail", "call_merged", "transcription"})
_SHOWN_WITH_TEXTS = frozenset(
    {
        "text_sent",
        "text_blocked",
        "text_canceled",
        "text_failed",
        "text_undelivered",
        "text_unconfirmed",
    }
)


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    # an event's kind, or call | text | call_attempt
    kind: str
    text: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    audio_url: str | None = None


@dataclass(frozen=True)
class Choice:
    """One outcome on the form."""

    value: str
    label: str
    # The next action time is required with it / means nothing for it (the task closes).
    needs_time: bool
    closing: bool


@dataclass(frozen=True)
class ChoiceGroup:
    title: str
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class OutcomePanel:
    """The outcome form as this user may fill it in."""

    # Empty when nothing can be recorded (a closed task).
    groups: tuple[ChoiceGroup, ...]
    # An administrative agent on a clinical escalation: the task is the care team's, and
    # what the agent records is a note that changes neither its owner nor its next action.
    with_care_team: bool
    asks_next_time: bool
    # One per rendering: the same form sent twice records one outcome.
    nonce: str

    @property
    def open(self) -> bool:
        return bool(self.groups)


@dataclass(frozen=True)
class TaskPage:
    task: Task
    contact: Contact | None
    consent: list[ConsentChange]
    timeline: list[TimelineItem]
    script: CallScript
    outcome: OutcomePanel
    call_panel: CallPanel
    texts: list[Preview]
    # One per rendering: pressing Send twice (or reloading) sends one text.
    text_nonce: str
    overdue: bool


def load_task(session: Session, practice_id: int, task_id: int) -> Task:
    task = get_task(session, practice_id, task_id)
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
    base_url: str,
    record_view: bool = True,
) -> TaskPage:
    """The task page, audited as viewed (the audit row commits here). A page shown again
    with a form's errors is not another view. Raises TaskNotFound."""
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
    status = TaskStatus(task.status)
    return TaskPage(
        task=task,
        contact=task.contact,
        consent=consent_history(session, task.contact_id),
        timeline=timeline_of(session, task, now),
        script=script_for(task, practice=practice, user=user, now=now),
        outcome=outcome_panel(status, clinical=is_clinical(user)),
        call_panel=bridging.call_panel(session, task=task, user=user, practice=practice, now=now),
        texts=manual_texts.previews(practice, base_url),
        text_nonce=manual_texts.new_nonce(),
        overdue=is_open(status) and task.due_at <= now,
    )


def outcome_panel(status: TaskStatus, *, clinical: bool) -> OutcomePanel:
    note_only = dispositions.note_only(status, clinical=clinical)
    offered = dispositions.available(status, clinical=clinical)
    groups = []
    for title, members in (
        ("Reached", [d for d in offered if d in dispositions.REACHED]),
        ("Not reached", [d for d in offered if d not in dispositions.REACHED]),
    ):
        if members:
            groups.append(ChoiceGroup(title, tuple(_choice(d, note_only) for d in members)))
    return OutcomePanel(
        groups=tuple(groups),
        with_care_team=note_only,
        asks_next_time=not note_only,
        nonce=secrets.token_urlsafe(12),
    )


def _choice(disposition: Disposition, note_only: bool) -> Choice:
    return Choice(
        value=disposition.value,
        label=dispositions.LABELS[disposition],
        needs_time=not note_only and disposition in dispositions.NEEDS_NEXT_ACTION_TIME,
        closing=disposition in dispositions.CLOSING,
    )


def live_task(
    session: Session, *, practice: Practice, task_id: int, now: datetime
) -> tuple[Task, list[TimelineItem]]:
    """What the page refreshes in the background: the task and its timeline (not audited:
    the page's own poll is not somebody opening the task). Raises TaskNotFound."""
    task = load_task(session, practice.id, task_id)
    return task, timeline_of(session, task, now)


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


def timeline_of(session: Session, task: Task, now: datetime) -> list[TimelineItem]:
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
            data["user"] = names.get(int_or_none(data.get("user_id")), "someone")
            disposition = data.get("disposition")
            if disposition in set(Disposition):
                data["label"] = dispositions.LABELS[Disposition(disposition)]
        if data.get("purpose"):
            data["purpose_label"] = manual_texts.label(str(data["purpose"]))
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
                    "purpose_label": manual_texts.label(message.purpose),
                    "kind": message.kind,
                    "status": message.status,
                    "sent_at": message.sent_at,
                    "not_before": message.not_before,
                    "reason": message.defer_reason,
                    "delivery": _delivery(message, now),
                },
            )
        )
    # Stable: entries at the same instant keep the order they were written in.
    items.sort(key=lambda item: item.at)
    return items


# Texts that ended without (another) send.
_NOT_SENT = frozenset({"blocked", "canceled", "failed", "undelivered"})


def _delivery(message: Message, now: datetime) -> str:
    """How the page shows a text's state: deferred (waiting for its time), not_sent, or
    as Twilio last reported it."""
    if message.status in ("pending", "unknown") and message.not_before > now:
        return "deferred"
    if message.status in _NOT_SENT:
        return "not_sent"
    return "reported"


def _user_names(session: Session, ids: set[int]) -> dict[int | None, str]:
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.name, User.email).where(User.id.in_(ids)))
    return {row.id: row.name or row.email.split("@", 1)[0] for row in rows}
