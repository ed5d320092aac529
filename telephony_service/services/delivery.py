"""The outbox: every text is a row before it is a request to Twilio.

A text's life: `pending` (waits for not_before) → `claimed` (one job won the
compare-and-swap and is sending it) → Twilio's own statuses (queued, sent, delivered …)
from the send's answer and the status callbacks, which only ever move forward. A send
whose answer was lost is `unknown` and is looked up in Twilio's message list before it is
ever sent again. canceled, blocked and failed end a text without a (further) send.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Jsonb
from sqlalchemy import (
    Engine,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from telephony_service.db import (
    BEGIN,
    COMMIT,
    autocommitted_row,
    dialect_insert,
    explicit_transactions,
    insert_row,
    locked,
    pipelined,
    table,
    transaction_idle,
    upsert_insert,
)
from telephony_service.domain import compliance
from telephony_service.domain.phones import display_number, mask_phone
from telephony_service.domain.statuses import TaskStatus, is_open
from telephony_service.gateways.base import (
    GatewayError,
    MessageRecord,
    OutboundSms,
    TelephonyGateway,
)
from telephony_service.models import (
    IN_FLIGHT_STATUSES_SQL,
    CallAttempt,
    Contact,
    Link,
    Message,
    Practice,
    PracticeSendCount,
    SenderSlot,
    Task,
    TaskEvent,
)
from telephony_service.parsing import int_or_none
from telephony_service.services import consent
from telephony_service.services.links import LINK_TTL, add_link, link_url, new_token
from telephony_service.services.practices import PracticePolicy, texting_policy
from telephony_service.wording import (
    RenderedSms,
    TemplateTooLong,
    fits,
    opt_out_line,
    render_sms,
    with_opt_out_line,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Statuses Twilio reports, in the order a message moves through them. A callback that
# arrives late (a "sent" after "delivered") must not move a message back.
_RANK = {
    "pending": 0,
    "claimed": 1,
    "unknown": 1,
    # Given up on without an answer (Twilio's list unreadable): a callback still moves it.
    "unconfirmed": 1,
    "accepted": 2,
    "scheduled": 2,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "read": 6,
}
FINAL = frozenset({"delivered", "undelivered", "failed", "read", "canceled", "blocked"})
# Texts that reached Twilio: they count against the caps.
_SENT = ("accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "read")
# (An unconfirmed text may have reached the patient: it counts against their caps.)
_SENT_OR_IN_FLIGHT = (*_SENT, "claimed", "unknown", "unconfirmed")
# Texts that reached the patient, as far as Twilio has told: a thread has begun. Not a
# pending one (it may yet be canceled), an undelivered one, or one whose send is in flight
# or unknown: a text written after those carries the opt-out line again, as a repeat is
# harmless and a thread whose first text lacks it is not.
_REACHED = tuple(status for status in _SENT if status != "undelivered")

# Delivery failures that say texting this number will not work: the task needs a call.
UNDELIVERABLE_CODES = frozenset({30003, 30004, 30005, 30006, 30007, 30008})
LANDLINE_CODES = frozenset({21614, 30006})
OPTED_OUT_CODE = 21610
INVALID_NUMBER_CODE = 21211

# A claimed row this old belongs to a worker that died mid-send (the HTTP timeout is
# far shorter): its outcome is unknown.
CLAIM_LEASE = timedelta(seconds=60)
# Twilio's message list can lag a new message by a few seconds; a send that is not
# listed by then was never accepted, and is sent again.
RECONCILE_GRACE = timedelta(seconds=30)
# A text whose outcome is still unknown this long after its claim, because Twilio's list
# cannot be read, is given up: a person calls (see _give_up_unconfirmed).
UNCONFIRMED_AFTER = timedelta(hours=2)
# Clocks differ; the list lookup starts this long before our claim. Only a record with the
# text's own body (a link's token is unique) and a sid no other text holds is adopted, so
# a generous margin costs only a longer list, while a worker clock ahead of Twilio's by
# more than the margin would have the text sent twice.
CLOCK_SKEW = timedelta(minutes=15)
RETRY_DELAYS = (
    timedelta(seconds=2),
    timedelta(seconds=15),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=20),
)
MAX_TRIES = len(RETRY_DELAYS) + 1
# A text sent this late after its reserved slot reserves a new one.
SLOT_SLACK = timedelta(seconds=5)
# A thread: texts to a contact less than this apart; the first of one carries STOP wording.
THREAD_GAP = timedelta(days=30)
# A text sent longer than this after it was written was held back (quiet hours, the caps):
# what writing it decided is decided again at its send. Whether it opens a thread (writing
# allows this much to spare: one held past the end of the last thread opens a new one, and
# gets the wording then), and when its link expires (a week from the send). A text sent
# sooner keeps both, and its send a query and a statement less.
HELD_BACK = timedelta(hours=1)

NEXT_CALL_MANUALLY = "call_manually"


@dataclass(frozen=True)
class SendSettings:
    public_base_url: str
    # Messages per second per sending number (Twilio long codes take 1); None: no limit.
    sender_rate: float | None = None


# --- writing texts ---------------------------------------------------------------------


def queue_text(
    session: Session,
    *,
    practice: Practice,
    contact: Contact,
    task: Task | None,
    template: str,
    kind: str,
    dedupe_key: str,
    attempt: int,
    now: datetime,
    base_url: str,
    new_thread: bool = False,
) -> Message | None:
    """Write a text to the outbox, due now. None if this key was already written.

    The body is rendered here, once: what is sent is what the outbox shows.
    `new_thread`: the task and the contact were both created in this transaction, so no
    text has this key and the contact has none at all; the question is not asked.
    """
    written: int | None = None
    earlier: int | None = None
    if not new_thread:
        # Both questions in one round trip; the answer to the second is wasted only on a
        # duplicate, which is rare.
        written, earlier = session.execute(
            _written_statement(),
            {
                "dedupe_key": dedupe_key,
                "contact_id": contact.id,
                "since": now - THREAD_GAP + HELD_BACK,
            },
        ).one()
    if written is not None:
        return None
    context: dict[str, Any] = {
        "practice": practice.name,
        "practice_number": display_number(practice.twilio_number),
        "first_text": earlier is None,
    }
    token = new_token()
    context["link"] = link_url(base_url, token)
    try:
        rendered = render_sms(template, **context)
    except TemplateTooLong as exc:
        # A practice renamed since it was checked: the task must still be made; staff call.
        log.error("text %s for task %s not written: %s", template, task.id if task else None, exc)
        if task is not None:
            session.add(
                TaskEvent(
                    task_id=task.id,
                    at=now,
                    kind="text_blocked",
                    text="the text would be longer than two segments",
                    data={"purpose": template},
                )
            )
        return None
    message = _outbox_row(
        practice, contact, task, template, rendered, kind=kind, dedupe_key=dedupe_key, now=now
    )
    message.attempt = attempt
    # Whoever writes a text due now sends or enqueues it right after committing; the
    # scheduler steps in ENQUEUE_LEASE later if that was lost.
    message.enqueued_at = now
    # The key is unique: the steps that write texts run under the task's lock, so a
    # concurrent duplicate would fail this transaction whole, and its retry finds the text
    # written and returns above.
    insert_row(session, message)
    add_link(
        session,
        token,
        practice_id=practice.id,
        task_id=task.id if task else None,
        message_id=message.id,
        now=now,
    )
    return message


def record_reply(
    session: Session,
    *,
    practice: Practice,
    contact: Contact,
    template: str,
    dedupe_key: str,
    now: datetime,
) -> Message:
    """A reply sent in the webhook's own answer (TwiML), kept in the outbox like every
    text; Twilio's status callback gives it its sid."""
    rendered = render_sms(
        template,
        practice=practice.name,
        practice_number=display_number(practice.twilio_number),
        first_text=False,
    )
    message = _outbox_row(
        practice, contact, None, template, rendered, kind="reply", dedupe_key=dedupe_key, now=now
    )
    message.status = "queued"
    message.tries = 1
    message.sent_at = now
    session.add(message)
    session.flush()
    return message


