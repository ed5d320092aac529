"""Click-to-call test support: Twilio's Calls API faked with `responses`, tasks to call,
and the bridge's webhooks posted as Twilio would post them."""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from telephony_service.models import CallAttempt, Contact, Task
from telephony_service.wiring import Services
from tests.conftest import ACCOUNT_SID, PUBLIC_BASE_URL
from tests.helpers import ANA, post_twilio

CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"


@dataclass
class Placed:
    sid: str
    form: dict[str, list[str]]

    @property
    def to(self) -> str:
        return self.form["To"][0]

    @property
    def url(self) -> str:
        return self.form["Url"][0]

    @property
    def status_callback(self) -> str:
        return self.form["StatusCallback"][0]


@dataclass
class FakeCalls:
    placed: list[Placed] = field(default_factory=list)
    # Each entry answers one create: ("error", status, code) or ("timeout",).
    faults: deque[tuple[Any, ...]] = field(default_factory=deque)
    posts: int = 0

    def create(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.posts += 1
        form = parse_qs(str(request.body), keep_blank_values=True)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault[0] == "error":
            body = {"code": fault[2], "message": f"error {fault[2]}", "status": fault[1]}
            return fault[1], {}, json.dumps(body)
        if fault is not None and fault[0] == "timeout":
            raise requests.exceptions.ReadTimeout("read timed out")
        sid = "CA" + uuid.uuid4().hex
        self.placed.append(Placed(sid=sid, form=form))
        resource = {
            "sid": sid,
            "account_sid": ACCOUNT_SID,
            "to": form["To"][0],
            "from": form["From"][0],
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
        }
        return 201, {}, json.dumps(resource)


@contextmanager
def faked_calls() -> Iterator[FakeCalls]:
    """Twilio's Calls API, for a test module's own fixture (`yield from`-able)."""
    fake = FakeCalls()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_callback(responses.POST, CALLS_URL, callback=fake.create)
        yield fake


def make_task(
    services: Services,
    practice_id: int,
    *,
    phone: str | None = ANA,
    name: str | None = "Ana Lopez",
    reason: str | None = "wants a new patient visit for her son",
    category: str = "new_patient_request",
    status: str = "new",
    timezone: str | None = None,
) -> int:
    now = services.clock()
    with services.session() as session:
        contact = None
        if phone is not None:
            contact = session.scalar(
                select(Contact).where(Contact.practice_id == practice_id, Contact.phone == phone)
            )
            if contact is None:
                contact = Contact(
                    practice_id=practice_id, phone=phone, timezone=timezone, created_at=now
                )
                session.add(contact)
                session.flush()
        task = Task(
            practice_id=practice_id,
            contact_id=contact.id if contact else None,
            category=category,
            status=status,
            priority=50,
            name=name,
            reason=reason,
            source="api",
            no_callback_number=phone is None,
            call_count=0,
            has_voicemail=False,
            created_at=now,
            updated_at=now,
            due_at=now,
        )
        session.add(task)
        session.commit()
        return task.id


def attempts(services: Services) -> list[CallAttempt]:
    with services.session() as session:
        return list(session.scalars(select(CallAttempt).order_by(CallAttempt.id)))


def attempt(services: Services, attempt_id: int) -> CallAttempt:
    with services.session() as session:
        row = session.get(CallAttempt, attempt_id)
        assert row is not None
        return row


def bridge_path(url: str) -> str:
    """The path and query of a callback URL the service gave Twilio."""
    assert url.startswith(PUBLIC_BASE_URL), url
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def leg(call_sid: str, to: str, from_: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "From": from_,
        "To": to,
        "Direction": "outbound-api",
        **extra,
    }


def post_bridge(
    client: FlaskClient, path: str, params: dict[str, str], *, signature: str | None = None
) -> TestResponse:
    return post_twilio(client, path, params, signature=signature)


def press_call(
    client: FlaskClient, task_id: int, *, nonce: str | None = None, **form: str
) -> TestResponse:
    """Press Call on a task page, as the panel's form does (JSON answer)."""
    return client.post(
        f"/tasks/{task_id}/calls",
        data={"csrf_token": "test-csrf-token", "nonce": nonce or new_nonce(), **form},
        headers={"Accept": "application/json"},
    )


def new_nonce() -> str:
    return uuid.uuid4().hex


def play_bridge(
    client: FlaskClient,
    placed: Placed,
    *,
    patient: str = ANA,
    digits: str | None = "1",
    dial_status: str = "completed",
    duration: str = "42",
) -> dict[str, TestResponse]:
    """What Twilio posts for one click-to-call, in its usual order: the agent answers, the
    whisper's key, the patient's leg, the dial's action, the agent's leg ends."""
    agent, practice_number = placed.to, placed.form["From"][0]
    attempt_query = urlsplit(placed.url).query
    base = "/twilio/voice/bridge"
    answers: dict[str, TestResponse] = {}

    def agent_leg(**extra: str) -> dict[str, str]:
        return leg(placed.sid, agent, practice_number, **extra)

    answers["agent"] = post_twilio(
        client, f"{base}/agent?{attempt_query}", agent_leg(CallStatus="in-progress")
    )
    if digits is not None:
        answers["accept"] = post_twilio(
            client,
            f"{base}/accept?{attempt_query}",
            agent_leg(CallStatus="in-progress", Digits=digits),
        )
    if "<Dial" in answers.get("accept", answers["agent"]).text:
        child = "CA" + uuid.uuid4().hex

        def patient_leg(status: str, **extra: str) -> dict[str, str]:
            return {
                **leg(child, patient, practice_number, CallStatus=status, **extra),
                "ParentCallSid": placed.sid,
                "Direction": "outbound-dial",
            }

        statuses = ["initiated", "ringing"]
        if dial_status == "completed":
            statuses.append("in-progress")
        for status in statuses:
            post_twilio(client, f"{base}/patient-status?{attempt_query}", patient_leg(status))
        final = (
            patient_leg(dial_status, CallDuration=duration)
            if dial_status == "completed"
            else patient_leg(dial_status)
        )
        post_twilio(client, f"{base}/patient-status?{attempt_query}", final)
        answers["dial_result"] = post_twilio(
            client,
            f"{base}/dial-result?{attempt_query}",
            agent_leg(
                CallStatus="in-progress",
                DialCallStatus=dial_status,
                DialCallSid=child,
                DialCallDuration=duration if dial_status == "completed" else "0",
            ),
        )
    answers["agent_status"] = post_twilio(
        client, f"{base}/agent-status?{attempt_query}", agent_leg(CallStatus="completed")
    )
    return answers
