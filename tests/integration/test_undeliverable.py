"""Texts that cannot reach the patient: refused sends, retries that run out, and delivery
failures reported by status callback. Each ends with the task moved to "call manually".

Real database and Redis; Twilio's Messages API faked at the HTTP layer (twilio_messages).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from telephony_service.domain.statuses import TaskStatus, is_open
from telephony_service.models import ConsentChange, Contact, FollowUp, Message, Task, TaskEvent
from telephony_service.services import delivery
from telephony_service.wiring import Services
from tests.conftest import ACCOUNT_SID, FakeClock
from tests.helpers import BEN, RIVERSIDE_NUMBER, make_practice, post_twilio, run_jobs
from tests.sms_support import FakeMessages, send_in, text_back_due
from workers.scheduler import schedule_once

# The back-off between tries of a send Twilio turned away for now: six tries in all.
BACK_OFF = (
    timedelta(seconds=2),
    timedelta(seconds=15),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=20),
)


@dataclass(frozen=True)
class Line:
    kind: str
    text: str | None
    data: dict[str, object] | None
    at: datetime


@dataclass(frozen=True)
class State:
    message: Message
    task: Task
    contact: Contact
    timeline: list[Line]

    def kinds(self) -> list[str]:
        return [line.kind for line in self.timeline]

    def line(self, kind: str) -> Line:
        [found] = [line for line in self.timeline if line.kind == kind]
        return found


def _state(services: Services, message_id: int) -> State:
    with services.session() as session:
        message = session.get_one(Message, message_id)
        assert message.task_id is not None
        task = session.get_one(Task, message.task_id)
        contact = session.get_one(Contact, message.contact_id)
        timeline = [
            Line(event.kind, event.text, event.data, event.at)
            for event in session.scalars(
                select(TaskEvent).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id)
            )
        ]
        return State(message, task, contact, timeline)


def _send(services: Services, message_id: int) -> str:
    with services.session() as session:
        return send_in(session, services, message_id)


def _pending_text(services: Services) -> int:
    """A text-back to Ben, due now, for a new missed-call task."""
    practice = make_practice(services)
    return text_back_due(services, practice.id, BEN)


def _sent_text(services: Services, twilio_messages: FakeMessages) -> int:
    message_id = _pending_text(services)
    assert _send(services, message_id) == "sent"
    assert len(twilio_messages.sent) == 1
    return message_id


def _status_callback(
    client: FlaskClient, services: Services, message_id: int, status: str, code: int | None
) -> None:
    with services.session() as session:
        message = session.get_one(Message, message_id)
        sid, to = message.message_sid, message.to_number
    assert sid is not None
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "From": RIVERSIDE_NUMBER,
        "To": to,
        "ApiVersion": "2010-04-01",
    }
    if code is not None:
        params["ErrorCode"] = str(code)
    response = post_twilio(client, f"/twilio/sms/status?m={message_id}", params)
    assert response.status_code == 200


def _another_text_back(services: Services) -> int:
    """A text-back of a new missed-call task for the same patient (Ben)."""
    with services.session() as session:
        practice_id = session.scalars(select(Message.practice_id)).first()
    assert practice_id is not None
    return text_back_due(services, practice_id, BEN)


# --- refused at once -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [("error", 500, 20500), ("error", 502, None), ("timeout",)], ids=str
)
def test_it_gives_up_on_sends_whose_outcome_stays_unknown_and_a_person_calls(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    fault: tuple[object, ...],
) -> None:
    """Twilio answering 500s (or nothing) for an hour: each try is looked up before the
    next, the pauses grow, and when the tries run out a person calls."""
    message_id = _pending_text(services)
    twilio_messages.faults.extend([fault] * 50)
    assert _send(services, message_id) == "unknown"

    posts_at = []
    for _ in range(120):
        clock.advance(seconds=30)
        before = twilio_messages.posts
        schedule_once(services)
        run_jobs(services, worker_redis)
        if twilio_messages.posts > before:
            posts_at.append(clock.now)

    assert twilio_messages.posts == delivery.MAX_TRIES
    gaps = [later - earlier for earlier, later in itertools.pairwise(posts_at)]
    assert gaps == sorted(gaps) and gaps[-1] >= timedelta(minutes=20)
    state = _state(services, message_id)
    assert (state.message.status, state.message.tries) == ("failed", delivery.MAX_TRIES)
    assert twilio_messages.sent == []
    assert state.task.next_action == "call_manually"
    assert state.line("call_manually").text == "the text could not be sent"


def test_it_hands_a_text_to_a_person_when_twilios_list_cannot_be_read_for_hours(
    services: Services,
    client: FlaskClient,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twilio took the text but the answer was lost, and its list keeps refusing (say, a
    key without the list permission): sent again the text might arrive twice, left
    unknown the task would wait on it for good."""
    from telephony_service.gateways.base import GatewayError

    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))
    assert _send(services, message_id) == "unknown"
    [went] = twilio_messages.sent
    lookups = []

    def list_refused(**kwargs: object) -> None:
        lookups.append(clock())
        raise GatewayError("message list: refused (20003)", permanent=True, code=20003)

    monkeypatch.setattr(services.gateway, "list_messages", list_refused)
    for _ in range(4 * 3):  # three hours of passes, one each quarter
        clock.advance(minutes=15)
        schedule_once(services)
        run_jobs(services, worker_redis)

    assert clock() - lookups[-1] >= timedelta(minutes=45)  # not looked up since
    state = _state(services, message_id)
    assert state.message.status == "unconfirmed"
    assert state.message.defer_reason == "outcome never confirmed (message list unreadable)"
    assert state.task.next_action == "call_manually"
    assert state.line("call_manually").text == "whether the text went could not be confirmed"
    assert twilio_messages.posts == 1  # never sent again

    # It may have reached Ben: it still counts against his caps.
    later = _another_text_back(services)
    assert _send(services, later) == "deferred"
    assert "1 automated text in 24 h" in (_state(services, later).message.defer_reason or "")
    # Twilio's receipt, late: the text did go.
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": went.sid,
        "MessageStatus": "delivered",
        "From": RIVERSIDE_NUMBER,
        "To": went.to,
    }
    assert post_twilio(client, f"/twilio/sms/status?m={message_id}", params).status_code == 200
    run_jobs(services, worker_redis)
    state = _state(services, message_id)
    assert (state.message.status, state.message.message_sid) == ("delivered", went.sid)


