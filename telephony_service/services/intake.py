"""Every missed call, voicemail and inquiry becomes exactly one callback task."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Insert,
    Row,
    Select,
    Update,
    bindparam,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telephony_service.db import (
    at_commit,
    attach_inserted,
    column_values,
    commit,
    dialect_insert,
    insert_row,
    insert_statement,
    relaxed_rows,
    table,
    writes_at_commit,
)
from telephony_service.domain.categories import BASE_PRIORITY, INQUIRY_CATEGORIES, Category
from telephony_service.domain.compliance import is_zone
from telephony_service.domain.phones import mask_phone, normalise_phone
from telephony_service.domain.sla import first_response_due
from telephony_service.domain.states import STATE_ZONES, US_STATES
from telephony_service.domain.statuses import NEXT_CALL_BACK, OPEN, TaskStatus
from telephony_service.models import (
    Call,
    Contact,
    Practice,
    Task,
    TaskEvent,
    WebhookEvent,
)
from telephony_service.parsing import int_or_none
from telephony_service.services import consent, delivery, followups, inbound
from telephony_service.services.practices import calendar_for, practice_by_number

log = logging.getLogger(__name__)

# Someone who calls again while we still owe them a call back is telling us it matters.
REPEAT_CALL_BOOST = 10
# Twilio trims silence; what is left below this is a hang-up at the beep, not a message.
MIN_VOICEMAIL_SECONDS = 1
MAX_TRANSCRIPTION_CHARS = 4000
TERMINAL_CALL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})

NEXT_IDENTIFY = "identify_caller"


# --- webhook events --------------------------------------------------------------------


def apply_event(
    session: Session, event_id: int, *, now: datetime, base_url: str
) -> list[int] | None:
    """Apply one stored Twilio event. Idempotent: a second run finds it done.

    Returns the ids of texts it made ready to send now (a text-back), or None when there
    was nothing to do (unknown id, already applied).
    """
    # Not waiting for the disk at the commit: an event lost with a crashed database is
    # still unapplied, and the relay applies it.
    taken = relaxed_rows(session, take_event_statement(), {"event_id": event_id, "now": now})
    return apply_taken(session, taken, base_url=base_url)


def apply_taken(
    session: Session, taken: Sequence[tuple[Any, ...]], *, base_url: str
) -> list[int] | None:
    """apply_event, from the rows take_event_statement gave in the session's transaction.

    The event is marked applied first, in the statement that locks it and reads it: a
    concurrent job for the same event waits there, then finds it applied and does
    nothing. A failure rolls the mark back with everything else.
    """
    if not taken:
        session.rollback()
        return None
    [(kind, params, received_at)] = taken
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise ValueError(f"no handler for webhook event kind {kind!r}")
    # UTC, as the models give it (the driver gives the server's zone).
    at = received_at.astimezone(UTC)
    if kind in _LAST_WRITES_AT_COMMIT:
        with writes_at_commit(session):
            ready = handler(session, params, at, base_url)
            commit(session)
    else:
        ready = handler(session, params, at, base_url)
        session.commit()
    return ready or []


@functools.cache
def take_event_statement() -> Update:
    """Mark an event ("event_id") applied ("now"), if it is not, returning what it holds."""
    events = table(WebhookEvent)
    return (
        update(events)
        .where(events.c.id == bindparam("event_id"), events.c.processed_at.is_(None))
        .values(processed_at=bindparam("now", type_=events.c.processed_at.type), error=None)
        .returning(events.c.kind, events.c.params, events.c.received_at)
    )


def _voice_status(
    session: Session, params: dict[str, Any], at: datetime, base_url: str
) -> list[int] | None:
    if params.get("CallStatus") not in TERMINAL_CALL_STATUSES:
        return None
    practice = _practice_by_number(session, params.get("To"))
    if practice is None:
        log.warning("call ended on %s, which no practice owns", mask_phone(params.get("To")))
        return None
    call = _end_call(session, params, practice.id, at)
    if call.task_id is not None:
        return None

    caller = normalise_phone(params.get("From"))
    contact, new_contact = (
        _lock_caller(session, practice.id, caller, at) if caller else (None, False)
    )
    # A contact this very statement created has no task to merge into.
    task = _open_task(session, contact) if contact is not None and not new_contact else None
    if task is not None:
        task.call_count += 1
        task.priority += REPEAT_CALL_BOOST
        task.updated_at = at
        _timeline(session, task, at, "call_merged", data={"call_count": task.call_count})
        # The patient is trying to reach us: no more "we missed you" texts; the raised
        # priority puts the task in front of an agent instead.
        consent.contact_made(session, task, at=at, reason="inbound_call", by_patient=True)
        ready: list[int] = []
    else:
        category = Category.VOICEMAIL if call.recording_sid else Category.MISSED_CALL
        task = _new_task(
            session,
            practice,
            contact,
            category=category,
            source="phone",
            at=at,
            call_count=1,
            next_action=NEXT_CALL_BACK if contact is not None else NEXT_IDENTIFY,
        )
        ready = followups.start(
            session, practice, task, contact, now=at, base_url=base_url, new_contact=new_contact
        ).messages
    at_commit(session, _link_call_statement(), {"call_id": call.id, "new_task_id": task.id})
    if call.recording_sid:
        _attach_voicemail(session, task, call.recording_sid, call.recording_duration, at)
    if call.transcription:
        _timeline(session, task, at, "transcription", text=call.transcription)
    return ready


def _voice_recording(session: Session, params: dict[str, Any], at: datetime, base_url: str) -> None:
    if params.get("RecordingStatus", "completed") != "completed":
        return
    duration = int_or_none(params.get("RecordingDuration")) or 0
    if duration < MIN_VOICEMAIL_SECONDS:
        return
    call = _lock_call(session, params["CallSid"], at)
    if call.recording_sid is not None:
        return
    call.recording_sid = params["RecordingSid"]
    call.recording_url = params.get("RecordingUrl")
    call.recording_duration = duration
    if call.task_id is not None:
        task = _lock_task(session, call.task_id)
        _attach_voicemail(session, task, call.recording_sid, duration, at)


def _voice_transcription(
    session: Session, params: dict[str, Any], at: datetime, base_url: str
) -> None:
    text = (params.get("TranscriptionText") or "").strip()
    if params.get("TranscriptionStatus", "completed") != "completed" or not text:
        return
    call = _lock_call(session, params["CallSid"], at)
    if call.transcription is not None:
        return
    call.transcription = text[:MAX_TRANSCRIPTION_CHARS]
    if call.task_id is not None:
        task = _lock_task(session, call.task_id)
        task.updated_at = at
        _timeline(session, task, at, "transcription", text=call.transcription)


Handler = Callable[[Session, dict[str, Any], datetime, str], "list[int] | None"]

# Events whose handler's last writes (a new task's schedule, its text's link, the call's
# task) can wait for the commit: nothing after them reads them. Not a reply's: it starts a
# new task's schedule and then stops it, an UPDATE that must find the rows.
_LAST_WRITES_AT_COMMIT = frozenset({"voice.status"})

_HANDLERS: dict[str, Handler] = {
    "voice.status": _voice_status,
    "voice.recording": _voice_recording,
    "voice.transcription": _voice_transcription,
    "sms.status": lambda session, params, at, base_url: delivery.apply_status(session, params, at),
    "sms.incoming": lambda session, params, at, base_url: inbound.apply_incoming(
        session, params, at, base_url=base_url
    ),
}


def _attach_voicemail(
    session: Session, task: Task, recording_sid: str, duration: int | None, at: datetime
) -> None:
    task.has_voicemail = True
    task.updated_at = at
    if task.category == Category.MISSED_CALL:
        # Same SLA; the category tells the agent there is a message to hear first.
        task.category = Category.VOICEMAIL
        task.priority += BASE_PRIORITY[Category.VOICEMAIL] - BASE_PRIORITY[Category.MISSED_CALL]
    _timeline(
        session,
        task,
        at,
        "voicemail",
        data={"recording_sid": recording_sid, "duration": duration},
    )


# --- inquiries -------------------------------------------------------------------------

FIELD_LIMITS = {"name": 200, "reason": 1000, "source": 64}


@dataclass(frozen=True)
class Inquiry:
    category: Category
    phone: str
    name: str | None
    reason: str | None
    source: str
    # Where the patient is, when the sender knows better than the number's area code: the
    # compliance gate's window is the patient's local time.
    timezone: str | None = None
    state: str | None = None

    def fingerprint(self) -> str:
        fields: list[str | None] = [self.category, self.phone, self.name, self.reason, self.source]
        if self.timezone is not None or self.state is not None:
            # Only then: a retry of a request stored before these fields matches its task.
            fields += [self.timezone, self.state]
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class InquiryInvalid(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("invalid inquiry")
        self.errors = errors


class IdempotencyConflict(ValueError):
    pass


def parse_inquiry(payload: Any) -> Inquiry:
    """Validate an API payload; raises InquiryInvalid with a message per bad field."""
    if not isinstance(payload, dict):
        raise InquiryInvalid({"body": "expected a JSON object"})
    errors: dict[str, str] = {}
    category = payload.get("category")
    if category not in {c.value for c in INQUIRY_CATEGORIES}:
        allowed = ", ".join(sorted(c.value for c in INQUIRY_CATEGORIES))
        errors["category"] = f"must be one of: {allowed}"
    raw_phone = payload.get("phone")
    phone = normalise_phone(raw_phone) if isinstance(raw_phone, str) else None
    if raw_phone is None:
        errors["phone"] = "is required"
    elif phone is None:
        errors["phone"] = "is not a valid phone number (use E.164, e.g. +14155550123)"
    text: dict[str, str | None] = {}
    for field, limit in FIELD_LIMITS.items():
        value = payload.get(field)
        if value is None:
            text[field] = None
        elif not isinstance(value, str):
            errors[field] = "must be a string"
        elif len(value) > limit:
            errors[field] = f"must be at most {limit} characters"
        else:
            text[field] = " ".join(value.split()) or None
    timezone = _optional_zone(payload.get("timezone"), errors)
    state = _optional_state(payload.get("state"), errors)
    unknown = sorted(set(payload) - {"category", "phone", "timezone", "state", *FIELD_LIMITS})
    for field in unknown:
        errors[field] = "is not a known field"
    if errors:
        raise InquiryInvalid(errors)
    assert phone is not None and isinstance(category, str)
    return Inquiry(
        category=Category(category),
        phone=phone,
        name=text["name"],
        reason=text["reason"],
        source=text["source"] or "api",
        timezone=timezone,
        state=state,
    )


def _optional_zone(value: Any, errors: dict[str, str]) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # blank, like the other optional fields: not given
    if not isinstance(value, str) or not is_zone(value.strip()):
        errors["timezone"] = "must be an IANA time zone of a place, e.g. America/Chicago"
        return None
    return value.strip()


def _optional_state(value: Any, errors: dict[str, str]) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or value.strip().upper() not in US_STATES:
        errors["state"] = "must be a two-letter US state code, e.g. TX"
        return None
    return value.strip().upper()


def create_inquiry_task(
    session: Session,
    practice: Practice,
    inquiry: Inquiry,
    *,
    idempotency_key: str | None,
    now: datetime,
    base_url: str,
) -> tuple[Task, bool]:
    """Returns (task, created). A repeated Idempotency-Key returns the first task."""
    fingerprint = inquiry.fingerprint()
    if idempotency_key is not None:
        existing = _task_by_idempotency_key(session, practice.id, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint), False
    contact = _lock_contact(session, practice.id, inquiry.phone, now)
    if inquiry.name and not contact.name:
        contact.name = inquiry.name
    # The newest word on where the patient is wins; the number's area code is only a guess.
    if inquiry.state is not None:
        contact.state = inquiry.state
        if inquiry.timezone is None and contact.timezone not in STATE_ZONES[inquiry.state]:
            # A zone from before a move would put the new state's rules on the old clock.
            contact.timezone = None
    if inquiry.timezone is not None:
        contact.timezone = inquiry.timezone
    if inquiry.category == Category.NEW_PATIENT_REQUEST and contact.is_known_patient is None:
        contact.is_known_patient = False
    try:
        task = _new_task(
            session,
            practice,
            contact,
            category=inquiry.category,
            source=inquiry.source,
            at=now,
            name=inquiry.name or contact.name,
            reason=inquiry.reason,
            created_text=inquiry.reason,
            idempotency=(idempotency_key, fingerprint),
        )
        followups.start(session, practice, task, contact, now=now, base_url=base_url)
        session.commit()
    except IntegrityError:
        # Two requests with one Idempotency-Key raced; the other one won.
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _task_by_idempotency_key(session, practice.id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, fingerprint), False
    return task, True


def _task_by_idempotency_key(session: Session, practice_id: int, key: str) -> Task | None:
    return session.scalar(
        select(Task).where(Task.practice_id == practice_id, Task.idempotency_key == key)
    )


def _replay(task: Task, fingerprint: str) -> Task:
    if task.idempotency_hash != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body"
        )
    return task


# --- shared ----------------------------------------------------------------------------


def _new_task(
    session: Session,
    practice: Practice,
    contact: Contact | None,
    *,
    category: Category,
    source: str,
    at: datetime,
    name: str | None = None,
    reason: str | None = None,
    call_count: int = 0,
    next_action: str = NEXT_CALL_BACK,
    created_text: str | None = None,
    idempotency: tuple[str | None, str] | None = None,
) -> Task:
    """A new task and the "created" line of its timeline (with the source, and
    `created_text`), inserted at once: its id is needed. Everything known is set before the
    INSERT: a change after it is an UPDATE more. `idempotency`: an API request's key and
    its body's fingerprint (a key used already fails the INSERT: IntegrityError).

    Core statements, one on PostgreSQL (a data-modifying WITH), rather than the unit of
    work: after a quiet moment its flush of the task and then of the line cost a missed
    call's text-back about a millisecond. The task then joins the session as if loaded.
    """
    due = first_response_due(category, at, calendar_for(practice))
    key, fingerprint = idempotency if idempotency is not None else (None, None)
    task = Task(
        practice_id=practice.id,
        contact_id=contact.id if contact is not None else None,
        category=category.value,
        status=TaskStatus.NEW.value,
        priority=BASE_PRIORITY[category],
        name=name if name is not None else (contact.name if contact is not None else None),
        reason=reason,
        source=source,
        no_callback_number=contact is None,
        call_count=call_count,
        has_voicemail=False,
        idempotency_key=key,
        idempotency_hash=fingerprint,
        created_at=at,
        updated_at=at,
        due_at=due,
        next_action=next_action,
        next_action_at=due,
    )
    line = {"line_text": created_text, "line_data": {"source": source}}
    if _dialect(session) == "postgresql":
        values = column_values(task) | line
        task.id = session.execute(_new_task_statement(), values).scalar_one()
        return attach_inserted(session, task)
    insert_row(session, task)
    session.execute(_line_insert(), {"task_id": task.id, "created_at": at} | line)
    return task


@functools.cache
def _line_insert() -> Insert:
    """The "created" line of the task "task_id" (SQLite; see _new_task_statement)."""
    return _created_line(bindparam("task_id"))


@functools.cache
def _new_task_statement() -> Insert:
    """The task's INSERT, then its "created" line, in one statement (PostgreSQL)."""
    tasks = table(Task)
    task = insert_statement(tasks).returning(tasks.c.id).cte("task")
    return _created_line(task.c.id).add_cte(task).returning(table(TaskEvent).c.task_id)


