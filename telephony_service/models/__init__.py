"""SQLAlchemy 2.0 typed models. PostgreSQL is the source of truth."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# BigInteger on PostgreSQL, INTEGER on SQLite so it stays the rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")

intpk = Annotated[int, mapped_column(BigId, primary_key=True)]
utc = Annotated[datetime, mapped_column(UTCDateTime())]
str16 = Annotated[str, mapped_column(String(16))]
str32 = Annotated[str, mapped_column(String(32))]
str64 = Annotated[str, mapped_column(String(64))]
str200 = Annotated[str, mapped_column(String(200))]

# The open statuses (domain.statuses.OPEN) as SQL, for the queue's partial indexes.
OPEN_STATUSES_SQL = (
    "status IN ('new', 'first_attempted', 'left_voicemail', 'second_attempt_scheduled', "
    "'reached', 'scheduled', 'needs_insurance_followup', 'needs_clinical_escalation')"
)

# Texts on the wire: claimed by a send, or its outcome unknown. ix_messages_in_flight's
# predicate, and the term the daily cap's count of them is written with: a query uses a
# partial index only where it names the predicate's constants.
IN_FLIGHT_STATUSES_SQL = "status IN ('claimed', 'unknown')"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON().with_variant(JSONB(), "postgresql")}


class Practice(Base):
    __tablename__ = "practices"

    id: Mapped[intpk]
    name: Mapped[str200]
    twilio_number: Mapped[str16] = mapped_column(unique=True)
    timezone: Mapped[str64]
    booking_url: Mapped[str | None] = mapped_column(String(500))
    # Weekly business hours as {"mon": [["08:00", "17:00"]], ...}; see domain.calendar.
    business_hours: Mapped[dict[str, Any]]
    observe_us_holidays: Mapped[bool] = mapped_column(Boolean, default=True)
    # The manager's texting window per weekday in the patient's local time, as
    # {"mon": ["09:00", "19:00"], "sun": None}; None means the legal floor alone.
    texting_hours: Mapped[dict[str, Any] | None]
    # Texts a day at most (abuse and cost); sends over it wait for the next day.
    daily_send_cap: Mapped[int] = mapped_column(Integer, default=500)
    created_at: Mapped[utc]

    closures: Mapped[list[PracticeClosure]] = relationship(
        back_populates="practice", order_by="PracticeClosure.day"
    )


class PracticeClosure(Base):
    """A day the practice is closed beyond the federal holidays (staff training, snow)."""

    __tablename__ = "practice_closures"
    __table_args__ = (UniqueConstraint("practice_id", "day"),)

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)  # local to the practice
    reason: Mapped[str | None] = mapped_column(String(200))

    practice: Mapped[Practice] = relationship(back_populates="closures")


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(
        ForeignKey("practices.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str16]
    phone: Mapped[str16]
    password_hash: Mapped[str] = mapped_column(String(200))
    # How the agent introduces themself in the call script ("Hi, this is Sam ...").
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[utc]
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UserSession(Base):
    """A signed-in browser. The cookie carries a random token; only its hash is kept.

    A new row (a new token) at every sign-in is what rotates the session; ending it here
    ends it everywhere, which a signed cookie alone could not do.
    """

    __tablename__ = "user_sessions"

    id: Mapped[intpk]
    token_hash: Mapped[str64] = mapped_column(unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[utc]
    last_seen_at: Mapped[utc]
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(16))  # logout | idle

    user: Mapped[User] = relationship()


class LoginFailure(Base):
    """A failed sign-in, counted per account and per address for throttling."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_account_at", "account", "at"),
        Index("ix_login_failures_address_at", "address", "at"),
    )

    id: Mapped[intpk]
    at: Mapped[utc]
    # A SHA-256 of the lower-cased email: the table also counts emails nobody has.
    account: Mapped[str64]
    address: Mapped[str] = mapped_column(String(64))


