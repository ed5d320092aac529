"""Texts from patients: keywords, replies, and free-text requests to stop.

Keywords (STOP, START, HELP and their kin, and free-text revocations) are handled while
Twilio waits, in one transaction: an opt-out must hold before the webhook answers, and
the answer carries the confirmation. Any other reply is stored and applied by a worker
like the voice callbacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from telephony_service.db import upsert_insert
from telephony_service.domain.categories import Category
from telephony_service.domain.keywords import Intent, classify
from telephony_service.domain.phones import mask_phone, normalise_phone
from telephony_service.models import Contact, Message, Practice, Task, WebhookEvent
from telephony_service.parsing import int_or_none
from telephony_service.services import consent, delivery, followups, intake
from telephony_service.wording import TemplateTooLong

log = logging.getLogger(__name__)

KIND = "sms.incoming"
MAX_REPLY_CHARS = 1600  # Twilio's own limit for one message
# Intents answered while Twilio waits.
KEYWORD_INTENTS = frozenset({Intent.OPT_OUT, Intent.OPT_IN, Intent.HELP, Intent.REVOCATION})


@dataclass(frozen=True)
class Answer:
    """What to put in the TwiML: a reply body (and the outbox row it is), or nothing."""

    body: str | None = None
    message_id: int | None = None


def is_keyword(body: str | None) -> bool:
    return classify(body) in KEYWORD_INTENTS


# PostgreSQL's "deadlock detected" and "could not serialize": the transaction is
# rolled back whole and may simply run again.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def receive_keyword(
    session: Session, params: dict[str, Any], *, now: datetime, base_url: str
) -> Answer:
    """Apply a keyword text at once and return the reply, if one is due.

    A retried delivery of the same MessageSid gets the same answer and changes nothing.
    Twilio does not retry an inbound text that failed, so a transaction that lost a
    deadlock, or a pooled connection the server had dropped (a restart, a failover: the
    pool does not ping before use), is run again here rather than dropping the patient's
    STOP.
    """
    for attempt in range(3):
        try:
            return _receive_keyword(session, params, now=now, base_url=base_url)
        except DBAPIError as exc:
            session.rollback()
            retryable = (
                exc.connection_invalidated
                or getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
            )
            if not retryable or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _receive_keyword(
    session: Session, params: dict[str, Any], *, now: datetime, base_url: str
) -> Answer:
    sid = params["MessageSid"]
    if not _store_applied(session, sid, params, now):
        session.rollback()
        reply = session.scalar(select(Message).where(Message.dedupe_key == _reply_key(sid)))
        return Answer() if reply is None else Answer(reply.body, reply.id)
    practice = intake._practice_by_number(session, params.get("To"))
    phone = normalise_phone(params.get("From"))
    if practice is None or phone is None:
        log.warning(
            "keyword text to %s from an unusable number ignored", mask_phone(params.get("To"))
        )
        session.commit()
        return Answer()
    contact = intake._lock_contact(session, practice.id, phone, now)
    intent = classify(params.get("Body"))
    template: str | None = None
    if intent is Intent.HELP:
        template = "help_reply"
    elif intent in (Intent.OPT_OUT, Intent.REVOCATION):
        source = "keyword" if intent is Intent.OPT_OUT else "free_text"
        task = _open_task(session, contact)
        if intent is Intent.REVOCATION:
            # Worded by a person, so a person should read it: flag it for staff, on a task
            # of its own if none is open.
            if task is None:
                task = intake._new_task(
                    session,
                    practice,
                    contact,
                    category=Category.SMS_INQUIRY,
                    source="sms",
                    at=now,
                )
                followups.start(session, practice, task, contact, now=now, base_url=base_url)
            task.flag = "revoked_consent"
            intake._timeline(session, task, now, "sms_reply", text=_text(params))
        if consent.opt_out(
            session,
            contact,
            at=now,
            source=source,
            message_sid=sid,
            task_id=task.id if task else None,
        ):
            template = "opt_out_confirmation"  # one confirmation, never a second
    elif intent is Intent.OPT_IN:
        if consent.opt_in(session, contact, at=now, source="keyword", message_sid=sid):
            template = "opt_in_confirmation"
        else:
            # "Yes" from someone who never opted out is an answer, not a keyword.
            _attach_reply(session, practice, contact, params, now, base_url)
    answer = Answer()
    if template is not None:
        answer = _reply(session, practice, contact, template, sid, now)
    session.commit()
    return answer


def apply_incoming(
    session: Session, params: dict[str, Any], at: datetime, *, base_url: str
) -> list[int]:
    """A stored reply (not a keyword): onto the contact's open task, which stops its
    automated follow-ups, or a new task if none is open."""
    practice = intake._practice_by_number(session, params.get("To"))
    phone = normalise_phone(params.get("From"))
    if practice is None or phone is None:
        log.warning("text to %s from an unusable number ignored", mask_phone(params.get("To")))
        return []
    contact = intake._lock_contact(session, practice.id, phone, at)
    return _attach_reply(session, practice, contact, params, at, base_url)


def _attach_reply(
    session: Session,
    practice: Practice,
    contact: Contact,
    params: dict[str, Any],
    at: datetime,
    base_url: str,
) -> list[int]:
    task = _open_task(session, contact)
    if task is None:
        task = intake._new_task(
            session, practice, contact, category=Category.SMS_INQUIRY, source="sms", at=at
        )
        intake._timeline(session, task, at, "sms_reply", text=_text(params))
        # A patient who wrote to us is real contact already: no automated texts, only the
        # call-back deadline.
        followups.start(session, practice, task, contact, now=at, base_url=base_url)
        consent.stop_cadence(session, task, at=at, reason="reply")
        return []
    task.updated_at = at
    task.priority += intake.REPEAT_CALL_BOOST
    intake._timeline(session, task, at, "sms_reply", text=_text(params))
    consent.contact_made(session, task, at=at, reason="reply", by_patient=True)
    return []


def _reply(
    session: Session, practice: Practice, contact: Contact, template: str, sid: str, now: datetime
) -> Answer:
    """The reply in the webhook's answer. One that no longer fits two segments (a practice
    renamed since its name was checked) is left out: the patient's STOP still counts, and
    "one confirmation at most" allows none."""
    try:
        message = delivery.record_reply(
            session,
            practice=practice,
            contact=contact,
            template=template,
            dedupe_key=_reply_key(sid),
            now=now,
        )
    except TemplateTooLong as exc:
        log.error("reply %s for practice %s not sent: %s", template, practice.id, exc)
        return Answer()
    return Answer(message.body, message.id)


def _store_applied(session: Session, sid: str, params: dict[str, Any], now: datetime) -> bool:
    """Store the event as applied; False if this MessageSid was stored before."""
    row = session.execute(
        upsert_insert(session)(WebhookEvent)
        .values(kind=KIND, sid=sid, params=params, received_at=now, processed_at=now, attempts=1)
        .on_conflict_do_nothing(index_elements=["kind", "sid"])
        .returning(WebhookEvent.id)
    ).first()
    return row is not None


def _open_task(session: Session, contact: Contact) -> Task | None:
    return intake._open_task(session, contact)


def _reply_key(sid: str) -> str:
    return f"reply:{sid}"


def _text(params: dict[str, Any]) -> str:
    text = (params.get("Body") or "").strip()[:MAX_REPLY_CHARS]
    media = int_or_none(params.get("NumMedia"))
    if media:
        text = f"{text} [{media} attachment(s)]".strip()
    return text
