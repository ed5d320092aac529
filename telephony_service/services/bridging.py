"""Click-to-call: ring the agent, whisper the task, and on a key press bridge the patient.

An attempt's life: `pending` (the row exists; the provider has not been asked yet) →
`agent_ringing` → `agent_answered` (the whisper plays) → `patient_ringing` (the agent pressed
1 and <Dial> went out) → `in_progress` (the patient picked up) → an outcome: completed,
no-answer, busy, failed, canceled, machine (answering machine detection said so), ended (the
dial ended with a result we do not know; shown as reported), agent_missed (the agent's
phone rang out, or nobody pressed a key: a voicemail never reaches the patient),
agent_declined (another key), blocked (the compliance gate said no at accept time).
`unknown` means the provider's answer to our request was lost: callbacks may still come.

Twilio's callbacks arrive late, twice or out of order, so every status here only moves
forward, and the outcome's timeline entry is written once, by whichever callback ends it
(the one exception: a completed call that detection later calls a machine gets a second
entry saying so; the timeline is append-only).

Compliance (services.call_gate): the gate is asked when Call is pressed and again when the
agent accepts, right before the patient's phone rings, each time with the patient's contact
row locked, so calls and texts to one patient see each other in the caps. An override of
the contact window is audited without its free-text reason, which stays on the attempt.
The TwiML lives in services.call_twiml.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telephony_service.db import locked
from telephony_service.domain.phones import mask_phone, normalise_phone
from telephony_service.gateways.base import GatewayError, OutboundCall, TelephonyGateway
from telephony_service.models import CallAttempt, Practice, Task, TaskEvent, User
from telephony_service.parsing import int_or_none
from telephony_service.services import audit, call_twiml, consent
from telephony_service.services.call_gate import Verdict, check_call
from telephony_service.services.call_twiml import BRIDGE_PATH
from telephony_service.services.outcomes import TaskNotFound

log = logging.getLogger(__name__)

# How long the agent's phone rings before the attempt counts as missed.
AGENT_RING_SECONDS = 20

# An attempt still under way blocks another Call on the task, but callbacks can be lost (a
# wrong PUBLIC_BASE_URL in development, an outage): after this long without news it no
# longer does. A bridged conversation may run long; the agent's leg alone cannot.
STALE_BEFORE_BRIDGE = timedelta(minutes=2)
STALE_BRIDGED = timedelta(minutes=60)

OVERRIDE_REASON_MAX = 200
OVERRIDE_REASON_MIN = 5
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

# Where an attempt is on its way; outcomes rank above all of these.
_RANK = {
    "pending": 0,
    "unknown": 0,
    "agent_ringing": 1,
    "agent_answered": 2,
    "patient_ringing": 3,
    "in_progress": 4,
}
OUTCOMES = frozenset(
    {
        "completed",
        "no-answer",
        "busy",
        "failed",
        "canceled",
        "machine",
        "ended",
        "agent_missed",
        "agent_declined",
        "blocked",
    }
)
_BRIDGED = frozenset({"patient_ringing", "in_progress"})
# Twilio's call statuses, in the order a call moves through them.
_CALL_RANK = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "answered": 3,
    "completed": 4,
    "busy": 4,
    "no-answer": 4,
    "failed": 4,
    "canceled": 4,
}
_CALL_FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# What <Dial> reports in DialCallStatus. Twilio may also say the call was answered (it
# connected, and is over by the time the action is posted): that is a completed call.
_DIAL_OUTCOMES = frozenset({"completed", "no-answer", "busy", "failed", "canceled"})
_DIAL_CONNECTED = frozenset({"answered", "in-progress"})

LABELS_BY_STATUS = {
    "pending": "Placing the call…",
    "unknown": "Not confirmed yet: if your phone rings, answer it",
    "agent_ringing": "Ringing your phone…",
    "agent_answered": "On your phone: press 1 to call the patient",
    "patient_ringing": "Calling the patient…",
    "in_progress": "Connected",
    "completed": "Call ended",
    "no-answer": "No answer",
    "busy": "Line busy",
    "failed": "Call failed",
    "canceled": "Call canceled",
    "machine": "Answering machine",
    "ended": "Call ended",
    "agent_missed": "Not connected: your phone was not answered or no key was pressed",
    "agent_declined": "Not connected: you declined on the phone",
    "blocked": "Not connected: the patient cannot be called now",
}


class CallRefused(Exception):
    """Call was pressed but cannot go now; `message` says why, fit to show the agent."""

    def __init__(self, message: str, *, override_possible: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.override_possible = override_possible


# --- what the task page shows -------------------------------------------------------


@dataclass(frozen=True)
class AttemptView:
    id: int
    status: str
    label: str
    ended: bool
    dial_status: str | None
    answered_by: str | None
    duration: int | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "label": self.label,
            "ended": self.ended,
            "dial_status": self.dial_status,
            "answered_by": self.answered_by,
            "duration": self.duration,
            "error": self.error,
        }


@dataclass(frozen=True)
class CallPanel:
    """What the Call panel of a task page shows."""

    # Call may be pressed as it is.
    allowed: bool
    # Why not, or a warning; None when there is nothing to say.
    reason: str | None
    # Outside the contact window only: Call may be pressed with "the patient asked to be
    # called at this time" ticked and a short reason.
    override_possible: bool
    # When the patient's contact window opens, if it is closed now.
    opens_at: datetime | None
    # One per rendering of the form: a double click sends it twice, and places one call.
    nonce: str
    # The phone that rings first, masked.
    agent_phone: str
    attempt: AttemptView | None

    @property
    def can_press(self) -> bool:
        return self.allowed or self.override_possible

    @property
    def attempt_id(self) -> int | None:
        return self.attempt.id if self.attempt else None

    @property
    def attempt_status(self) -> str | None:
        return self.attempt.status if self.attempt else None

    @property
    def attempt_label(self) -> str | None:
        return self.attempt.label if self.attempt else None


def call_panel(
    session: Session, *, task: Task, user: User, practice: Practice, now: datetime
) -> CallPanel:
    latest = session.scalar(
        select(CallAttempt)
        .where(CallAttempt.task_id == task.id, CallAttempt.practice_id == practice.id)
        .order_by(CallAttempt.created_at.desc(), CallAttempt.id.desc())
        .limit(1)
    )
    verdict = _press_verdict(session, task=task, user=user, practice=practice, now=now)
    if latest is not None and _under_way(latest, now):
        verdict = Verdict(False, "A call for this task is under way.")
    return CallPanel(
        allowed=verdict.allowed,
        reason=verdict.reason,
        override_possible=verdict.override_possible,
        opens_at=verdict.opens_at,
        nonce=secrets.token_urlsafe(16),
        agent_phone=mask_phone(user.phone) if user.phone else "none",
        attempt=view(latest) if latest is not None else None,
    )


def view(attempt: CallAttempt) -> AttemptView:
    label = LABELS_BY_STATUS.get(attempt.status, attempt.status)
    if attempt.status == "completed" and attempt.duration:
        label = f"{label} after {_spoken_duration(attempt.duration)}"
    return AttemptView(
        id=attempt.id,
        status=attempt.status,
        label=label,
        ended=attempt.status in OUTCOMES,
        dial_status=attempt.dial_status,
        answered_by=attempt.answered_by,
        duration=attempt.duration,
        error=attempt.error,
    )


def attempt_status(session: Session, *, practice_id: int, attempt_id: int) -> AttemptView | None:
    """The attempt as the task page's poll shows it; None for another practice's id."""
    attempt = session.scalar(
        select(CallAttempt).where(
            CallAttempt.id == attempt_id, CallAttempt.practice_id == practice_id
        )
    )
    return None if attempt is None else view(attempt)


def _spoken_duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if minutes == 0:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def _under_way(attempt: CallAttempt, now: datetime) -> bool:
    if attempt.status in OUTCOMES:
        return False
    stale = STALE_BRIDGED if attempt.status in _BRIDGED else STALE_BEFORE_BRIDGE
    return now - attempt.updated_at < stale


# --- who may press Call ---------------------------------------------------------------


def _press_verdict(
    session: Session, *, task: Task, user: User, practice: Practice, now: datetime
) -> Verdict:
    if not user.phone or normalise_phone(user.phone) is None:
        return Verdict(False, "Your profile has no phone number to ring; ask a manager.")
    return check_call(session, task=task, practice=practice, now=now)


# --- pressing Call --------------------------------------------------------------------


def start_call(
    session: Session,
    *,
    gateway: TelephonyGateway,
    base_url: str,
    task_id: int,
    practice: Practice,
    user: User,
    nonce: str,
    now: datetime,
    override_reason: str | None = None,
) -> CallAttempt:
    """Place a click-to-call: the attempt row first (committed), then the provider request.

    The same nonce twice (a double click, a resent form) returns the first attempt and
    asks the provider nothing. Raises TaskNotFound, or CallRefused with what to tell the
    agent. A provider error does not raise: the attempt carries it (failed, or unknown
    when the request may have gone through).
    """
    found = session.execute(
        select(Task.id, Task.contact_id).where(Task.id == task_id, Task.practice_id == practice.id)
    ).first()
    if found is None:
        raise TaskNotFound(task_id)
    if not _NONCE.fullmatch(nonce or ""):
        raise CallRefused("This form has expired. Reload the page and press Call again.")
    # Lock order everywhere: contact, then task (see delivery.send_message). Both stay
    # locked until the attempt row is committed: two presses with different forms (two
    # tabs, two agents) take turns, the second sees the first under way, and calls and
    # texts to one patient see each other in the caps.
    if found.contact_id is not None:
        consent.lock_contact(session, found.contact_id)
    task = locked(session, Task, found.id)
    key = f"{task.id}:{nonce}"
    existing = _by_key(session, key)
    if existing is not None:
        session.commit()  # nothing written; the locks go
        return existing
    try:
        override = _may_press(session, task, user, practice, now, override_reason)
    except CallRefused:
        session.rollback()
        raise
    assert task.contact is not None  # check_call refuses a task without one
    attempt = CallAttempt(
        practice_id=practice.id,
        task_id=task.id,
        user_id=user.id,
        contact_id=task.contact.id,
        request_key=key,
        status="pending",
        override_reason=override,
        created_at=now,
        updated_at=now,
    )
    session.add(attempt)
    try:
        session.flush()
    except IntegrityError:
        # The same form, sent twice at once: the other request has written it.
        session.rollback()
        raced = _by_key(session, key)
        if raced is None:
            raise
        return raced
    audit.record(
        session,
        practice_id=practice.id,
        user_id=user.id,
        action="placed_call",
        now=now,
        task_id=task.id,
        call_attempt_id=attempt.id,
        data={"override": override is not None},
    )
    if override is not None:
        audit.record(
            session,
            practice_id=practice.id,
            user_id=user.id,
            action="quiet_hours_override",
            now=now,
            task_id=task.id,
            call_attempt_id=attempt.id,
            # The agent's words stay on the attempt (override_reason): they may name the
            # patient or what she said, and the audit log is read for who did what.
            data={"override": True},
        )
    placed_by = user.name or "an agent"
    session.add(
        TaskEvent(
            task_id=task.id,
            at=now,
            kind="call_placed",
            text=f"Call placed by {placed_by}"
            + (" outside the contact window at the patient's request" if override else ""),
            data={"attempt_id": attempt.id, "user_id": user.id},
        )
    )
    # The row is durable before the provider is asked: whatever happens to this process
    # next, the attempt is on record and a resent form finds it.
    session.commit()
    attempt_id = attempt.id
    log.info("call attempt %s for task %s: ringing the agent", attempt_id, task.id)
    call = OutboundCall(
        to=user.phone,
        from_=practice.twilio_number,
        url=f"{base_url}{BRIDGE_PATH}/agent?a={attempt_id}",
        status_callback=f"{base_url}{BRIDGE_PATH}/agent-status?a={attempt_id}",
        timeout_seconds=AGENT_RING_SECONDS,
    )
    try:
        placed = gateway.place_call(call)
    except GatewayError as exc:
        return _placement_failed(session, attempt_id, exc, now)
    attempt = _locked(session, attempt_id) or attempt
    # A callback may have got here first (Twilio can fetch the bridge before it answers us).
    if attempt.agent_call_sid is None:
        attempt.agent_call_sid = placed.sid
    attempt.status = _forward(attempt.status, "agent_ringing")
    attempt.agent_status = _forward_call(attempt.agent_status, placed.status)
    attempt.updated_at = now
    session.commit()
    return attempt


def _may_press(
    session: Session,
    task: Task,
    user: User,
    practice: Practice,
    now: datetime,
    override_reason: str | None,
) -> str | None:
    """May Call go now? The override's reason when it goes outside the contact window, None
    when it goes without one; raises CallRefused."""
    latest = session.scalar(
        select(CallAttempt)
        .where(CallAttempt.task_id == task.id)
        .order_by(CallAttempt.created_at.desc(), CallAttempt.id.desc())
        .limit(1)
    )
    if latest is not None and _under_way(latest, now):
        raise CallRefused("A call for this task is under way.")
    verdict = _press_verdict(session, task=task, user=user, practice=practice, now=now)
    if verdict.allowed:
        return None
    if not verdict.override_possible:
        raise CallRefused(verdict.reason or "The patient cannot be called now.")
    override = _clean_reason(override_reason)
    if override is None:
        raise CallRefused(
            f"{verdict.reason} Tick the box and say briefly when the patient asked to be called.",
            override_possible=True,
        )
    return override


def _by_key(session: Session, key: str) -> CallAttempt | None:
    return session.scalar(select(CallAttempt).where(CallAttempt.request_key == key))


def _clean_reason(reason: str | None) -> str | None:
    cleaned = " ".join((reason or "").split())[:OVERRIDE_REASON_MAX]
    return cleaned if len(cleaned) >= OVERRIDE_REASON_MIN else None


def _placement_failed(
    session: Session, attempt_id: int, exc: GatewayError, now: datetime
) -> CallAttempt:
    attempt = _locked(session, attempt_id)
    assert attempt is not None  # written and committed above
    if exc.outcome_unknown:
        # The provider may have the call: never place it again blindly. Its callbacks, if
        # it exists, move the attempt on; if not, it goes stale and Call works again.
        if attempt.status == "pending":  # a callback may already have moved it on
            attempt.status = "unknown"
        attempt.error = (
            "The call may or may not have been placed (no answer from Twilio). If your phone "
            "rings, answer it; otherwise press Call again in two minutes."
        )
        attempt.updated_at = now
        session.commit()
        log.warning("call attempt %s: outcome unknown (%s)", attempt_id, exc.message)
        return attempt
    if exc.permanent:
        error = (
            f"Twilio refused the call (error {exc.code or exc.status}); ask a manager to "
            "check your phone number and the practice's number."
        )
    else:
        error = "Twilio is busy or unreachable; the call was not placed. Try again in a moment."
    log.warning("call attempt %s not placed: %s", attempt_id, exc.message)
    _finish(session, attempt, "failed", now, error=error[:300])
    session.commit()
    return attempt


# --- Twilio's side: the bridge --------------------------------------------------------


def agent_answered(
    session: Session,
    attempt_id: int | None,
    params: dict[str, str],
    *,
    base_url: str,
    now: datetime,
) -> str:
    """The agent picked up: whisper the task and wait for a key (TwiML)."""
    attempt = _locked(session, attempt_id)
    if attempt is None or not _adopt_agent_sid(attempt, params.get("CallSid")):
        session.rollback()
        return call_twiml.unknown_call_twiml()
    if attempt.status in OUTCOMES:
        session.rollback()
        return call_twiml.goodbye_twiml()
    attempt.status = _forward(attempt.status, "agent_answered")
    attempt.agent_status = _forward_call(attempt.agent_status, "in-progress")
    attempt.updated_at = now
    task = session.get_one(Task, attempt.task_id)
    twiml = call_twiml.whisper_twiml(
        attempt.id,
        base_url=base_url,
        category=task.category,
        first_name=_first_name(task),
        reason=task.reason,
    )
    session.commit()
    return twiml


def agent_pressed(
    session: Session,
    attempt_id: int | None,
    params: dict[str, str],
    *,
    base_url: str,
    now: datetime,
) -> str:
    """The whisper's key: 1 dials the patient if the gate still allows it (TwiML)."""
    contact_id = (
        session.scalar(select(CallAttempt.contact_id).where(CallAttempt.id == attempt_id))
        if attempt_id is not None
        else None
    )
    # Lock order everywhere: contact first (see delivery.send_message). Held until the dial
    # is recorded, so two accepts for one patient (two tasks, two agents) or a text being
    # sent to her take turns, and each sees the other in the caps.
    contact = consent.lock_contact(session, contact_id) if contact_id is not None else None
    attempt = _locked(session, attempt_id)
    if attempt is None or not _adopt_agent_sid(attempt, params.get("CallSid")):
        session.rollback()
        return call_twiml.unknown_call_twiml()
    task = session.get_one(Task, attempt.task_id)
    practice = session.get_one(Practice, attempt.practice_id)
    if attempt.status in _BRIDGED and contact is not None:
        # Twilio asking again (our first answer was lost): the same <Dial>.
        session.rollback()
        return call_twiml.dial_twiml(
            attempt.id, base_url=base_url, caller_id=practice.twilio_number, to=contact.phone
        )
    if attempt.status in OUTCOMES:
        session.rollback()
        return call_twiml.goodbye_twiml()
    if params.get("Digits") != "1":
        _finish(session, attempt, "agent_declined", now)
        session.commit()
        return call_twiml.declined_twiml()
    verdict = check_call(session, task=task, practice=practice, now=now)
    allowed = verdict.allowed or (verdict.override_possible and attempt.override_reason)
    if not allowed or contact is None:
        reason = verdict.reason or "The patient cannot be called now."
        _finish(session, attempt, "blocked", now, error=reason[:300])
        session.commit()
        log.info("call attempt %s blocked at accept time", attempt.id)
        return call_twiml.blocked_twiml()
    attempt.status = "patient_ringing"
    # Set as the dial goes out: from here on the attempt counts against the caps.
    attempt.dial_status = "initiated"
    attempt.updated_at = now
    session.commit()
    log.info("call attempt %s: dialling the patient %s", attempt.id, mask_phone(contact.phone))
    return call_twiml.dial_twiml(
        attempt.id, base_url=base_url, caller_id=practice.twilio_number, to=contact.phone
    )


