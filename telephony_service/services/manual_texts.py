"""The task page's "Send text": an approved template, through the compliance gate.

The text is written to the outbox like every other (delivery.queue_text, kind "manual")
and the gate is asked at once, so the agent reads what will happen in words: sent, deferred
to a time in the patient's zone, or not sent and why. The send job asks the gate again when
it sends (an opt-out may arrive in between); what the agent was told is the answer at press
time.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.db import locked
from telephony_service.domain import compliance
from telephony_service.domain.phones import display_number
from telephony_service.domain.statuses import TaskStatus, is_open
from telephony_service.formatting import clock
from telephony_service.models import Contact, Message, Practice, Task, TaskEvent, User
from telephony_service.services import audit, consent, delivery
from telephony_service.services.links import link_url
from telephony_service.services.outcomes import TaskNotFound
from telephony_service.services.practices import texting_policy
from telephony_service.wording import TemplateTooLong, render_sms

# Texts an agent may send by hand. The opt-out, opt-in and help texts answer a patient's
# keyword and are sent by the service alone.
MANUAL_TEMPLATES = ("text_back", "second_attempt", "final_message")

LABELS = {
    "text_back": "We missed your call",
    "second_attempt": "We tried to call you back",
    "final_message": "Last text about this",
}

# What a patient's zone is taken to be when the number says nothing (the gate's own choice).
_UNKNOWN_ZONE = "America/New_York"
# A preview shows where the link goes without minting one.
_PREVIEW_SLUG = "xxxxxxxxxxx"


class TextRefused(ValueError):
    """Not a template an agent may send."""


@dataclass(frozen=True)
class Preview:
    template: str
    label: str
    body: str
    segments: int


@dataclass(frozen=True)
class TextResult:
    # queued | deferred | blocked | duplicate
    outcome: str
    words: str
    message_id: int | None = None
    until: datetime | None = None


def previews(practice: Practice, base_url: str) -> list[Preview]:
    """Each template as the patient would read it (the first text of a thread, with the
    opt-out line; later ones leave it out)."""
    shown = []
    for template in MANUAL_TEMPLATES:
        try:
            rendered = render_sms(
                template,
                practice=practice.name,
                practice_number=display_number(practice.twilio_number),
                link=link_url(base_url, _PREVIEW_SLUG),
                first_text=True,
            )
        except TemplateTooLong:
            continue
        shown.append(Preview(template, LABELS[template], rendered.body, rendered.segments))
    return shown


def label(purpose: str) -> str:
    """A text's name for staff, by its template (the keyword replies by their own name)."""
    return LABELS.get(purpose) or purpose.replace("_", " ").capitalize()


def new_nonce() -> str:
    """One per rendered form: pressing Send twice (or reloading) sends one text."""
    return secrets.token_urlsafe(9)


def send_text(
    session: Session,
    *,
    practice: Practice,
    user: User,
    task_id: int,
    template: str,
    nonce: str,
    now: datetime,
    base_url: str,
    enqueue: Callable[[int], object],
) -> TextResult:
    """Write the text and say what becomes of it. Commits; hands a text due now to `enqueue`.

    Raises TaskNotFound for another practice's task, TextRefused for a template agents may
    not send.
    """
    if template not in MANUAL_TEMPLATES:
        raise TextRefused(f"{template!r} is not a text agents can send")
    found = session.execute(
        select(Task.id, Task.contact_id).where(Task.id == task_id, Task.practice_id == practice.id)
    ).first()
    if found is None:
        raise TaskNotFound(task_id)
    # Lock order everywhere: contact, then task (see delivery.send_message).
    contact = consent.lock_contact(session, found.contact_id) if found.contact_id else None
    task = locked(session, Task, task_id)
    audit.record(
        session,
        practice_id=practice.id,
        user_id=user.id,
        action="sent_text",
        now=now,
        task_id=task.id,
        data={"template": template},
    )
    result = _send(session, practice, task, contact, template, nonce, now, base_url)
    session.commit()
    if result.outcome == "queued" and result.message_id is not None:
        enqueue(result.message_id)
    return result