def test_reconciliation_giving_up_waits_for_an_opt_out_instead_of_deadlocking(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    """Giving up hands the task to a person and cancels its other unsent texts; an opt-out
    (here Twilio's 21610 on an earlier text) cancels the patient's texts and stops the
    task. Both take the contact first, so one waits for the other."""
    lost = _pending_text(services)
    twilio_messages.faults.append(("timeout",))
    assert _send(services, lost) == "unknown"
    with services.session() as session:
        message = session.get_one(Message, lost)
        message.tries = delivery.MAX_TRIES
        lost_key = message.dedupe_key
        fields = {
            column: getattr(message, column)
            for column in ("practice_id", "task_id", "contact_id", "purpose", "to_number")
        } | {"from_number": message.from_number, "segments": 1, "created_at": clock()}
        earlier = Message(
            **fields,
            dedupe_key="earlier",
            kind="automated",
            body="an earlier text",
            status="sent",
            message_sid="SM" + "e" * 32,
            sent_at=clock(),
            not_before=clock(),
            updated_at=clock(),
        )
        waiting = Message(
            **fields,
            dedupe_key="manual",
            kind="manual",
            body="an agent's text, waiting for the morning",
            status="pending",
            not_before=clock() + timedelta(hours=2),
            updated_at=clock(),
        )
        session.add_all([earlier, waiting])
        session.commit()
        earlier_id = earlier.id
    clock.advance(seconds=61)
    giving_up, opted_out = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reconcile() -> None:
        try:
            with services.session() as session:
                real = delivery.mark_call_manually

                def slow_mark(*args: Any, **kwargs: Any) -> None:
                    giving_up.set()
                    assert not opted_out.wait(0.5)  # the opt-out waits for us
                    real(*args, **kwargs)

                with pytest.MonkeyPatch.context() as patched:
                    patched.setattr(delivery, "mark_call_manually", slow_mark)
                    delivery.reconcile_message(session, services.gateway, lost, clock=clock)
        except BaseException as exc:
            errors.append(exc)

    def carrier_opt_out() -> None:
        params = {
            "MessageSid": "SM" + "e" * 32,
            "MessageStatus": "failed",
            "ErrorCode": "21610",
            "m": str(earlier_id),
        }
        try:
            with services.session() as session:
                delivery.apply_status(session, params, clock())
                session.commit()
            opted_out.set()
        except BaseException as exc:
            errors.append(exc)

    reconciler = threading.Thread(target=reconcile)
    reconciler.start()
    assert giving_up.wait(10)
    opt_out = threading.Thread(target=carrier_opt_out)
    opt_out.start()
    reconciler.join(20)
    opt_out.join(20)

    assert errors == []
    with services.session() as session:
        statuses = {
            key: status
            for key, status in session.execute(select(Message.dedupe_key, Message.status))
        }
        contact = session.scalars(select(Contact)).one()
    assert statuses["manual"] == "canceled" and statuses[lost_key] == "failed"
    assert contact.opted_out_at is not None


@pytest.mark.parametrize("code", [21614, 21211], ids=["not_a_mobile", "invalid_number"])
def test_it_moves_the_task_to_call_manually_when_twilio_refuses_the_number(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, code: int
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("error", 400, code))

    assert _send(services, message_id) == "failed"

    state = _state(services, message_id)
    assert state.message.status == "failed"
    assert state.message.error_code == code
    assert state.message.message_sid is None
    assert state.message.tries == 1
    assert state.contact.sms_undeliverable_at == clock()
    # A number that cannot take texts is not an opt-out.
    assert state.contact.opted_out_at is None
    assert state.task.flag == "sms_undeliverable"
    assert state.task.next_action == "call_manually"
    assert state.task.next_action_at == clock()
    assert is_open(TaskStatus(state.task.status))  # still waiting for a person to call
    assert state.kinds()[-2:] == ["call_manually", "text_failed"]
    assert state.line("call_manually").text == "texts cannot reach this number"
    assert state.line("text_failed").data == {"message_id": message_id, "purpose": "text_back"}
    with services.session() as session:
        assert session.scalars(select(ConsentChange)).all() == []
    assert twilio_messages.posts == 1


@pytest.mark.parametrize("code", [21606, 21408], ids=["from_not_allowed", "region_not_enabled"])
def test_it_moves_the_task_to_call_manually_when_twilio_refuses_the_account(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, code: int
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("error", 400, code))

    assert _send(services, message_id) == "failed"

    state = _state(services, message_id)
    assert (state.message.status, state.message.error_code) == ("failed", code)
    # The number may well take texts; this account cannot send them now. A person calls.
    assert state.contact.sms_undeliverable_at is None
    assert state.task.next_action == "call_manually"
    assert state.line("call_manually").text == "the text could not be sent"


@pytest.mark.parametrize(("status", "code"), [(400, 21611), (401, 20003)])
def test_it_retries_a_refusal_that_passes_later(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, status: int, code: int
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("error", status, code))

    assert _send(services, message_id) == "retry"
    clock.advance(seconds=2)
    assert _send(services, message_id) == "sent"
    assert _state(services, message_id).task.next_action != "call_manually"


@pytest.mark.parametrize("code", [21614, 21211], ids=["not_a_mobile", "invalid_number"])
def test_it_never_texts_a_number_twilio_refused_again(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    code: int,
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("error", 400, code))
    assert _send(services, message_id) == "failed"

    # The rest of the task's cadence (a second-attempt and a final text) writes no text.
    for day in (18, 19, 20, 23, 24, 25):
        clock.now = clock.now.replace(day=day)
        schedule_once(services)
        run_jobs(services, worker_redis)
    with services.session() as session:
        texts = session.scalars(select(Message).where(Message.id != message_id)).all()
        assert texts == []
        # The text steps did run; they just wrote no text.
        states = session.scalars(select(FollowUp.state).where(FollowUp.template.is_not(None)))
        assert set(states) == {"done"}

    # Ben misses another call: the new task's automated text is canceled at send time.
    later = _another_text_back(services)
    assert _send(services, later) == "canceled"
    state = _state(services, later)
    assert state.message.status == "canceled"
    assert state.message.defer_reason == "the number cannot receive texts"
    assert state.kinds()[-1] == "text_canceled"
    assert twilio_messages.posts == 1
    assert twilio_messages.sent == []


# --- turned away until the tries run out -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [(429, 20429), (503, 20503)], ids=["too_many_requests", "unavailable"]
)
def test_it_gives_up_after_six_tries_and_moves_the_task_to_call_manually(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    status: int,
    code: int,
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.extend([("error", status, code)] * (len(BACK_OFF) + 1))

    assert _send(services, message_id) == "retry"
    for tries, delay in enumerate(BACK_OFF, start=1):
        state = _state(services, message_id)
        assert (state.message.status, state.message.tries) == ("pending", tries)
        assert state.message.not_before == clock() + delay
        assert state.task.flag is None
        clock.advance(seconds=delay.total_seconds())
        schedule_once(services)
        run_jobs(services, worker_redis)

    state = _state(services, message_id)
    assert state.message.status == "failed"
    assert state.message.tries == len(BACK_OFF) + 1
    assert state.message.error_code == code
    assert state.message.defer_reason is not None
    assert state.message.defer_reason.startswith("gave up: ")
    assert state.task.flag == "sms_undeliverable"
    assert state.task.next_action == "call_manually"
    assert state.task.next_action_at == clock()
    assert is_open(TaskStatus(state.task.status))
    # Busy or down says nothing about the patient's number.
    assert state.contact.sms_undeliverable_at is None
    assert state.kinds()[-2:] == ["call_manually", "text_failed"]
    assert state.line("call_manually").text == "the text could not be sent"
    assert "text_sent" not in state.kinds()
    assert twilio_messages.posts == len(BACK_OFF) + 1
    assert twilio_messages.sent == []

    # Nothing is tried after giving up.
    clock.advance(hours=1)
    schedule_once(services)
    run_jobs(services, worker_redis)
    assert twilio_messages.posts == len(BACK_OFF) + 1
    assert _state(services, message_id).message.status == "failed"


# --- reported by status callback ------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "undelivered"])
@pytest.mark.parametrize(
    ("code", "number_unusable"),
    [
        (30003, False),  # unreachable handset
        (30005, False),  # unknown handset
        (30007, False),  # filtered by the carrier
        (30008, False),  # unknown error
        (30006, True),  # a landline: it will never take a text
    ],
    ids=["30003", "30005", "30007", "30008", "30006_landline"],
)
def test_it_moves_the_task_to_call_manually_when_a_text_is_not_delivered(
    services: Services,
    client: FlaskClient,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    status: str,
    code: int,
    number_unusable: bool,
) -> None:
    message_id = _sent_text(services, twilio_messages)
    clock.advance(minutes=2)
    reported_at = clock()

    _status_callback(client, services, message_id, status, code)
    run_jobs(services, worker_redis)

    state = _state(services, message_id)
    assert state.message.status == status
    assert state.message.error_code == code
    assert state.task.flag == "sms_undeliverable"
    assert state.task.next_action == "call_manually"
    assert state.task.next_action_at == reported_at
    assert is_open(TaskStatus(state.task.status))
    expected_mark = reported_at if number_unusable else None
    assert state.contact.sms_undeliverable_at == expected_mark
    assert state.contact.opted_out_at is None
    assert state.kinds()[-3:] == ["text_sent", "text_undelivered", "call_manually"]
    undelivered = state.line("text_undelivered")
    assert undelivered.data == {"message_id": message_id, "code": code}
    assert undelivered.at == reported_at
    assert state.line("call_manually").text == "the text was not delivered"


@pytest.mark.parametrize("code", [30001, None], ids=["queue_overflow", "no_code"])
def test_it_keeps_texting_after_a_failure_that_says_nothing_about_the_number(
    services: Services,
    client: FlaskClient,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    code: int | None,
) -> None:
    message_id = _sent_text(services, twilio_messages)
    clock.advance(minutes=2)

    _status_callback(client, services, message_id, "undelivered", code)
    run_jobs(services, worker_redis)

    state = _state(services, message_id)
    assert state.message.status == "undelivered"
    assert state.message.error_code == code
    assert state.task.flag is None
    assert state.task.next_action != "call_manually"
    assert state.contact.sms_undeliverable_at is None
    assert state.kinds()[-2:] == ["text_sent", "text_undelivered"]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(30006, "canceled"), (30003, "sent")],
    ids=["landline", "unreachable_handset"],
)
def test_it_stops_texting_the_patient_only_when_the_number_is_a_landline(
    services: Services,
    client: FlaskClient,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    code: int,
    outcome: str,
) -> None:
    message_id = _sent_text(services, twilio_messages)
    _status_callback(client, services, message_id, "undelivered", code)
    run_jobs(services, worker_redis)

    # A day later (one automated text a day) Ben misses another call.
    clock.advance(hours=25)
    later = _another_text_back(services)
    assert _send(services, later) == outcome

    state = _state(services, later)
    assert state.message.status == ("canceled" if outcome == "canceled" else "queued")
    assert len(twilio_messages.sent) == (1 if outcome == "canceled" else 2)
    if outcome == "canceled":
        assert state.message.defer_reason == "the number cannot receive texts"
    # The first task needs a call either way; the new one only if texts cannot reach Ben.
    assert _state(services, message_id).task.next_action == "call_manually"