def dial_finished(
    session: Session, attempt_id: int | None, params: dict[str, str], *, now: datetime
) -> str:
    """<Dial>'s action: the patient's leg is over; record how (TwiML for the agent)."""
    attempt = _locked(session, attempt_id)
    if attempt is None or not _adopt_agent_sid(attempt, params.get("CallSid")):
        session.rollback()
        return call_twiml.unknown_call_twiml()
    if attempt.dial_status is None:
        # No <Dial> of ours went out for this attempt: nothing to record.
        session.rollback()
        return call_twiml.goodbye_twiml()
    reported = (params.get("DialCallStatus") or "").lower()
    dial_sid = params.get("DialCallSid")
    if dial_sid and attempt.patient_call_sid is None:
        attempt.patient_call_sid = dial_sid
    # Once a result is in, a late or repeated callback only fills in what is missing.
    _note_answered_by(attempt, params.get("AnsweredBy"))
    duration = int_or_none(params.get("DialCallDuration"))
    if duration is not None and attempt.duration is None:
        attempt.duration = duration
    outcome, error = _dial_outcome(attempt, reported)
    if outcome in _CALL_RANK:
        attempt.dial_status = _forward_call(attempt.dial_status, outcome)
    _finish(session, attempt, _machine_if_detected(attempt, outcome), now, error=error)
    attempt.updated_at = now
    session.commit()
    return call_twiml.dial_result_twiml(attempt.status)