def _outbox_row(
    practice: Practice,
    contact: Contact,
    task: Task | None,
    template: str,
    rendered: RenderedSms,
    *,
    kind: str,
    dedupe_key: str,
    now: datetime,
) -> Message:
    return Message(
        practice_id=practice.id,
        task_id=task.id if task else None,
        contact_id=contact.id,
        dedupe_key=dedupe_key,
        purpose=template,
        attempt=0,
        kind=kind,
        to_number=contact.phone,
        from_number=practice.twilio_number,
        body=rendered.body,
        segments=rendered.segments,
        status="pending",
        not_before=now,
        tries=0,
        created_at=now,
        updated_at=now,
    )


@functools.cache
def _written_statement() -> Any:
    """(this text's id if it was written already, a text of the contact's thread that
    reached the patient)."""
    written = select(Message.id).where(Message.dedupe_key == bindparam("dedupe_key"))
    return select(written.scalar_subquery(), _reached_since().scalar_subquery())


def _reached_since() -> Any:
    """A text of the contact's that reached them since `since`: their thread is open."""
    return (
        select(Message.id)
        .where(
            Message.contact_id == bindparam("contact_id"),
            Message.created_at > bindparam("since", type_=table(Message).c.created_at.type),
            Message.status.in_(_REACHED),
        )
        .limit(1)
    )


# --- sending ---------------------------------------------------------------------------


def send_message(
    session: Session,
    gateway: TelephonyGateway,
    message_id: int,
    *,
    clock: Clock,
    settings: SendSettings,
) -> str:
    """Send one outbox text if it is due and the compliance gate allows it now.

    Returns what happened: skipped (not ours to send: unknown id, not due, or another job
    has it), deferred, blocked, canceled, sent, retry, failed or unknown.
    """
    now = clock()
    if _dialect(session) == "postgresql" and not settings.sender_rate and transaction_idle(session):
        # The claim and the reads after it in one round trip; see _claim_and_read.
        with explicit_transactions(session):
            return _send_claimed(
                session,
                gateway,
                message_id,
                now,
                lambda: _claim_and_read(session, message_id, now),
                clock=clock,
                settings=settings,
            )
    claim = _claim(session, message_id, now)
    if claim is None:
        return "skipped"
    if settings.sender_rate:
        # Reserved before any lock is taken: the slot lives in a row of its own.
        slot = _take_slot(session, message_id, now, settings.sender_rate)
        if slot is not None and slot > now:
            return _defer_claimed(session, message_id, now, slot, now)
    return _send_claimed(
        session,
        gateway,
        message_id,
        now,
        lambda: _read_claimed(session, message_id, claim, now, clock()),
        clock=clock,
        settings=settings,
    )


def _send_claimed(
    session: Session,
    gateway: TelephonyGateway,
    message_id: int,
    claimed_at: datetime,
    read: Callable[[], _Read | None],
    *,
    clock: Clock,
    settings: SendSettings,
) -> str:
    progress = _Progress()
    try:
        outgoing = read()
        if outgoing is None:
            # Not ours: not pending or not due, another job has it, or reconciliation took
            # the claim back (this worker stalled past the lease).
            session.rollback()
            return "skipped"
        return _send_read(
            session, gateway, outgoing, clock=clock, settings=settings, progress=progress
        )
    except Exception:
        session.rollback()
        if progress.asked:
            # Twilio was asked, and may have the text: storing its answer (or the unknown
            # outcome) failed, to a dropped connection or RQ's job timeout. Left claimed,
            # it is settled by its status callback or, after CLAIM_LEASE, by
            # reconciliation from Twilio's list; a retry now would text the patient twice.
            log.warning("text %s: outcome not stored; left to reconciliation", message_id)
            raise
        # Stopped after the claim and before Twilio was asked (a bug, bad data, RQ's job
        # timeout while waiting on a lock): the text goes back to wait for a retry, as a
        # refused send does, and fails visibly once the retries run out; it is neither
        # lost nor offered again and again. (Only this job's own claim: nothing changes if
        # the claim never happened.)
        _release_claimed(session, message_id, claimed_at, clock())
        raise


@dataclass
class _Progress:
    """How far a send got: once Twilio has been asked, the text is never put back."""

    asked: bool = False


@dataclass(frozen=True)
class _Read:
    """What a send checks, read under its contact's lock after its claim."""

    contact: _Recipient
    message: _Outgoing
    task: _TaskFacts | None
    practice: PracticePolicy
    history: compliance.History
    now: datetime


def _claim_and_read(session: Session, message_id: int, now: datetime) -> _Read | None:
    """The claim, committed (durably) by itself, then in a transaction of its own the
    contact's lock, the text and the caps' history: one round trip. PostgreSQL runs a
    pipeline's statements in order, and flushes the claim's commit to disk before it runs
    the next one, so Twilio is asked only after the claim is safe. The contact and practice
    are read from the text's row (they never change), as the claim's answer is not back yet.
    Inside explicit_transactions: the "BEGIN" here opens the send's transaction.
    """
    utc_day = now.astimezone(UTC).date()
    _, claimed, _, _, locked_contact, owned_rows, history_rows, in_flight, day_counts = pipelined(
        session,
        [
            # A transaction of its own, explicitly: a pipeline's statements up to its end
            # would otherwise make one implicit transaction with the BEGIN after them.
            (BEGIN, {}),
            (_claim_statement(), {"message_id": message_id, "now": now}),
            (COMMIT, {}),
            (BEGIN, {}),
            (_recipient_statement(True, True), {"message_id": message_id}),
            (_own_statement(postgres=True), {"message_id": message_id, "claim": now}),
            (_history_statement(True, True), _history_params(None, None, message_id, now)),
            # The texts on the wire before the day's count: one that settles between the two
            # reads is then counted twice, never missed (each statement sees the commits
            # made before it ran).
            (_in_flight_statement(True), _in_flight_params(None, message_id, now)),
            (
                _day_counts_statement(),
                {
                    "message_id": message_id,
                    # Every zone's date is within a day of UTC's.
                    "first_day": utc_day - timedelta(days=1),
                    "last_day": utc_day + timedelta(days=1),
                },
            ),
        ],
    )
    owned = _owned(owned_rows)
    if not claimed or owned is None:
        return None
    message, task = owned
    practice = texting_policy(session, message.practice_id)
    today = _local_day(practice, now)
    sent_today = next((sent for day, sent in day_counts if day == today), 0)
    return _Read(
        contact=_recipient_of(locked_contact[0]),
        message=message,
        task=task,
        practice=practice,
        history=_history_from(history_rows, now, sent_today, in_flight[0][0]),
        now=now,
    )