class AuditEntry(Base):
    """Who viewed or changed which task, who placed which call. Append-only (a trigger on
    PostgreSQL refuses UPDATE and DELETE); never a message body or a phone number."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_practice_at", "practice_id", "at"),
        Index("ix_audit_log_task", "task_id"),
    )

    id: Mapped[intpk]
    at: Mapped[utc]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # viewed_task | changed_task | sent_text | placed_call | quiet_hours_override | signed_in …
    action: Mapped[str32]
    task_id: Mapped[int | None] = mapped_column(BigId)
    call_attempt_id: Mapped[int | None] = mapped_column(BigId)
    data: Mapped[dict[str, Any] | None]


class Lane(Base):
    """Categories an agent owns during set hours (practice-local), e.g. new patients 8-12."""

    __tablename__ = "lanes"

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(
        ForeignKey("practices.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # {"categories": ["new_patient_request", ...]}
    categories: Mapped[dict[str, Any]]
    # As Practice.business_hours: {"mon": [["08:00", "12:00"]], ...}; empty = always.
    hours: Mapped[dict[str, Any]]
    created_at: Mapped[utc]

    user: Mapped[User] = relationship()


class ApiKey(Base):
    """A practice's API key. Only a SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(
        ForeignKey("practices.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str64] = mapped_column(unique=True)
    prefix: Mapped[str16]
    created_at: Mapped[utc]
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Contact(Base):
    """One per practice and phone number."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("practice_id", "phone"),)

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    phone: Mapped[str16]
    name: Mapped[str | None] = mapped_column(String(200))
    # None until we know: a new-patient request says no, an EHR referral may say yes.
    is_known_patient: Mapped[bool | None] = mapped_column(Boolean)
    timezone: Mapped[str | None] = mapped_column(String(64))
    # Two-letter US state when known (an EHR may say); else the area code's is used.
    state: Mapped[str | None] = mapped_column(String(2))
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when a carrier says the number cannot take texts (landline, unreachable).
    sms_undeliverable_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[utc]


class ConsentChange(Base):
    """Every opt-out and opt-in, with when and how: the audit a regulator asks for."""

    __tablename__ = "consent_changes"

    id: Mapped[intpk]
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[utc]
    action: Mapped[str16]  # opt_out | opt_in
    # keyword | free_text | carrier_21610 | staff
    source: Mapped[str32]
    message_sid: Mapped[str | None] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))


class Cadence(Base):
    """A practice's attempt cadence for one category (see domain.cadence for the steps)."""

    __tablename__ = "cadences"
    __table_args__ = (UniqueConstraint("practice_id", "category"),)

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    category: Mapped[str32]
    steps: Mapped[dict[str, Any]]
    updated_at: Mapped[utc]


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # The queue and the API list read open tasks of one practice by deadline.
        Index("ix_tasks_practice_status_due", "practice_id", "status", "due_at"),
        Index("ix_tasks_practice_due", "practice_id", "due_at", "id"),
        Index("ix_tasks_contact_status", "contact_id", "status"),
        # The agent queue: open tasks of a practice by deadline, and the unowned ones for
        # "take next". Partial, so closed history (most of the table) is never scanned.
        Index(
            "ix_tasks_queue",
            "practice_id",
            "due_at",
            "id",
            postgresql_where=text(OPEN_STATUSES_SQL),
            sqlite_where=text(OPEN_STATUSES_SQL),
        ),
        Index(
            "ix_tasks_queue_unowned",
            "practice_id",
            "due_at",
            "id",
            postgresql_where=text(f"owner_id IS NULL AND {OPEN_STATUSES_SQL}"),
            sqlite_where=text(f"owner_id IS NULL AND {OPEN_STATUSES_SQL}"),
        ),
        UniqueConstraint("practice_id", "idempotency_key"),
    )

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    category: Mapped[str32]
    status: Mapped[str32]
    priority: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(1000))
    source: Mapped[str64]
    no_callback_number: Mapped[bool] = mapped_column(Boolean, default=False)
    call_count: Mapped[int] = mapped_column(Integer, default=0)
    has_voicemail: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    idempotency_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[utc]
    updated_at: Mapped[utc]
    due_at: Mapped[utc]
    next_action: Mapped[str | None] = mapped_column(String(64))
    next_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when real contact (a reply, a call, a booking) or an opt-out ends the automated
    # follow-ups; staff still see and work the task.
    cadence_stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cadence_stop_reason: Mapped[str | None] = mapped_column(String(32))
    # Something a person must look at (a free-text "stop texting me", undeliverable texts).
    flag: Mapped[str | None] = mapped_column(String(32))

    contact: Mapped[Contact | None] = relationship()
    owner: Mapped[User | None] = relationship()
    timeline: Mapped[list[TaskEvent]] = relationship(
        back_populates="task", order_by="(TaskEvent.at, TaskEvent.id)"
    )
    messages: Mapped[list[Message]] = relationship(order_by="Message.id", viewonly=True)