def agent_leg_status(
    session: Session, attempt_id: int | None, params: dict[str, str], *, now: datetime
) -> bool:
    """The agent's leg's status callback. False if it is not one of ours."""
    attempt = _locked(session, attempt_id)
    reported = (params.get("CallStatus") or "").lower()
    if (
        attempt is None
        or reported not in _CALL_RANK
        or not _adopt_agent_sid(attempt, params.get("CallSid"))
    ):
        session.rollback()
        return False
    attempt.agent_status = _forward_call(attempt.agent_status, reported)
    attempt.updated_at = now
    if reported in ("initiated", "ringing"):
        attempt.status = _forward(attempt.status, "agent_ringing")
    elif reported in _CALL_FINAL and _RANK.get(attempt.status, 99) < _RANK["patient_ringing"]:
        # The agent's leg ended before anyone pressed 1: rang out, busy, voicemail hung up
        # on by the whisper. The patient was never dialled.
        if reported == "failed":
            _finish(session, attempt, "failed", now, error="The call to your phone failed.")
        else:
            _finish(session, attempt, "agent_missed", now)
    session.commit()
    return True


def patient_leg_status(
    session: Session, attempt_id: int | None, params: dict[str, str], *, now: datetime
) -> bool:
    """The patient's leg's (<Number>'s) status callback. False if it is not one of ours."""
    attempt = _locked(session, attempt_id)
    reported = (params.get("CallStatus") or "").lower()
    sid = params.get("CallSid")
    parent = params.get("ParentCallSid")
    if (
        attempt is None
        or reported not in _CALL_RANK
        or not sid
        # Only after our <Dial> went out; anything else would count as an attempt.
        or attempt.dial_status is None
        or (parent and attempt.agent_call_sid not in (None, parent))
        or attempt.patient_call_sid not in (None, sid)
    ):
        session.rollback()
        return False
    attempt.patient_call_sid = sid
    attempt.dial_status = _forward_call(attempt.dial_status, reported)
    attempt.updated_at = now
    _note_answered_by(attempt, params.get("AnsweredBy"))
    if reported in ("in-progress", "answered"):
        attempt.status = _forward(attempt.status, "in_progress")
    elif reported in _CALL_FINAL:
        duration = int_or_none(params.get("CallDuration"))
        if duration is not None and attempt.duration is None:
            attempt.duration = duration
        _finish(session, attempt, _machine_if_detected(attempt, reported), now)
    session.commit()
    return True