def _read_claimed(
    session: Session, message_id: int, claim: _Claim, claimed_at: datetime, now: datetime
) -> _Read | None:
    """_claim_and_read's reads, after a claim committed on its own (SQLite, a sender rate)."""
    practice = texting_policy(session, claim.practice_id)
    own_params = {"message_id": message_id, "claim": claimed_at, "now": now}
    history_params = _history_params(practice, claim.contact_id, message_id, now)
    history_rows: Sequence[Any]
    in_flight_params = _in_flight_params(claim.practice_id, message_id, claimed_at)
    if _dialect(session) == "postgresql":
        locked_contact, owned_rows, in_flight_rows, history_rows = pipelined(
            session,
            [
                (_recipient_statement(True, False), {"contact_id": claim.contact_id}),
                (_own_statement(postgres=True), own_params),
                # Before the history, which holds the day's count: see _claim_and_read.
                (_in_flight_statement(False), in_flight_params),
                (_history_statement(True, False), history_params),
            ],
        )
        owned = _owned(owned_rows)
        if owned is None:
            return None
        contact = _recipient_of(locked_contact[0])
        in_flight = in_flight_rows[0][0]
    else:
        # The conditional write takes SQLite's one write lock first: the contact and the
        # history read after it cannot change until this send's outcome is stored.
        owned = _owned(session.execute(_own_statement(postgres=False), own_params).all())
        if owned is None:
            return None
        contact = _recipient(session, claim.contact_id)
        # No other send is on the wire while this one holds the write lock, but a text
        # whose outcome was lost may have reached Twilio.
        in_flight = session.execute(_in_flight_statement(False), in_flight_params).scalar_one()
        history_rows = session.execute(_history_statement(True, False), history_params).all()
    message, task = owned
    return _Read(
        contact=contact,
        message=message,
        task=task,
        practice=practice,
        history=_history_from(history_rows, now, in_flight=in_flight),
        now=now,
    )


def _send_read(
    session: Session,
    gateway: TelephonyGateway,
    read: _Read,
    *,
    clock: Clock,
    settings: SendSettings,
    progress: _Progress,
) -> str:
    """The gate, Twilio and the answer, for a text claimed and read by this job.

    Lock order everywhere: contact, then task, then message. The contact stays locked until
    the outcome is stored: an opt-out waits for this send instead of slipping in between
    the gate and Twilio, and two texts to one patient go one after the other, each seeing
    the other in the caps. The lock's statement also relaxes this transaction's commit
    (PostgreSQL): losing it to a crash leaves the text claimed, which reconciliation settles
    from Twilio's list; the claim itself was committed durably.
    """
    contact, message, task, practice, now = (
        read.contact,
        read.message,
        read.task,
        read.practice,
        read.now,
    )
    postgres = _dialect(session) == "postgresql"
    reason = _cancel_reason(message, contact, task)
    if reason is not None:
        return _finish(session, _entity(session, message), "canceled", now, reason=reason)

    # The clock again, not the claim's: the contact's lock may have waited on another send
    # to this patient (as long as Twilio's timeout), and the window ends to the minute.
    checked_at = clock()
    decision = compliance.evaluate(
        checked_at,
        channel=compliance.Channel.TEXT,
        purpose=compliance.Purpose(message.kind),
        contact=compliance.ContactFacts(
            phone=contact.phone,
            timezone=contact.timezone,
            state=contact.state,
            opted_out=contact.opted_out_at is not None,
        ),
        history=read.history,
        policy=policy_for(practice),
        in_flight_wait=_in_flight_wait(),
    )
    if isinstance(decision, compliance.Block):
        return _finish(session, _entity(session, message), "blocked", now, reason=decision.reason)
    if isinstance(decision, compliance.Defer):
        return _defer(session, _entity(session, message), decision.until, decision.reason, now)

    body = message.body
    held_back = checked_at - _aware(message.created_at) > HELD_BACK
    if held_back and _opens_a_thread_now(session, message, contact.id, checked_at):
        body = with_opt_out_line(body)
        if not fits(body):
            # Only a practice renamed since its name was checked gets here.
            return _finish(
                session,
                _entity(session, message),
                "blocked",
                now,
                reason="the opt-out wording would make the text longer than two segments",
            )
    sms = OutboundSms(
        to=message.to_number,
        from_=message.from_number,
        body=body,
        status_callback=f"{settings.public_base_url}/twilio/sms/status?m={message.id}",
    )
    progress.asked = True
    try:
        sent = gateway.send_sms(sms)
    except Exception as exc:
        # Anything else stopped the request part-way (RQ's job timeout, a bug in the HTTP
        # layer): Twilio may have the text, so it is settled as an unknown outcome, by
        # reconciliation, and the error still reaches RQ's failed registry.
        error = (
            exc
            if isinstance(exc, GatewayError)
            else GatewayError(
                f"sms: interrupted during the request: {type(exc).__name__}",
                permanent=False,
                outcome_unknown=True,
            )
        )
        full_task = session.get(Task, message.task_id) if message.task_id is not None else None
        settled = _failed_send(
            session,
            _entity(session, message),
            session.get_one(Contact, contact.id, populate_existing=True),
            full_task,
            error,
            clock(),
        )
        if error is not exc:
            raise
        return settled
    at = clock()
    # Core statements, not the unit of work: on the send's hot path its flush cost more CPU
    # than the two statements themselves.
    outcome = {
        "message_id": message.id,
        "sid": sent.sid,
        "new_status": _forward(message.status, sent.status),
        "at": at,
        "data": {"message_id": message.id, "purpose": message.purpose},
    }
    counted = message.kind != "reply"
    if counted:
        # Not "practice_id": an UPDATE takes a parameter named like a column as a new value.
        outcome |= {
            "counted_practice": message.practice_id,
            "counted_day": _local_day(practice, at),
        }
    # A link's week starts when its text goes: one that waited days for the patient's
    # window or the caps would otherwise arrive with little of it left, or none.
    refresh = (
        (
            _refresh_link_statement(),
            {"of_task": message.task_id, "of_message": message.id, "expires": at + LINK_TTL},
        )
        if held_back and message.task_id is not None
        else None
    )
    rewritten = (
        (_body_statement(), {"message_id": message.id, "new_body": body})
        if body != message.body
        else None
    )
    if postgres:
        # One round trip: the text's answer, the practice's count of the day (taken last:
        # its row lock is held only until the commit) and the task's timeline, and COMMIT.
        statement = _sent_and_logged_statement(counted)
        statements = [(statement, outcome | {"data": Jsonb(outcome["data"])})]
        statements += [extra for extra in (refresh, rewritten) if extra is not None]
        pipelined(session, statements, commit=True)
    else:
        session.execute(_sent_statement(), outcome)
        for extra in (refresh, rewritten):
            if extra is not None:
                session.execute(*extra)
        if counted:
            session.execute(_count_statement(postgres=False), outcome)
        if task is not None:
            session.execute(
                _timeline_insert(),
                {
                    "task_id": message.task_id,
                    "at": at,
                    "kind": "text_sent",
                    "text": None,
                    "data": outcome["data"],
                },
            )
        session.commit()
    _forget(session, message.id)
    log.info(
        "text %s (%s) sent to %s: %s %s",
        message.id,
        message.purpose,
        mask_phone(contact.phone),
        sent.sid,
        sent.status,
    )
    return "sent"