class CallAttempt(Base):
    """One click-to-call: the agent's leg, then the patient's leg bridged by <Dial>.

    Written before the provider is asked to call; request_key (the task and the Call
    form's one-time nonce) is unique, so a double click places one call.
    """

    __tablename__ = "call_attempts"
    __table_args__ = (
        Index("ix_call_attempts_task", "task_id", "created_at"),
        # The caps count a contact's recent calls on every text and every call.
        Index("ix_call_attempts_contact_created", "contact_id", "created_at"),
    )

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    request_key: Mapped[str] = mapped_column(String(100), unique=True)
    # pending → agent_ringing → agent_answered → patient_ringing → in_progress → an outcome
    # (completed, no-answer, busy, failed, canceled, machine, agent_missed, agent_declined,
    # ended: a dial result Twilio gave that we do not know).
    status: Mapped[str16]
    agent_call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    patient_call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    agent_status: Mapped[str | None] = mapped_column(String(20))
    dial_status: Mapped[str | None] = mapped_column(String(20))
    answered_by: Mapped[str | None] = mapped_column(String(32))
    duration: Mapped[int | None] = mapped_column(Integer)
    # Set when an agent called outside the contact window at the patient's request.
    override_reason: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[utc]
    updated_at: Mapped[utc]
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TaskEvent(Base):
    """The task's timeline: append-only."""

    __tablename__ = "task_events"

    id: Mapped[intpk]
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    at: Mapped[utc]
    kind: Mapped[str32]
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]

    task: Mapped[Task] = relationship(back_populates="timeline")