def machine_detected(
    session: Session, attempt_id: int | None, params: dict[str, str], *, now: datetime
) -> bool:
    """Answering machine detection's verdict on the patient's leg (AnsweredBy). A machine
    (or fax) makes an answered call's outcome "machine", even once it has ended; a human
    changes nothing. False if it is not one of ours."""
    attempt = _locked(session, attempt_id)
    sid = params.get("CallSid")
    parent = params.get("ParentCallSid")
    answered_by = params.get("AnsweredBy")
    if (
        attempt is None
        or not sid
        or not answered_by
        or attempt.dial_status is None
        or (parent and attempt.agent_call_sid not in (None, parent))
        or attempt.patient_call_sid not in (None, sid)
    ):
        session.rollback()
        return False
    attempt.patient_call_sid = sid
    _note_answered_by(attempt, answered_by)
    attempt.updated_at = now
    if attempt.status == "completed":
        # The verdict came after the call's result: the result is refined, once.
        _finish(session, attempt, _machine_if_detected(attempt, "completed"), now)
    session.commit()
    return True


def _note_answered_by(attempt: CallAttempt, answered_by: str | None) -> None:
    if answered_by and attempt.answered_by is None:
        attempt.answered_by = answered_by.lower()[:32]


def _machine_if_detected(attempt: CallAttempt, outcome: str) -> str:
    """An answered call's outcome, corrected by detection: machine_start, machine_end_*
    and fax are a machine; human and unknown leave it as it is."""
    answered_by = attempt.answered_by or ""
    if outcome == "completed" and (answered_by.startswith("machine") or answered_by == "fax"):
        return "machine"
    return outcome