def _created_line(task_id: Any) -> Insert:
    events = table(TaskEvent)
    line = select(
        task_id,
        bindparam("created_at", type_=events.c.at.type),
        literal("created"),
        bindparam("line_text", type_=events.c.text.type),
        bindparam("line_data", type_=events.c.data.type),
    )
    return insert(events).from_select(["task_id", "at", "kind", "text", "data"], line)


def _timeline(
    session: Session,
    task: Task,
    at: datetime,
    kind: str,
    *,
    text: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(TaskEvent(task_id=task.id, at=at, kind=kind, text=text, data=data))


def _practice_by_number(session: Session, raw: Any) -> Practice | None:
    number = normalise_phone(raw if isinstance(raw, str) else None)
    if number is None:
        return None
    return practice_by_number(session, number)


# The statements every missed call runs are built once: building and keying a fresh
# statement (an upsert's `excluded` columns above all) costs more CPU than PostgreSQL
# takes to run it.


def _end_call(session: Session, params: dict[str, Any], practice_id: int, at: datetime) -> Row[Any]:
    """The call row for an ended call, created or updated, and locked, in one statement."""
    values = {
        "call_sid": params["CallSid"],
        "created_at": at,
        "direction": "inbound",
        "practice_id": practice_id,
        "status": params.get("CallStatus"),
        "duration": int_or_none(params.get("CallDuration")),
        "ended_at": at,
    }
    return session.execute(_end_call_statement(_dialect(session)), values).one()


@functools.cache
def _end_call_statement(dialect: str) -> Any:
    calls = table(Call)
    statement = dialect_insert(dialect)(calls)
    return statement.on_conflict_do_update(
        index_elements=["call_sid"],
        # What the status callback knows; the rest (a recording that came first) stays.
        set_={
            name: statement.excluded[name]
            for name in ("practice_id", "status", "duration", "ended_at")
        },
    ).returning(
        calls.c.id,
        calls.c.task_id,
        calls.c.recording_sid,
        calls.c.recording_duration,
        calls.c.transcription,
    )


@functools.cache
def _link_call_statement() -> Update:
    calls = table(Call)
    return (
        update(calls)
        .where(calls.c.id == bindparam("call_id"))
        .values(task_id=bindparam("new_task_id"))
    )


def _lock_call(session: Session, call_sid: str, at: datetime) -> Call:
    """The call row for a CallSid, created by whichever callback arrives first, locked."""
    return _upsert_locked(session, Call, {"call_sid": call_sid, "created_at": at})


def _lock_contact(session: Session, practice_id: int, phone: str, at: datetime) -> Contact:
    """The contact for a number, locked: two calls from one number must not open two tasks."""
    return _upsert_locked(
        session, Contact, {"practice_id": practice_id, "phone": phone, "created_at": at}
    )


def _lock_caller(
    session: Session, practice_id: int, phone: str, at: datetime
) -> tuple[Contact, bool]:
    """_lock_contact, and whether this statement created the contact (on PostgreSQL, where
    the row an INSERT wrote has no xmax; elsewhere False: not known)."""
    if _dialect(session) != "postgresql":
        return _lock_contact(session, practice_id, phone, at), False
    values = {"practice_id": practice_id, "phone": phone, "created_at": at}
    contact, created = session.execute(_lock_caller_statement(), values).one()
    return contact, bool(created)


@functools.cache
def _lock_caller_statement() -> Any:
    statement = _upsert_locked_statement("postgresql", Contact)
    return statement.returning(literal_column("xmax = 0", Boolean))


_Model = TypeVar("_Model", Call, Contact)

_UNIQUE_KEYS: dict[type[Any], list[str]] = {Call: ["call_sid"], Contact: ["practice_id", "phone"]}


def _upsert_locked(session: Session, model: type[_Model], values: dict[str, Any]) -> _Model:
    """Get or create a row by its unique key, locked, in one statement.

    INSERT … ON CONFLICT DO UPDATE returns the row whether it was new or there already,
    and locks it either way (the "update" rewrites a key column with itself), so two
    workers racing on one caller wait for each other instead of making two rows.
    """
    row: _Model = session.scalars(_upsert_locked_statement(_dialect(session), model), values).one()
    return row


@functools.cache
def _upsert_locked_statement(dialect: str, model: type[_Model]) -> Any:
    keys = _UNIQUE_KEYS[model]
    statement = dialect_insert(dialect)(model)
    return (
        statement.on_conflict_do_update(
            index_elements=keys, set_={keys[0]: statement.excluded[keys[0]]}
        )
        .returning(model)
        .execution_options(populate_existing=True)
    )


def _lock_task(session: Session, task_id: int) -> Task:
    return session.scalars(select(Task).where(Task.id == task_id).with_for_update()).one()


def _open_task(session: Session, contact: Contact) -> Task | None:
    return session.scalar(_open_task_statement(), {"contact_id": contact.id})


@functools.cache
def _open_task_statement() -> Select[Task]:
    return (
        select(Task)
        .where(Task.contact_id == bindparam("contact_id"), Task.status.in_([s.value for s in OPEN]))
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(1)
        .with_for_update()
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name