class Call(Base):
    """One Twilio call, joined by CallSid.

    Twilio's status, recording and transcription callbacks arrive in any order and only the
    status callback carries the caller's number, so whatever arrives first creates the row
    and the status callback links it to a task.
    """

    __tablename__ = "calls"

    id: Mapped[intpk]
    call_sid: Mapped[str64] = mapped_column(unique=True)
    practice_id: Mapped[int | None] = mapped_column(ForeignKey("practices.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    direction: Mapped[str16] = mapped_column(default="inbound")
    status: Mapped[str | None] = mapped_column(String(20))
    duration: Mapped[int | None] = mapped_column(Integer)
    recording_sid: Mapped[str | None] = mapped_column(String(64))
    recording_url: Mapped[str | None] = mapped_column(String(500))
    recording_duration: Mapped[int | None] = mapped_column(Integer)
    transcription: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[utc]
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookEvent(Base):
    """A Twilio webhook exactly as received, stored before we answer Twilio.

    (kind, sid) is unique: Twilio retries a callback it thinks failed, and a retry must not
    become a second event. processed_at is empty until a worker has applied it; the relay
    re-enqueues rows that stay empty (Redis was down, a job was lost).
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("kind", "sid"),
        # The relay scans only unprocessed rows; a partial index keeps that scan tiny
        # however many processed events accumulate.
        Index(
            "ix_webhook_events_unprocessed",
            "received_at",
            postgresql_where=text("processed_at IS NULL"),
            sqlite_where=text("processed_at IS NULL"),
        ),
    )

    id: Mapped[intpk]
    kind: Mapped[str32]
    sid: Mapped[str64]
    params: Mapped[dict[str, Any]]
    received_at: Mapped[utc]
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500))


class FollowUp(Base):
    """One step of a task's cadence, due at a time. The worker's scheduler claims due rows.

    (task_id, step) is unique, so a step that runs twice cannot schedule its successor twice.
    """

    __tablename__ = "followups"
    __table_args__ = (
        UniqueConstraint("task_id", "step"),
        Index(
            "ix_followups_due",
            "due_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[intpk]
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    action: Mapped[str16]  # text | call | close
    template: Mapped[str | None] = mapped_column(String(32))
    due_at: Mapped[utc]
    # pending | done | canceled | failed (its job kept failing; a person took over)
    state: Mapped[str16] = mapped_column(default="pending")
    # When the scheduler last handed it to RQ; it offers it again if Redis lost the job.
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Times its job failed (RQ's failed registry, or a worker killed while running it).
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Message(Base):
    """An outbound text: written before the send (the outbox), updated by Twilio's callbacks.

    dedupe_key is unique per (task, attempt, purpose), or per inbound message for a reply,
    so no path can create the same text twice; the send job claims the row with a
    compare-and-swap on status, so no job can send it twice.
    """

    __tablename__ = "messages"
    __table_args__ = (
        Index(
            "ix_messages_due",
            "not_before",
            postgresql_where=text("status IN ('pending', 'claimed', 'unknown')"),
            sqlite_where=text("status IN ('pending', 'claimed', 'unknown')"),
        ),
        # The daily cap counts the practice's texts other workers have on the wire.
        Index(
            "ix_messages_in_flight",
            "practice_id",
            "claimed_at",
            postgresql_where=text(IN_FLIGHT_STATUSES_SQL),
            sqlite_where=text(IN_FLIGHT_STATUSES_SQL),
        ),
        # The gate counts a contact's recent texts on every send.
        Index("ix_messages_contact_created", "contact_id", "created_at"),
        Index("ix_messages_task", "task_id"),
    )

    id: Mapped[intpk]
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    dedupe_key: Mapped[str] = mapped_column(String(100), unique=True)
    purpose: Mapped[str32]
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # automated | manual | reply: what the compliance gate applies.
    kind: Mapped[str16]
    to_number: Mapped[str16]
    from_number: Mapped[str16]
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer)
    # pending → claimed → (Twilio's) queued / sent / delivered …; unknown when a send's
    # outcome was lost; canceled, blocked and failed end it without a (new) send.
    status: Mapped[str16]
    not_before: Mapped[utc]
    defer_reason: Mapped[str | None] = mapped_column(String(200))
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A reserved send slot under a per-sender rate limit, kept across a deferral.
    slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tries: Mapped[int] = mapped_column(Integer, default=0)
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[utc]
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[utc]


class SenderSlot(Base):
    """The next free send time of one sending number under SMS_SENDER_RATE."""

    __tablename__ = "sender_slots"

    number: Mapped[str16] = mapped_column(primary_key=True)
    next_at: Mapped[utc]


class PracticeSendCount(Base):
    """Texts (not replies) a practice had accepted by Twilio on one day of its own calendar.

    The daily send cap reads this one row: counting the day's texts instead grew with the
    practice's volume (a millisecond per send at two thousand texts a day). Whoever sets a
    text's sent_at adds it here, in the same transaction (see delivery.count_sent).
    """

    __tablename__ = "practice_send_counts"

    practice_id: Mapped[int] = mapped_column(
        ForeignKey("practices.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sent: Mapped[int] = mapped_column(Integer)


class Link(Base):
    """A scheduling link sent in a text. Only a hash of the token is kept; the URL holds no PHI."""

    __tablename__ = "links"

    id: Mapped[intpk]
    token_hash: Mapped[str64] = mapped_column(unique=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    task_id: Mapped[int | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    created_at: Mapped[utc]
    expires_at: Mapped[utc]
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opens: Mapped[int] = mapped_column(Integer, default=0)
    # booked | callback, and when: a click followed by one of these is real contact.
    action: Mapped[str | None] = mapped_column(String(16))
    action_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