def _send(
    session: Session,
    practice: Practice,
    task: Task,
    contact: Contact | None,
    template: str,
    nonce: str,
    now: datetime,
    base_url: str,
) -> TextResult:
    if contact is None:
        return _blocked(session, task, template, now, "this task has no callback number")
    if not is_open(TaskStatus(task.status)):
        return _blocked(session, task, template, now, "the task is closed")
    if contact.sms_undeliverable_at is not None or task.flag == "sms_undeliverable":
        return _blocked(session, task, template, now, "texts to this number are not delivered")
    dedupe_key = f"task:{task.id}:manual:{template}:{nonce[:24]}"
    if session.scalar(select(Message.id).where(Message.dedupe_key == dedupe_key)) is not None:
        return TextResult("duplicate", "This text was already sent; it was not sent again.")
    message = delivery.queue_text(
        session,
        practice=practice,
        contact=contact,
        task=task,
        template=template,
        kind=compliance.Purpose.MANUAL.value,
        dedupe_key=dedupe_key,
        attempt=0,
        now=now,
        base_url=base_url,
    )
    if message is None:
        # queue_text wrote the reason on the timeline.
        return TextResult("blocked", "Not sent: the text would be longer than two SMS segments")
    decision = _gate(session, practice, contact, message, now)
    if isinstance(decision, compliance.Block):
        message.status = "blocked"
        message.defer_reason = decision.reason[:200]
        message.enqueued_at = None
        session.add(
            TaskEvent(
                task_id=task.id,
                at=now,
                kind="text_blocked",
                text=decision.reason,
                data={"message_id": message.id, "purpose": template},
            )
        )
        return TextResult("blocked", f"Not sent: {_block_words(decision.reason)}", message.id)
    if isinstance(decision, compliance.Defer):
        message.not_before = decision.until
        message.defer_reason = decision.reason[:200]
        # Not enqueued now: the scheduler hands it to a worker when it is due.
        message.enqueued_at = None
        when = _patient_time(contact, decision.until, now)
        words = f"Deferred: {_defer_words(decision.reason)}; it will go at {when} (patient's time)"
        return TextResult("deferred", words, message.id, decision.until)
    return TextResult(
        "queued", f"Text sent to {display_number(contact.phone)}.", message.id, message.not_before
    )


def _gate(
    session: Session, practice: Practice, contact: Contact, message: Message, now: datetime
) -> compliance.Decision:
    policy = texting_policy(session, practice.id)
    return compliance.evaluate(
        now,
        channel=compliance.Channel.TEXT,
        purpose=compliance.Purpose.MANUAL,
        contact=compliance.ContactFacts(
            phone=contact.phone,
            timezone=contact.timezone,
            state=contact.state,
            opted_out=contact.opted_out_at is not None,
        ),
        # The very history the send job counts, so the words shown here are its answer
        # unless something changes before it runs.
        history=delivery.contact_history(session, policy, contact, message, now),
        policy=delivery.policy_for(policy),
    )


def _blocked(session: Session, task: Task, template: str, now: datetime, why: str) -> TextResult:
    session.add(
        TaskEvent(
            task_id=task.id, at=now, kind="text_blocked", text=why, data={"purpose": template}
        )
    )
    return TextResult("blocked", f"Not sent: {why}")


def _block_words(reason: str) -> str:
    if reason == "opted out":
        return "the patient opted out of texts"
    if reason == "not a valid phone number":
        return "the number can't receive texts"
    if reason.startswith("no contact window"):
        return "the patient has no texting hours in the next two weeks"
    return reason


def _defer_words(reason: str) -> str:
    words: list[str] = []
    for part in reason.split("; "):
        if "attempts in 24 h" in part:
            words.append(
                f"the patient has had {compliance.ATTEMPTS_PER_DAY} calls or texts in 24 hours"
            )
        elif part.startswith("daily send cap"):
            words.append("the practice's daily text limit is reached")
        elif "outside the patient's texting hours" not in words:
            # Quiet hours, a weekday or a state holiday without texts: all a window.
            words.append("outside the patient's texting hours")
    return " and ".join(words) or reason


def _patient_time(contact: Contact, at: datetime, now: datetime) -> str:
    zones = compliance.patient_zones(contact.phone, contact.timezone, contact.state)
    local = at.astimezone(ZoneInfo(zones[0] if zones else _UNKNOWN_ZONE))
    if at - now > timedelta(days=6):
        return f"{local:%a} {local:%b} {local.day} {clock(local)}"
    return f"{local:%a} {clock(local)}"