def _opens_a_thread_now(
    session: Session, message: _Outgoing, contact_id: int, at: datetime
) -> bool:
    """Whether a text written for an ongoing thread, and then held back, opens a new one
    by the time it goes: no text reached the patient within THREAD_GAP of now."""
    if message.kind == "reply" or opt_out_line() in message.body:
        return False
    earlier = session.execute(
        _thread_statement(),
        {"contact_id": contact_id, "since": at - THREAD_GAP, "message_id": message.id},
    ).first()
    return earlier is None


@functools.cache
def _thread_statement() -> Any:
    return _reached_since().where(Message.id != bindparam("message_id"))


@functools.cache
def _body_statement() -> Any:
    messages = table(Message)
    return (
        update(messages)
        .where(messages.c.id == bindparam("message_id"))
        .values(body=bindparam("new_body"))
    )


@functools.cache
def _refresh_link_statement() -> Any:
    links = table(Link)
    expires = bindparam("expires", type_=links.c.expires_at.type)
    return (
        update(links)
        .where(
            links.c.task_id == bindparam("of_task"),  # ix_links_task_id: a task has a few
            links.c.message_id == bindparam("of_message"),
            links.c.revoked_at.is_(None),
            links.c.expires_at < expires,
        )
        .values(expires_at=expires)
    )


@functools.cache
def _sent_statement() -> Any:
    messages = table(Message)
    at = bindparam("at", type_=messages.c.sent_at.type)
    return (
        update(messages)
        .where(messages.c.id == bindparam("message_id"))
        .values(
            message_sid=bindparam("sid"),
            status=bindparam("new_status"),
            sent_at=at,
            updated_at=at,
            defer_reason=None,
        )
    )


@functools.cache
def _sent_and_logged_statement(counted: bool) -> Any:
    """_sent_statement, the practice's count of the day (if `counted`) and the task's
    "text_sent" line in one statement (PostgreSQL: data-modifying WITHs; a text without a
    task logs nothing)."""
    sent = _sent_statement().returning(table(Message).c.task_id).cte("sent")
    events = table(TaskEvent)
    line = select(
        sent.c.task_id,
        bindparam("at", type_=events.c.at.type),
        literal("text_sent"),
        bindparam("data", type_=events.c.data.type),
    ).where(sent.c.task_id.is_not(None))
    statement = insert(events).from_select(["task_id", "at", "kind", "data"], line)
    if counted:
        statement = statement.add_cte(_count_statement(postgres=True).cte("counted"))
    return statement


def count_sent(session: Session, message: Message, at: datetime) -> None:
    """Add a text Twilio accepted to its practice's count of the day (the daily cap's).

    For every writer of a text's sent_at other than the send itself, which counts in its
    own statement: a reconciliation that finds the text, a callback that beat the answer.
    """
    if message.kind == "reply":
        return
    practice = texting_policy(session, message.practice_id)
    session.execute(
        _count_statement(postgres=_dialect(session) == "postgresql"),
        {"counted_practice": message.practice_id, "counted_day": _local_day(practice, at)},
    )


def _local_day(practice: PracticePolicy, at: datetime) -> date:
    return at.astimezone(ZoneInfo(practice.timezone)).date()


@functools.cache
def _count_statement(*, postgres: bool) -> Any:
    counts = table(PracticeSendCount)
    statement = dialect_insert("postgresql" if postgres else "sqlite")(counts).values(
        practice_id=bindparam("counted_practice"), day=bindparam("counted_day"), sent=1
    )
    return statement.on_conflict_do_update(
        index_elements=[counts.c.practice_id, counts.c.day],
        set_={"sent": counts.c.sent + 1},
    )


@functools.cache
def _timeline_insert() -> Any:
    return insert(table(TaskEvent))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


@dataclass(frozen=True)
class _TaskFacts:
    """What a send checks of its task: read with the text, not loaded as a row."""

    status: str
    cadence_stopped_at: datetime | None
    flag: str | None


@dataclass(frozen=True)
class _Outgoing:
    """The text being sent, as read (and locked) by the statement that confirms the claim.

    Plain columns, not the mapped row: loading and tracking an ORM object cost the send
    more CPU than the statement itself. The paths that change the text (cancel, block,
    defer, failure) load the row then; see `_entity`.
    """

    id: int
    practice_id: int
    task_id: int | None
    kind: str
    purpose: str
    status: str
    to_number: str
    from_number: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class _Recipient:
    """What a send checks of its contact."""

    id: int
    phone: str
    timezone: str | None
    state: str | None
    opted_out_at: datetime | None
    sms_undeliverable_at: datetime | None


_OUTGOING_COLUMNS = tuple(field.name for field in fields(_Outgoing))
_RECIPIENT_COLUMNS = tuple(field.name for field in fields(_Recipient))


def _owned(rows: Sequence[Any]) -> tuple[_Outgoing, _TaskFacts | None] | None:
    """The text, if this job's claim still held, with what the send checks of its task.

    From _own_statement, which locks the text: nothing else can change it (or settle it as
    lost) until this send's outcome is stored. The task's facts come back in the same
    statement (a round trip less than loading the task); its snapshot is taken after the
    contact's lock, as a SELECT of its own would be.
    """
    if not rows:
        return None
    row = rows[0]
    count = len(_OUTGOING_COLUMNS)
    message = _Outgoing(*row[:count])
    status, stopped_at, flag = row[count:]
    if message.task_id is None or status is None:
        return message, None
    return message, _TaskFacts(status, _aware(stopped_at) if stopped_at else None, flag)


