"""The append-only audit log: who viewed or changed which task, who placed which call.

Entries name ids and actions, never a message body, a note's text or a phone number: the
log is read by people who need to know who looked, not what the patient said.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.models import AuditEntry

# What each action means, for the people reading the log.
ACTIONS = {
    "signed_in": "signed in",
    "signed_out": "signed out",
    "viewed_task": "opened a task",
    "took_task": "took a task from the queue",
    "changed_task": "recorded an outcome or changed a task",
    "sent_text": "asked for a text to be sent",
    "placed_call": "placed a call",
    "quiet_hours_override": "called outside the contact window at the patient's request",
}


def record(
    session: Session,
    *,
    practice_id: int,
    user_id: int | None,
    action: str,
    now: datetime,
    task_id: int | None = None,
    call_attempt_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Add an entry to the caller's transaction: it commits (or not) with the change."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    session.add(
        AuditEntry(
            at=now,
            practice_id=practice_id,
            user_id=user_id,
            action=action,
            task_id=task_id,
            call_attempt_id=call_attempt_id,
            data=data,
        )
    )


def entries(session: Session, practice_id: int, *, task_id: int | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).where(AuditEntry.practice_id == practice_id)
    if task_id is not None:
        query = query.where(AuditEntry.task_id == task_id)
    return list(session.scalars(query.order_by(AuditEntry.at, AuditEntry.id)))
