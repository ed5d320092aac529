"""Development pages, registered only while no Twilio credentials are set.

With the console gateway nothing leaves the machine, so the outbox is where a developer
reads the texts the service would have sent, and sees the calls it would have placed. A
call's "Simulate answer" plays Twilio's part of a click-to-call: it posts the bridge's
webhooks, signed as Twilio would sign them, to this same app, in the order Twilio would.

They are staff pages like any other: signed in, and of the user's own practice only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from telephony_service.domain.phones import mask_phone
from telephony_service.models import CallAttempt, Contact, Message, Practice, User
from telephony_service.services.bridging import BRIDGE_PATH, LABELS_BY_STATUS
from telephony_service.web import workspace
from telephony_service.web.security import sign
from telephony_service.web.workspace import current_practice, db, login_required
from telephony_service.wiring import Services

bp = Blueprint("dev", __name__, url_prefix="/dev", template_folder="../templates")

OUTBOX_LIMIT = 100
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


@bp.before_request
def _local_only() -> None:
    # A second guard besides the sign-in, and checked before it: the bodies carry live
    # scheduling links, and a server run without Twilio credentials but reachable from
    # elsewhere (a staging box) must not even offer them to the network. Not enough alone:
    # behind a reverse proxy on the same host every request comes from loopback.
    if request.remote_addr not in _LOOPBACK:
        abort(404)


# After _local_only: a request from elsewhere is not found before anything else is read.
workspace.install(bp)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    # Both in the practice's own zone: written to the outbox, and not to be sent before.
    created_at: datetime
    not_before: datetime
    practice: str
    to: str
    purpose: str
    kind: str
    status: str
    defer_reason: str | None
    error: str | None
    segments: int
    body: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "not_before": self.not_before.isoformat(),
            "practice": self.practice,
            "to": self.to,
            "purpose": self.purpose,
            "kind": self.kind,
            "status": self.status,
            "defer_reason": self.defer_reason,
            "error": self.error,
            "segments": self.segments,
            "body": self.body,
        }


def latest_texts(
    session: Session, *, practice_id: int, limit: int = OUTBOX_LIMIT
) -> list[OutboxEntry]:
    rows = session.execute(
        select(Message, Practice.name, Practice.timezone)
        .join(Practice, Practice.id == Message.practice_id)
        .where(Message.practice_id == practice_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    entries = []
    for message, practice_name, timezone in rows:
        zone = ZoneInfo(timezone)
        error = message.error
        if message.error_code is not None:
            error = f"{message.error_code} {error}" if error else str(message.error_code)
        entries.append(
            OutboxEntry(
                id=message.id,
                created_at=message.created_at.astimezone(zone),
                not_before=message.not_before.astimezone(zone),
                practice=practice_name,
                to=mask_phone(message.to_number),
                purpose=message.purpose,
                kind=message.kind,
                status=message.status,
                defer_reason=message.defer_reason,
                error=error,
                segments=message.segments,
                body=message.body,
            )
        )
    return entries


@dataclass(frozen=True)
class CallEntry:
    id: int
    task_id: int
    created_at: datetime  # in the practice's own zone
    practice: str
    agent: str  # masked: the phone that would have rung
    sid: str | None
    status: str
    label: str
    error: str | None
    # Still waiting for the agent to answer: the bridge can be played through.
    can_answer: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "created_at": self.created_at.isoformat(),
            "practice": self.practice,
            "agent": self.agent,
            "sid": self.sid,
            "status": self.status,
            "label": self.label,
            "error": self.error,
            "can_answer": self.can_answer,
        }


def latest_calls(
    session: Session, *, practice_id: int, limit: int = OUTBOX_LIMIT
) -> list[CallEntry]:
    rows = session.execute(
        select(CallAttempt, Practice.name, Practice.timezone, User.phone)
        .join(Practice, Practice.id == CallAttempt.practice_id)
        .outerjoin(User, User.id == CallAttempt.user_id)
        .where(CallAttempt.practice_id == practice_id)
        .order_by(CallAttempt.created_at.desc(), CallAttempt.id.desc())
        .limit(limit)
    ).all()
    return [
        CallEntry(
            id=attempt.id,
            task_id=attempt.task_id,
            created_at=attempt.created_at.astimezone(ZoneInfo(timezone)),
            practice=practice_name,
            agent=mask_phone(agent_phone),
            sid=attempt.agent_call_sid,
            status=attempt.status,
            label=LABELS_BY_STATUS.get(attempt.status, attempt.status),
            error=attempt.error,
            can_answer=_can_answer(attempt),
        )
        for attempt, practice_name, timezone, agent_phone in rows
    ]


def _can_answer(attempt: CallAttempt) -> bool:
    return attempt.agent_call_sid is not None and attempt.status in ("agent_ringing", "unknown")


@bp.get("/outbox")
@login_required()
def outbox() -> Response | str:
    practice_id = current_practice().id
    entries = latest_texts(db(), practice_id=practice_id)
    calls = latest_calls(db(), practice_id=practice_id)
    if request.args.get("format") == "json":
        return jsonify(
            messages=[entry.as_json() for entry in entries],
            calls=[call.as_json() for call in calls],
        )
    return render_template(
        "dev/outbox.html",
        entries=entries,
        calls=calls,
        limit=OUTBOX_LIMIT,
        answers=SIMULATED_ANSWERS,
        played=request.args.get("played"),
    )


# What the person on the other end does, for "Simulate answer".
SIMULATED_ANSWERS = {
    "completed": "the agent presses 1, the patient answers",
    "no-answer": "the agent presses 1, the patient does not answer",
    "busy": "the agent presses 1, the patient's line is busy",
    "no-key": "the agent's voicemail picks up (no key pressed)",
}


@bp.post("/calls/<int:attempt_id>/answer")
@login_required()
def simulate_answer(attempt_id: int) -> BaseResponse:
    outcome = request.form.get("outcome", "completed")
    if outcome not in SIMULATED_ANSWERS:
        abort(400, "unknown outcome")
    practice = current_practice()
    session = db()
    attempt = session.get(CallAttempt, attempt_id)
    if attempt is None or attempt.practice_id != practice.id:
        abort(404)
    if not _can_answer(attempt):
        abort(409, "This call is not ringing any more.")
    agent = session.get(User, attempt.user_id) if attempt.user_id else None
    contact = session.get(Contact, attempt.contact_id) if attempt.contact_id else None
    legs = _Legs(
        attempt_id=attempt.id,
        agent_sid=attempt.agent_call_sid or "",
        agent=agent.phone if agent else "",
        practice=practice.twilio_number,
        patient=contact.phone if contact else "",
    )
    # The webhooks below run while this request is still open: its transaction (on SQLite,
    # the database's one lock) must not be held through them.
    session.close()
    _play(workspace.services(), legs, outcome)
    return redirect(url_for("dev.outbox", played=attempt_id))


@dataclass(frozen=True)
class _Legs:
    attempt_id: int
    agent_sid: str
    agent: str
    practice: str
    patient: str


def _play(services: Services, legs: _Legs, outcome: str) -> None:
    """Post what Twilio would, to this app itself, through its full webhook stack."""
    client = current_app.test_client()
    base = services.settings.public_base_url
    token = services.settings.webhook_auth_token
    account = services.settings.twilio_account_sid or "AC" + "0" * 32

    def post(endpoint: str, params: dict[str, str]) -> str:
        path = f"{BRIDGE_PATH}/{endpoint}?a={legs.attempt_id}"
        fields = {"AccountSid": account, "ApiVersion": "2010-04-01", **params}
        answer = client.post(
            path, data=fields, headers={"X-Twilio-Signature": sign(base + path, fields, token)}
        )
        return answer.get_data(as_text=True)

    def agent_leg(**extra: str) -> dict[str, str]:
        return {
            "CallSid": legs.agent_sid,
            "From": legs.practice,
            "To": legs.agent,
            "Direction": "outbound-api",
            **extra,
        }

    post("agent-status", agent_leg(CallStatus="ringing"))
    post("agent", agent_leg(CallStatus="in-progress"))
    post("agent-status", agent_leg(CallStatus="in-progress"))
    if outcome == "no-key":
        post("agent-status", agent_leg(CallStatus="completed", CallDuration="12"))
        return
    answer = post("accept", agent_leg(CallStatus="in-progress", Digits="1"))
    if "<Dial" in answer:
        child = "CA" + uuid.uuid4().hex
        patient = {
            "CallSid": child,
            "ParentCallSid": legs.agent_sid,
            "From": legs.practice,
            "To": legs.patient,
            "Direction": "outbound-dial",
        }
        answered = outcome == "completed"
        steps = ["initiated", "ringing", *(["in-progress"] if answered else []), outcome]
        for step in steps:
            extra = {"CallDuration": "47"} if answered and step == "completed" else {}
            post("patient-status", {**patient, "CallStatus": step, **extra})
        post(
            "dial-result",
            agent_leg(
                CallStatus="in-progress",
                DialCallStatus=outcome,
                DialCallSid=child,
                DialCallDuration="47" if answered else "0",
            ),
        )
    post("agent-status", agent_leg(CallStatus="completed", CallDuration="60"))