@functools.cache
def _own_statement(*, postgres: bool) -> Any:
    """The text, if this job's claim still holds, locked until the send's outcome is stored.

    PostgreSQL: a row lock (FOR NO KEY UPDATE, the lock an UPDATE of these columns takes)
    without writing the row; an UPDATE would write a new version of it and an entry in
    each of the table's indexes, for nothing. SQLite has no row locks: a conditional write
    takes its one write lock instead.
    """
    # Built once, and Core: building and keying it anew, or an ORM UPDATE, costs more CPU
    # than PostgreSQL takes to run it.
    messages = table(Message)
    tasks = table(Task)
    claimed_at = messages.c.claimed_at
    facts = [
        select(column).where(tasks.c.id == messages.c.task_id).scalar_subquery()
        for column in (tasks.c.status, tasks.c.cadence_stopped_at, tasks.c.flag)
    ]
    still_claimed = (
        messages.c.id == bindparam("message_id"),
        messages.c.status == "claimed",
        messages.c.claimed_at == bindparam("claim", type_=claimed_at.type),
    )
    columns = (*(messages.c[name] for name in _OUTGOING_COLUMNS), *facts)
    if postgres:
        return select(*columns).where(*still_claimed).with_for_update(of=messages, key_share=True)
    return (
        update(messages)
        .where(*still_claimed)
        .values(updated_at=bindparam("now", type_=claimed_at.type))
        .returning(*columns)
    )


def _recipient(session: Session, contact_id: int) -> _Recipient:
    """The contact, read without a lock (SQLite: the send's conditional write holds it)."""
    row = session.execute(_recipient_statement(False, False), {"contact_id": contact_id}).one()
    return _recipient_of(row)


def _recipient_of(row: Sequence[Any]) -> _Recipient:
    # A locked read carries set_config's answer after the contact's columns.
    return _Recipient(*row[: len(_RECIPIENT_COLUMNS)])


@functools.cache
def _recipient_statement(lock: bool, by_message: bool) -> Any:
    """The contact's columns, by "contact_id" or (by_message) as the contact of "message_id";
    locked, the statement also relaxes its transaction's commit (PostgreSQL only: what
    relaxed_rows does, in the lock's own statement)."""
    contacts = table(Contact)
    columns: list[Any] = [contacts.c[name] for name in _RECIPIENT_COLUMNS]
    if lock:
        columns.append(func.set_config("synchronous_commit", "off", True))
    statement = select(*columns).where(contacts.c.id == _of_message("contact_id", by_message))
    return statement.with_for_update(of=contacts) if lock else statement


def _of_message(name: str, by_message: bool) -> Any:
    """A "contact_id" or "practice_id" parameter, or the text's own (by "message_id")."""
    if not by_message:
        return bindparam(name)
    # Aliased: inside a statement on the texts, the plain table would be correlated.
    text_row = table(Message).alias("sent_text")
    return (
        select(text_row.c[name]).where(text_row.c.id == bindparam("message_id")).scalar_subquery()
    )


def _entity(session: Session, message: _Outgoing) -> Message:
    """The text as a mapped row, for the paths that change it (it is locked already)."""
    return session.get_one(Message, message.id, populate_existing=True)


def _forget(session: Session, message_id: int) -> None:
    """A copy of the text this session loaded earlier must not go on showing the claim."""
    cached = session.identity_map.get(session.identity_key(Message, message_id))
    if cached is not None:
        session.expire(cached)


def _release_claimed(
    session: Session, message_id: int, claimed_at: datetime, now: datetime
) -> None:
    contact_id = session.scalar(select(Message.contact_id).where(Message.id == message_id))
    if contact_id is not None:
        consent.lock_contact(session, contact_id)  # contact, then task, then message
    message = session.scalars(
        select(Message)
        .where(
            Message.id == message_id, Message.status == "claimed", Message.claimed_at == claimed_at
        )
        .with_for_update()
    ).one_or_none()
    if message is None:
        session.rollback()
        return
    message.updated_at = now
    if _retry_later(message, now) is not None:
        message.defer_reason = "internal error; see the worker log"
        session.commit()
        return
    _give_up(session, message, now, reason="gave up: internal error; see the worker log")


def _give_up(
    session: Session,
    message: Message,
    now: datetime,
    *,
    reason: str,
    status: str = "failed",
    call_reason: str = "the text could not be sent",
) -> str:
    """End a text that will not be sent (again), and have a person call: the patient
    still needs an answer. Commits; returns the text's new status."""
    task = None if message.task_id is None else session.get(Task, message.task_id)
    if task is not None:
        mark_call_manually(session, task, now, reason=call_reason)
    return _finish(session, message, status, now, reason=reason)


def _retry_later(message: Message, now: datetime) -> timedelta | None:
    """Put a claimed text back to wait for its next try, after the pause its tries so far
    call for; returns the pause, or None (changing nothing) once the tries have run out."""
    if message.tries >= MAX_TRIES:
        return None
    delay = RETRY_DELAYS[min(max(message.tries, 1), len(RETRY_DELAYS)) - 1]
    message.status = "pending"
    message.not_before = now + delay
    message.claimed_at = None
    message.enqueued_at = None
    return delay


