"""Reading tasks: the JSON resource of the public contract, lists with keyset pagination."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from telephony_service.domain.categories import Category
from telephony_service.domain.phones import normalise_phone
from telephony_service.domain.statuses import OPEN, TaskStatus, check_transition, is_open
from telephony_service.models import Contact, Practice, Task, TaskEvent
from telephony_service.services import consent

# Statuses that mean a person has spoken with the patient.
_CONTACT_MADE = frozenset(
    {
        TaskStatus.REACHED,
        TaskStatus.SCHEDULED,
        TaskStatus.NEEDS_INSURANCE_FOLLOWUP,
        TaskStatus.NEEDS_CLINICAL_ESCALATION,
    }
)

MAX_PAGE = 100
DEFAULT_PAGE = 25


class BadFilter(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("invalid filter")
        self.errors = errors


def get_task(session: Session, practice_id: int, task_id: int) -> Task | None:
    """A task of this practice; another practice's id is simply not found."""
    return session.scalar(
        select(Task)
        .where(Task.id == task_id, Task.practice_id == practice_id)
        .options(
            selectinload(Task.timeline),
            selectinload(Task.contact),
            selectinload(Task.owner),
            selectinload(Task.messages),
        )
    )


@dataclass(frozen=True)
class TaskFilter:
    statuses: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    phone: str | None = None
    limit: int = DEFAULT_PAGE
    after: tuple[datetime, int] | None = None


def parse_filter(args: dict[str, str]) -> TaskFilter:
    errors: dict[str, str] = {}
    statuses: list[str] = []
    for value in _csv(args.get("status")):
        if value == "open":
            statuses.extend(s.value for s in OPEN)
        elif value in {s.value for s in TaskStatus}:
            statuses.append(value)
        else:
            errors["status"] = f"unknown status {value!r}"
    categories = _csv(args.get("category"))
    for value in categories:
        if value not in {c.value for c in Category}:
            errors["category"] = f"unknown category {value!r}"
    phone = None
    if args.get("phone"):
        phone = normalise_phone(args["phone"])
        if phone is None:
            errors["phone"] = "is not a valid phone number"
    limit = DEFAULT_PAGE
    if args.get("limit"):
        try:
            limit = int(args["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            errors["limit"] = f"must be a whole number from 1 to {MAX_PAGE}"
    after = None
    if args.get("cursor"):
        after = _decode_cursor(args["cursor"])
        if after is None:
            errors["cursor"] = "is not a cursor this API gave out"
    if errors:
        raise BadFilter(errors)
    return TaskFilter(tuple(statuses), tuple(categories), phone, limit, after)


def list_tasks(
    session: Session, practice_id: int, flt: TaskFilter
) -> tuple[list[Task], str | None]:
    """Most urgent first (earliest deadline), paginated by a (due_at, id) keyset cursor."""
    query = select(Task).where(Task.practice_id == practice_id)
    if flt.statuses:
        query = query.where(Task.status.in_(flt.statuses))
    if flt.categories:
        query = query.where(Task.category.in_(flt.categories))
    if flt.phone:
        query = query.join(Contact, Contact.id == Task.contact_id).where(Contact.phone == flt.phone)
    if flt.after is not None:
        due, task_id = flt.after
        query = query.where(or_(Task.due_at > due, and_(Task.due_at == due, Task.id > task_id)))
    rows = list(
        session.scalars(
            query.order_by(Task.due_at, Task.id)
            .limit(flt.limit + 1)
            .options(
                selectinload(Task.timeline),
                selectinload(Task.contact),
                selectinload(Task.owner),
                selectinload(Task.messages),
            )
        )
    )
    next_cursor = None
    if len(rows) > flt.limit:
        rows = rows[: flt.limit]
        next_cursor = _encode_cursor(rows[-1].due_at, rows[-1].id)
    return rows, next_cursor


def task_resource(task: Task, practice: Practice) -> dict[str, Any]:
    zone = ZoneInfo(practice.timezone)
    return {
        "id": task.id,
        "category": task.category,
        "status": task.status,
        "phone": task.contact.phone if task.contact is not None else None,
        "no_callback_number": task.no_callback_number,
        "name": task.name,
        "reason": task.reason,
        "source": task.source,
        "priority": task.priority,
        "created_at": _iso(task.created_at, zone),
        "due_at": _iso(task.due_at, zone),
        "next_action": task.next_action,
        "next_action_at": _iso(task.next_action_at, zone),
        "call_count": task.call_count,
        "has_voicemail": task.has_voicemail,
        "owner": task.owner.email if task.owner is not None else None,
        "messages": [
            {
                "sid": message.message_sid,
                "purpose": message.purpose,
                "status": message.status,
                "sent_at": _iso(message.sent_at, zone),
            }
            for message in task.messages
        ],
        "timeline": [
            {"at": _iso(entry.at, zone), "kind": entry.kind, "text": entry.text}
            for entry in task.timeline
        ],
    }


def _iso(value: datetime | None, zone: ZoneInfo) -> str | None:
    # In the practice's zone, with its offset: what a person reading the JSON expects.
    return None if value is None else value.astimezone(zone).isoformat(timespec="seconds")


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _encode_cursor(due: datetime, task_id: int) -> str:
    raw = json.dumps([due.isoformat(), task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        due, task_id = json.loads(raw)
        parsed = datetime.fromisoformat(due)
        if parsed.tzinfo is None or not isinstance(task_id, int):
            return None
        return parsed, task_id
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        return None


def change_status(
    session: Session,
    task: Task,
    target: TaskStatus,
    *,
    now: datetime,
    clinical: bool = False,
) -> None:
    """Move a task along the domain's transition table, on its timeline.

    Raises IllegalTransition for a move the table forbids (e.g. an administrative agent
    closing a clinical escalation).
    """
    current = TaskStatus(task.status)
    check_transition(current, target, clinical=clinical)
    task.status = target.value
    task.updated_at = now
    if not is_open(target):
        task.next_action = None
        task.next_action_at = None
    session.add(
        TaskEvent(
            task_id=task.id,
            at=now,
            kind="status_changed",
            text=f"{current.value} → {target.value}",
            data={"from": current.value, "to": target.value},
        )
    )
    if target in _CONTACT_MADE:
        # The patient was reached: no more automated texts, on this task or another.
        consent.contact_made(session, task, at=now, reason=target.value)
    elif not is_open(target):
        # The task is over: its automated texts end with it.
        consent.stop_cadence(session, task, at=now, reason=target.value)
