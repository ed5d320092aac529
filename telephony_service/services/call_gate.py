"""May this patient be called now? The compliance gate for a manual call, in the agent's words.

Outside the patient's contact window the agent may still call if the patient asked to be
called then (`override_possible`); the 3-attempts-a-day cap has no override: it is there
for the patient who did not ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from telephony_service.domain import compliance
from telephony_service.domain.statuses import TaskStatus, is_open
from telephony_service.formatting import clock
from telephony_service.models import Practice, Task
from telephony_service.services import delivery
from telephony_service.services.practices import texting_policy


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str | None = None
    override_possible: bool = False
    opens_at: datetime | None = None


def check_call(session: Session, *, task: Task, practice: Practice, now: datetime) -> Verdict:
    """May the patient of this task be called now (a manual call, as the gate sees it)?"""
    contact = task.contact
    if task.no_callback_number or contact is None or not contact.phone:
        return Verdict(False, "This task has no callback number.")
    if not is_open(TaskStatus(task.status)):
        return Verdict(False, "This task is closed.")
    facts = compliance.ContactFacts(
        phone=contact.phone,
        timezone=contact.timezone,
        state=contact.state,
        # Opting out of texts is not refusing a call; the gate knows, and still says so
        # for automated calls.
        opted_out=contact.opted_out_at is not None,
    )
    policy_row = texting_policy(session, practice.id)
    policy = delivery.policy_for(policy_row)
    # The caps count calls and texts alike (delivery's history); None: no text is sending.
    history = delivery.contact_history(session, policy_row, contact, None, now)
    decision = compliance.evaluate(
        now,
        channel=compliance.Channel.CALL,
        purpose=compliance.Purpose.MANUAL,
        contact=facts,
        history=history,
        policy=policy,
    )
    if isinstance(decision, compliance.Allowed):
        return Verdict(True)
    if isinstance(decision, compliance.Block):
        return Verdict(False, f"The patient cannot be called: {decision.reason}.")
    # Times are shown on the agent's clock: the practice's.
    zone = ZoneInfo(practice.timezone)
    capped_until = _cap_lifts_at(history.attempts, now)
    if capped_until is not None:
        return Verdict(
            False,
            f"The patient has had {compliance.ATTEMPTS_PER_DAY} calls or texts in the last "
            f"24 hours; the next is possible from {_moment(capped_until, zone, now)}.",
        )
    # Not the cap: the contact window. Asked again without the history to learn when it opens.
    window = compliance.evaluate(
        now,
        channel=compliance.Channel.CALL,
        purpose=compliance.Purpose.MANUAL,
        contact=facts,
        history=compliance.History(attempts=(), automated_texts=(), practice_sent_today=0),
        policy=policy,
    )
    if isinstance(window, compliance.Defer):
        # The gate's reason ends in "until <its own 24-hour time>"; the panel says when in
        # the same words as the rest of the workspace.
        cause, sep, _ = window.reason.rpartition(" until ")
        return Verdict(
            False,
            f"Outside the patient's contact window: {cause if sep else window.reason} "
            f"until {_moment(window.until, zone, now)}. Call now only if the patient asked "
            "to be called at this time.",
            override_possible=True,
            opens_at=window.until,
        )
    return Verdict(False, f"The patient cannot be called now: {decision.reason}.")


def _cap_lifts_at(attempts: Sequence[datetime], now: datetime) -> datetime | None:
    recent = sorted((at for at in attempts if at > now - timedelta(hours=24)), reverse=True)
    if len(recent) < compliance.ATTEMPTS_PER_DAY:
        return None
    return recent[compliance.ATTEMPTS_PER_DAY - 1] + timedelta(hours=24)


def _moment(at: datetime, zone: ZoneInfo, now: datetime) -> str:
    """ "7:30 PM EST" today, "Wed Nov 18 at 8:00 AM EST" on another day."""
    local, today = at.astimezone(zone), now.astimezone(zone)
    shown = f"{clock(local)} {local:%Z}"
    if local.date() == today.date():
        return shown
    return f"{local:%a %b} {local.day} at {shown}"