def test_it_cancels_the_tasks_waiting_texts_when_a_text_is_not_delivered(
    services: Services,
    client: FlaskClient,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
) -> None:
    from telephony_service.models import Practice
    from telephony_service.services import delivery

    message_id = _sent_text(services, twilio_messages)
    # Staff write a second text that waits (say, for quiet hours).
    with services.session() as session:
        first = session.get_one(Message, message_id)
        assert first.task_id is not None
        waiting = delivery.queue_text(
            session,
            practice=session.scalars(select(Practice)).one(),
            contact=session.get_one(Contact, first.contact_id),
            task=session.get_one(Task, first.task_id),
            template="second_attempt",
            kind="manual",
            dedupe_key="test:waiting",
            attempt=1,
            now=clock(),
            base_url=services.settings.public_base_url,
        )
        assert waiting is not None
        waiting.not_before = clock() + timedelta(hours=12)
        waiting_id = waiting.id
        session.commit()
    with services.session() as session:
        assert session.get_one(Message, waiting_id).status == "pending"
        assert delivery.claim_due(session, now=clock() + timedelta(minutes=1)) == ([], [])

    _status_callback(client, services, message_id, "undelivered", 30003)
    run_jobs(services, worker_redis)

    state = _state(services, waiting_id)
    assert state.message.status == "canceled"
    assert state.message.defer_reason == "the text was not delivered"
    clock.advance(hours=13)
    schedule_once(services)
    run_jobs(services, worker_redis)
    assert len(twilio_messages.sent) == 1