def _dial_outcome(attempt: CallAttempt, reported: str) -> tuple[str, str | None]:
    """The attempt's outcome from <Dial>'s DialCallStatus, and an error to show with it."""
    if reported in _DIAL_OUTCOMES:
        return reported, None
    if reported in _DIAL_CONNECTED:
        return "completed", None
    # A value we do not know: what the patient's leg last said, if it was final; else the
    # call has ended in a way we show as reported, never as a failure it may not be.
    if attempt.dial_status in _CALL_FINAL:
        return attempt.dial_status, None
    shown = reported[:40] or "no result"
    return "ended", f"Twilio reported “{shown}” for the call to the patient."


def _adopt_agent_sid(attempt: CallAttempt, sid: str | None) -> bool:
    """Does this callback belong to the attempt's agent leg? Adopts the sid if we have none
    yet (the callback beat the provider's answer, or that answer was lost)."""
    if not sid:
        return False
    if attempt.agent_call_sid is None:
        attempt.agent_call_sid = sid
        return True
    return attempt.agent_call_sid == sid


def _finish(
    session: Session, attempt: CallAttempt, outcome: str, now: datetime, *, error: str | None = None
) -> None:
    """End the attempt with `outcome`, once: later callbacks only fill in details. The one
    refinement allowed is an answered call that turns out to have been a machine."""
    if attempt.status in OUTCOMES:
        if not (attempt.status == "completed" and outcome == "machine"):
            return
        # The timeline is append-only: the refined result is a second entry.
        attempt.status = outcome
        attempt.updated_at = now
        _add_result(session, attempt, outcome, now, detail="detected after the call ended")
        return
    attempt.status = outcome
    attempt.ended_at = now
    attempt.updated_at = now
    if error is not None:
        attempt.error = error
    _add_result(session, attempt, outcome, now, detail=error)
    log.info("call attempt %s ended: %s", attempt.id, outcome)