def _take_slot(session: Session, message_id: int, now: datetime, rate: float) -> datetime | None:
    """This text's send slot under the per-sender rate limit (kept across a rate wait)."""
    row = session.execute(
        select(Message.slot_at, Message.from_number).where(Message.id == message_id)
    ).one()
    session.rollback()  # end the read: the slot is written on a connection of its own
    if row.slot_at is not None and now - row.slot_at <= SLOT_SLACK:
        return row.slot_at  # type: ignore[no-any-return]
    slot = _reserve_slot(session, row.from_number, now, rate)
    session.execute(
        update(Message).where(Message.id == message_id).values(slot_at=slot),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return slot


def _defer_claimed(
    session: Session, message_id: int, claimed_at: datetime, until: datetime, now: datetime
) -> str:
    session.execute(
        update(Message)
        .where(
            Message.id == message_id, Message.status == "claimed", Message.claimed_at == claimed_at
        )
        .values(
            status="pending",
            not_before=until,
            defer_reason="sender rate limit",
            claimed_at=None,
            enqueued_at=None,
            tries=Message.tries - 1,
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return "deferred"


@dataclass(frozen=True)
class _Claim:
    contact_id: int
    practice_id: int


def _claim(session: Session, message_id: int, now: datetime) -> _Claim | None:
    """The compare-and-swap that lets exactly one job send a text, in one autocommitted
    statement: a worker that dies mid-send leaves a claimed row for reconciliation, never
    a silent pending one that would be sent again. Returns the text's contact and practice.
    """
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    params = {"message_id": message_id, "now": now}
    if engine.dialect.name == "postgresql":
        row = autocommitted_row(engine, _claim_statement(), params)
    else:
        with engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            row = autocommit.execute(_claim_statement(), params).one_or_none()
    return None if row is None else _Claim(int(row[0]), int(row[1]))


@functools.cache
def _claim_statement() -> Any:
    messages = table(Message)
    now = bindparam("now", type_=messages.c.claimed_at.type)
    return (
        update(messages)
        .where(
            messages.c.id == bindparam("message_id"),
            messages.c.status == "pending",
            messages.c.not_before <= now,
        )
        .values(status="claimed", claimed_at=now, tries=messages.c.tries + 1, updated_at=now)
        .returning(messages.c.contact_id, messages.c.practice_id)
    )


def _cancel_reason(message: _Outgoing, contact: _Recipient, task: _TaskFacts | None) -> str | None:
    if message.kind == "reply":
        return None
    if contact.sms_undeliverable_at is not None:
        return "the number cannot receive texts"
    if task is not None:
        if not is_open(TaskStatus(task.status)):
            return "the task is closed"
        if message.kind == "automated" and task.cadence_stopped_at is not None:
            return "the automated follow-ups stopped"
        if task.flag == "sms_undeliverable":
            return "texts to this patient are not delivered"
    return None


def policy_for(practice: PracticePolicy) -> compliance.Policy:
    return compliance.Policy(
        practice_timezone=practice.timezone,
        texting_window=texting_window(practice.texting_hours),
        daily_send_cap=practice.daily_send_cap,
    )


_DAY_INDEX = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def texting_window(stored: dict[str, Any] | None) -> dict[int, tuple[time, time] | None] | None:
    """The manager's stored quiet hours as the gate's per-weekday window."""
    if stored is None:
        return None
    window: dict[int, tuple[time, time] | None] = {}
    for day, index in _DAY_INDEX.items():
        value = stored.get(day)
        if value is None:
            window[index] = None
        else:
            window[index] = (time.fromisoformat(value[0]), time.fromisoformat(value[1]))
    return window


def contact_history(
    session: Session,
    practice: PracticePolicy,
    contact: Contact,
    message: Message | None,
    now: datetime,
) -> compliance.History:
    """What the caps count: texts sent, and texts that may have been (claimed or unknown:
    another send in flight, or one whose answer was lost), and click-to-calls that dialled
    the patient (an agent's own phone ringing out never reached the patient, so it is not
    an attempt). `message` is the text being sent, left out; None when a call asks."""
    return _history(session, practice, contact.id, message.id if message else None, now)


def _history(
    session: Session,
    practice: PracticePolicy,
    contact_id: int,
    message_id: int | None,
    now: datetime,
) -> compliance.History:
    params = _history_params(practice, contact_id, message_id, now)
    # One statement for every count the caps take: a round trip each was most of a send's
    # database time.
    rows = session.execute(_history_statement(message_id is not None, False), params).all()
    return _history_from(rows, now)


def _history_params(
    practice: PracticePolicy | None, contact_id: int | None, message_id: int | None, now: datetime
) -> dict[str, Any]:
    """The history statement's parameters; without a practice or contact, for the
    statement that takes them from the text (by "message_id") and counts nothing."""
    params: dict[str, Any] = {
        "week_ago": now - timedelta(days=7),
        "day_ago": now - timedelta(days=1),
    }
    if practice is not None:
        params |= {"practice_id": practice.id, "day": _local_day(practice, now)}
    if contact_id is not None:
        params["contact_id"] = contact_id
    if message_id is not None:
        params["message_id"] = message_id
    return params


def _history_from(
    rows: Sequence[Any], now: datetime, sent_today: int = 0, in_flight: int = 0
) -> compliance.History:
    day_ago = now - timedelta(days=1)
    attempts: list[datetime] = []
    automated: list[datetime] = []
    for count, at, kind in rows:
        if count is not None:
            sent_today = int(count)
            continue
        at = _aware(at)
        if kind == _CALL:
            attempts.append(at)
            continue
        if at > day_ago:
            attempts.append(at)
        if kind == "automated":
            automated.append(at)
    return compliance.History(
        attempts=attempts,
        automated_texts=automated,
        practice_sent_today=sent_today,
        practice_in_flight=in_flight,
    )


def _in_flight_wait() -> timedelta:
    """Two texts that each saw the other on the wire both wait. Waits a whole minute apart
    (a deferral is rounded up to the minute) let one's next try find the other settled,
    instead of the two meeting again and again."""
    return compliance.IN_FLIGHT_WAIT + timedelta(minutes=secrets.randbelow(3))


@functools.cache
def _in_flight_statement(by_message: bool) -> Any:
    """How many other texts of the practice (of "message_id", or "practice_id") are on
    the wire: claimed, or their outcome unknown (for a day at most). Each claim commits
    before its send reads this, so of two workers sending at once the later reader always
    sees the other (both may, and both wait: the safe side of a cap). By
    ix_messages_in_flight: a few rows, whatever the backlog."""
    messages = table(Message)
    return select(func.count()).where(
        messages.c.practice_id == _of_message("practice_id", by_message),
        # The index's predicate, as SQL literals: PostgreSQL proves a partial index usable
        # only from constants, and a prepared statement's generic plan has parameters.
        sql_text(IN_FLIGHT_STATUSES_SQL),
        messages.c.claimed_at > bindparam("day_ago", type_=messages.c.claimed_at.type),
        messages.c.kind != "reply",
        messages.c.id != bindparam("message_id"),
    )


def _in_flight_params(practice_id: int | None, message_id: int, now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {"message_id": message_id, "day_ago": now - timedelta(days=1)}
    if practice_id is not None:
        params["practice_id"] = practice_id
    return params


@functools.cache
def _day_counts_statement() -> Any:
    """(day, texts sent) of the text's practice, from "first_day" to "last_day"."""
    counts = table(PracticeSendCount)
    return select(counts.c.day, counts.c.sent).where(
        counts.c.practice_id == _of_message("practice_id", True),
        counts.c.day >= bindparam("first_day", type_=counts.c.day.type),
        counts.c.day <= bindparam("last_day", type_=counts.c.day.type),
    )


# The kind the history gives a call attempt; no text has it.
_CALL = "call"


@functools.cache
def _history_statement(leave_out_message: bool, by_message: bool) -> Any:
    """Rows of (count, at, kind): the practice's texts sent today, once, then the contact's
    texts of the last week and its call attempts of the last day. By_message: the contact
    of "message_id", and no count (_day_counts_statement reads it)."""
    # Core (the tables' columns): an ORM-enabled SELECT costs the send its compile state.
    messages = table(Message)
    attempts = table(CallAttempt)
    stamp = messages.c.sent_at.type
    when = func.coalesce(messages.c.sent_at, messages.c.claimed_at)
    contact = _of_message("contact_id", by_message)
    texts = select(null(), when, messages.c.kind).where(
        messages.c.contact_id == contact,
        when.is_not(None),
        when > bindparam("week_ago", type_=stamp),
        messages.c.kind != "reply",
        messages.c.status.in_(_SENT_OR_IN_FLIGHT),
    )
    if leave_out_message:
        texts = texts.where(messages.c.id != bindparam("message_id"))
    # The bridge sets dial_status when it dials the patient; the agent's leg alone leaves it
    # empty.
    calls = select(null(), attempts.c.created_at, literal(_CALL)).where(
        attempts.c.contact_id == contact,
        attempts.c.created_at > bindparam("day_ago", type_=stamp),
        attempts.c.dial_status.is_not(None),
    )
    if by_message:
        return union_all(texts, calls)
    counts = table(PracticeSendCount)
    sent_today = (
        select(counts.c.sent)
        .where(counts.c.practice_id == bindparam("practice_id"), counts.c.day == bindparam("day"))
        .scalar_subquery()
    )
    today = select(
        func.coalesce(sent_today, 0), type_coerce(null(), stamp), type_coerce(null(), String())
    )
    return union_all(today, texts, calls)


def _aware(value: Any) -> datetime:
    # coalesce() loses the column type, so SQLite hands back its stored text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value  # type: ignore[no-any-return]


def _reserve_slot(session: Session, number: str, now: datetime, rate: float) -> datetime:
    """The next free send time of a sending number, reserved for this text.

    On a connection of its own, committed at once: the slot row must not stay locked
    while this send talks to Twilio, and the send's own transaction holds the contact.
    """
    interval = timedelta(seconds=1 / rate)
    insert_ = upsert_insert(session)
    with Session(session.get_bind()) as own:
        lookup = select(SenderSlot).where(SenderSlot.number == number).with_for_update()
        slot = own.scalar(lookup)
        if slot is None:
            own.execute(
                insert_(SenderSlot).values(number=number, next_at=now).on_conflict_do_nothing()
            )
            slot = own.scalars(lookup).one()
        start = max(slot.next_at, now)
        slot.next_at = start + interval
        own.commit()
    return start


def _defer(
    session: Session,
    message: Message,
    until: datetime,
    reason: str,
    now: datetime,
) -> str:
    # A slot reserved before a long deferral is long gone; it would let a morning's worth
    # of deferred texts out at once.
    message.slot_at = None
    message.status = "pending"
    message.not_before = until
    message.defer_reason = reason[:200]
    message.claimed_at = None
    message.enqueued_at = None
    message.tries = max(message.tries - 1, 0)  # waiting is not a failed try
    message.updated_at = now
    session.commit()
    return "deferred"


def _finish(session: Session, message: Message, status: str, now: datetime, *, reason: str) -> str:
    message.status = status
    message.defer_reason = reason[:200]
    message.updated_at = now
    if message.task_id is not None:
        session.add(
            TaskEvent(
                task_id=message.task_id,
                at=now,
                kind=f"text_{status}",
                text=reason,
                data={"message_id": message.id, "purpose": message.purpose},
            )
        )
    session.commit()
    return status


def _failed_send(
    session: Session,
    message: Message,
    contact: Contact,
    task: Task | None,
    exc: GatewayError,
    now: datetime,
) -> str:
    message.error_code = exc.code
    message.error = exc.message[:300]
    message.updated_at = now
    if exc.outcome_unknown:
        # Twilio may have the message: never resend before looking it up.
        message.status = "unknown"
        message.enqueued_at = None  # for the scheduler's reconcile pass
        session.commit()
        log.warning("text %s: outcome unknown (%s); will reconcile", message.id, exc.message)
        return "unknown"
    if not exc.permanent:
        delay = _retry_later(message, now)
        if delay is not None:
            session.commit()
            log.warning("text %s: %s; retrying in %s", message.id, exc.message, delay)
            return "retry"
        return _give_up(session, message, now, reason=f"gave up: {exc.message}")
    log.warning("text %s refused by the provider (code %s)", message.id, exc.code)
    if exc.code == OPTED_OUT_CODE:
        # The carrier knows the patient said STOP (perhaps to another service on this
        # number): that is an opt-out for us too.
        consent.opt_out(
            session,
            contact,
            at=now,
            source="carrier_21610",
            task_id=task.id if task else None,
        )
        return _finish(session, message, "failed", now, reason="the patient opted out")
    if exc.code in LANDLINE_CODES or exc.code == INVALID_NUMBER_CODE:
        contact.sms_undeliverable_at = now
        if task is not None:
            mark_call_manually(session, task, now, reason="texts cannot reach this number")
    elif task is not None:
        # Refused for good for another reason (often the account's or the sending
        # number's, so every text would be): the patient still needs an answer.
        mark_call_manually(session, task, now, reason="the text could not be sent")
    return _finish(session, message, "failed", now, reason=exc.message)


def mark_call_manually(session: Session, task: Task, now: datetime, *, reason: str) -> None:
    """Texting will not work for this task: a person has to call.

    A task flagged for a revocation keeps that flag: a patient's own words withdrawing
    consent are what staff must read first, and a late "undelivered" must not hide them.
    """
    if task.flag == "sms_undeliverable" or (
        task.flag == "revoked_consent"
        and (task.next_action == NEXT_CALL_MANUALLY or not is_open(TaskStatus(task.status)))
    ):
        return
    if task.flag != "revoked_consent":
        task.flag = "sms_undeliverable"
    if is_open(TaskStatus(task.status)):
        task.next_action = NEXT_CALL_MANUALLY
        task.next_action_at = now
    task.updated_at = now
    consent.cancel_unsent(session, task_id=task.id, at=now, reason=reason)
    session.add(TaskEvent(task_id=task.id, at=now, kind="call_manually", text=reason))


def _forward(current: str, reported: str) -> str:
    """A status only moves forward: a late callback never undoes a later one."""
    if current in FINAL and current not in ("delivered",):
        return current
    if _RANK.get(reported, -1) > _RANK.get(current, -1):
        return reported
    return current


# --- status callbacks ------------------------------------------------------------------


def apply_status(session: Session, params: dict[str, Any], at: datetime) -> None:
    """A delivery status callback, in whatever order they come."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    reported = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    # Some of its parts reached the phone: for us (a thread begun, the caps) it was
    # delivered.
    reported = {"partially_delivered": "delivered"}.get(reported, reported)
    if reported not in _RANK:
        return
    found = None
    message_id = int_or_none(params.get("m"))
    if message_id is not None:
        found = session.execute(
            select(Message.id, Message.contact_id, Message.message_sid).where(
                Message.id == message_id
            )
        ).first()
        if found is not None and found.message_sid not in (None, sid):
            found = None  # a mixed-up id: trust the sid
    if found is None and sid:
        found = session.execute(
            select(Message.id, Message.contact_id, Message.message_sid).where(
                Message.message_sid == sid
            )
        ).first()
    if found is None:
        log.info("status callback for a text this service did not send: ignored")
        return
    # The same lock order as a send (contact, then message): a callback that arrives while
    # its send is still storing Twilio's answer waits for it, then moves the status on.
    contact = locked(session, Contact, found.contact_id)
    message = locked(session, Message, found.id)
    if message.message_sid not in (None, sid):
        # Sent again since (reconciliation did not find the first send at Twilio), and the
        # new send stored its sid while we waited for the lock: this callback is the first
        # send's, and says nothing of the text's current send.
        log.info("text %s: status callback for an earlier send of it: ignored", message.id)
        return
    if message.message_sid is None:
        # The callback beat our own record of the send (or the send's answer was lost):
        # either way Twilio has it, which settles an unknown outcome.
        message.message_sid = sid
        if message.sent_at is None:
            message.sent_at = at
            count_sent(session, message, at)
    message.status = _forward(message.status, reported)
    message.updated_at = at
    code = int_or_none(params.get("ErrorCode"))
    if reported in ("undelivered", "failed"):
        message.error_code = code
        if message.task_id is not None:
            session.add(
                TaskEvent(
                    task_id=message.task_id,
                    at=at,
                    kind="text_undelivered",
                    data={"message_id": message.id, "code": code},
                )
            )
        if code == OPTED_OUT_CODE:
            # Reported after the send (a Messaging Service reports it so): the carrier
            # knows the patient said STOP, as when the send itself is refused with it.
            consent.opt_out(
                session, contact, at=at, source="carrier_21610", task_id=message.task_id
            )
        if code in UNDELIVERABLE_CODES:
            if code in LANDLINE_CODES:
                contact.sms_undeliverable_at = at
            if message.task_id is not None:
                task = session.get_one(Task, message.task_id)
                mark_call_manually(session, task, at, reason="the text was not delivered")


# --- reconciling lost answers ----------------------------------------------------------


def reconcile_message(
    session: Session, gateway: TelephonyGateway, message_id: int, *, clock: Clock
) -> str:
    """Settle a send whose answer never came: adopt Twilio's record, or send again.

    Returns found, resend (after the pause its tries call for), failed (out of tries),
    waiting or skipped.
    """
    now = clock()
    message = _locked_or_none(session, message_id)
    if message is None or not _needs_reconcile(message, now):
        session.rollback()
        return "skipped"
    claimed = message.claimed_at or message.updated_at
    contact_id, to, from_ = message.contact_id, message.to_number, message.from_number
    session.commit()  # no lock held across the HTTP request
    records: list[MessageRecord] | None
    try:
        records = gateway.list_messages(to=to, from_=from_, sent_after=claimed - CLOCK_SKEW)
    except GatewayError as exc:
        log.warning("text %s: could not list messages (%s)", message_id, exc.message)
        if now - claimed < UNCONFIRMED_AFTER:
            return "waiting"
        records = None
    # Contact, then message, as everywhere: giving up moves the task to call manually,
    # which cancels its other unsent texts, as an opt-out (holding the contact) may be.
    consent.lock_contact(session, contact_id)
    message = _locked_or_none(session, message_id)
    if message is None or not _needs_reconcile(message, now):
        session.rollback()
        return "skipped"
    if records is None:
        # Twilio's list could not be read for UNCONFIRMED_AFTER: the text may or may not
        # have gone. Sent again it might reach the patient twice; left unknown the task
        # would wait on it for good. A person calls instead. Not "failed": it may have
        # gone, so it still counts against the patient's caps, and a late callback from
        # Twilio still moves it on (see _RANK).
        log.warning("text %s: outcome never confirmed; not sent again", message_id)
        return _give_up(
            session,
            message,
            now,
            status="unconfirmed",
            reason="outcome never confirmed (message list unreadable)",
            call_reason="whether the text went could not be confirmed",
        )
    known = set(
        session.scalars(
            select(Message.message_sid).where(
                Message.message_sid.in_([record.sid for record in records])
            )
        )
    )
    # Sent as written, or with the opt-out wording a send adds to a text that waited
    # past the end of its thread (see _opens_a_thread_now).
    bodies = (message.body, with_opt_out_line(message.body))
    for record in records:
        if record.body in bodies and record.sid not in known:
            message.body = record.body
            message.message_sid = record.sid
            message.status = _forward("queued", record.status)
            message.sent_at = record.date_created or claimed
            message.updated_at = now
            count_sent(session, message, message.sent_at)
            session.commit()
            log.info("text %s: found at the provider, not resent", message_id)
            return "found"
    # The grace runs from the end of the request that lost its answer (up to Twilio's
    # timeout after the claim): a message Twilio created late in it may not be listed yet.
    ended = max(claimed, _aware(message.updated_at)) if message.status == "unknown" else claimed
    if now - ended < RECONCILE_GRACE:
        session.rollback()
        return "waiting"
    # Never accepted: a try that failed like any other, so the same growing pauses, and
    # a person calls once they run out (a Twilio answering 500 for an hour would otherwise
    # be asked again every minute, and the patient never hear from us).
    message.updated_at = now
    delay = _retry_later(message, now)
    if delay is None:
        log.warning("text %s: not at the provider, and out of tries", message_id)
        return _give_up(session, message, now, reason="gave up: never reached Twilio")
    session.commit()
    log.info("text %s: not at the provider; sending again in %s", message_id, delay)
    return "resend"


def _locked_or_none(session: Session, message_id: int) -> Message | None:
    return session.scalar(
        select(Message)
        .where(Message.id == message_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _needs_reconcile(message: Message, now: datetime) -> bool:
    if message.message_sid is not None:
        return False
    if message.status == "unknown":
        return True
    return (
        message.status == "claimed"
        and message.claimed_at is not None
        and now - message.claimed_at > CLAIM_LEASE
    )


# --- the scheduler's side ------------------------------------------------------------


ENQUEUE_LEASE = timedelta(seconds=30)


def claim_due(session: Session, *, now: datetime, limit: int = 500) -> tuple[list[int], list[int]]:
    """Texts to hand to RQ now: (due to send, due to reconcile).

    Marks them enqueued, so the next pass does not offer them again unless RQ lost them
    (Redis flushed): then ENQUEUE_LEASE later they are offered again.
    """
    offered = or_(Message.enqueued_at.is_(None), Message.enqueued_at < now - ENQUEUE_LEASE)
    due_send = and_(Message.status == "pending", Message.not_before <= now)
    due_reconcile = or_(
        Message.status == "unknown",
        and_(Message.status == "claimed", Message.claimed_at < now - CLAIM_LEASE),
    )
    rows = session.execute(
        select(Message.id, Message.status)
        .where(Message.status.in_(("pending", "claimed", "unknown")), offered)
        .where(or_(due_send, due_reconcile))
        .order_by(Message.not_before)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        session.rollback()
        return [], []
    ids = [row.id for row in rows]
    session.execute(
        update(Message).where(Message.id.in_(ids)).values(enqueued_at=now),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    send = [row.id for row in rows if row.status == "pending"]
    reconcile = [row.id for row in rows if row.status != "pending"]
    return send, reconcile


__all__ = [
    "SendSettings",
    "apply_status",
    "claim_due",
    "count_sent",
    "queue_text",
    "reconcile_message",
    "send_message",
]