def _add_result(
    session: Session, attempt: CallAttempt, outcome: str, now: datetime, *, detail: str | None
) -> None:
    text = view(attempt).label
    if detail is not None:
        text = f"{text}: {detail}"
    session.add(
        TaskEvent(
            task_id=attempt.task_id,
            at=now,
            kind="call_result",
            text=text,
            data={
                "attempt_id": attempt.id,
                "status": outcome,
                "duration": attempt.duration,
                "answered_by": attempt.answered_by,
            },
        )
    )


def _locked(session: Session, attempt_id: int | None) -> CallAttempt | None:
    if attempt_id is None:
        return None
    return session.scalar(
        select(CallAttempt)
        .where(CallAttempt.id == attempt_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _forward(current: str, reported: str) -> str:
    if current in OUTCOMES:
        return current
    if reported in OUTCOMES:
        return reported
    return reported if _RANK.get(reported, -1) > _RANK.get(current, -1) else current


def _forward_call(current: str | None, reported: str) -> str:
    if current is None:
        return reported
    if current in _CALL_FINAL:
        return current
    return reported if _CALL_RANK.get(reported, -1) > _CALL_RANK.get(current, -1) else current


def _first_name(task: Task) -> str | None:
    name = task.name or (task.contact.name if task.contact else None)
    if not name or not name.split():
        return None
    return name.split()[0]


__all__ = [
    "BRIDGE_PATH",
    "LABELS_BY_STATUS",
    "AttemptView",
    "CallPanel",
    "CallRefused",
    "TaskNotFound",
    "Verdict",
    "agent_answered",
    "agent_leg_status",
    "agent_pressed",
    "attempt_status",
    "call_panel",
    "check_call",
    "dial_finished",
    "machine_detected",
    "patient_leg_status",
    "start_call",
    "view",
]
