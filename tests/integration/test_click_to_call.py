"""Click-to-call from a task: the Call button, the compliance gate, the provider's errors.

Twilio's Calls API is faked with `responses`; its webhooks are posted signed, as Twilio
would (tests/call_support.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask, render_template
from flask.testing import FlaskClient
from sqlalchemy import select

from telephony_service.gateways import ConsoleGateway
from telephony_service.models import CallAttempt, Contact, Message, Practice, Task, User
from telephony_service.services import audit, bridging, delivery
from telephony_service.services.practices import texting_policy
from telephony_service.web import create_app
from telephony_service.wiring import Services
from tests.call_support import (
    FakeCalls,
    Placed,
    attempt,
    attempts,
    bridge_path,
    faked_calls,
    leg,
    make_task,
    new_nonce,
    play_bridge,
    press_call,
)
from tests.conftest import PUBLIC_BASE_URL, FakeClock
from tests.helpers import (
    ANA,
    HARBOR_NUMBER,
    RIVERSIDE_NUMBER,
    make_practice,
    post_twilio,
    timeline_kinds,
)
from tests.sms_support import FakeMessages
from tests.workspace_support import CSRF, make_user, sign_in_as

DANA = "+16175550142"  # the agent's own phone, rung first


@pytest.fixture
def calls() -> Iterator[FakeCalls]:
    with faked_calls() as fake:
        yield fake


@pytest.fixture
def riverside(services: Services) -> Practice:
    return make_practice(services)


@pytest.fixture
def dana(services: Services, riverside: Practice) -> User:
    return make_user(
        services, riverside.id, email="dana@riverside.example", phone=DANA, name="Dana"
    )


@pytest.fixture
def browser(client: FlaskClient, services: Services, dana: User) -> FlaskClient:
    sign_in_as(client, services, dana)
    return client


@pytest.fixture
def task_id(services: Services, riverside: Practice) -> int:
    return make_task(services, riverside.id)


NIGHT = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)


def _at(
    at: datetime, clock: FakeClock, browser: FlaskClient, services: Services, user: User
) -> None:
    """Move the clock, and sign in again (hours later the session would have expired)."""
    clock.now = at
    sign_in_as(browser, services, user)


def _panel(services: Services, task_id: int, user: User) -> bridging.CallPanel:
    with services.session() as session:
        task = session.get_one(Task, task_id)
        practice = session.get_one(Practice, task.practice_id)
        row = session.get_one(User, user.id)
        return bridging.call_panel(
            session, task=task, user=row, practice=practice, now=services.clock()
        )


def _audit_actions(services: Services, practice_id: int) -> list[tuple[str, Any]]:
    with services.session() as session:
        return [(entry.action, entry.data) for entry in audit.entries(session, practice_id)]


def _sent_text(services: Services, practice_id: int, contact_phone: str, at: datetime) -> None:
    with services.session() as session:
        contact = session.scalars(
            select(Contact).where(
                Contact.practice_id == practice_id, Contact.phone == contact_phone
            )
        ).one()
        session.add(
            Message(
                practice_id=practice_id,
                contact_id=contact.id,
                dedupe_key=f"test:{at.isoformat()}",
                purpose="text_back",
                attempt=1,
                kind="automated",
                to_number=contact_phone,
                from_number=RIVERSIDE_NUMBER,
                body="Riverside Family Medicine: sorry we missed your call.",
                segments=1,
                status="delivered",
                not_before=at,
                tries=1,
                message_sid="SM" + at.strftime("%Y%m%d%H%M%S").ljust(32, "0"),
                created_at=at,
                sent_at=at,
                updated_at=at,
            )
        )
        session.commit()


def test_it_rings_the_agent_first_from_the_practice_number(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int, riverside: Practice
) -> None:
    answer = press_call(browser, task_id)

    assert answer.status_code == 200, answer.text
    [placed] = calls.placed
    [row] = attempts(services)
    assert placed.to == DANA
    assert placed.form["From"] == [RIVERSIDE_NUMBER]
    assert placed.url == f"{PUBLIC_BASE_URL}/twilio/voice/bridge/agent?a={row.id}"
    assert placed.status_callback == (
        f"{PUBLIC_BASE_URL}/twilio/voice/bridge/agent-status?a={row.id}"
    )
    assert placed.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert (row.status, row.agent_call_sid, row.task_id) == ("agent_ringing", placed.sid, task_id)
    assert answer.json["attempt"]["status"] == "agent_ringing"
    assert answer.json["status_url"] == f"/calls/{row.id}.json"
    assert _audit_actions(services, riverside.id) == [("placed_call", {"override": False})]
    with services.session() as session:
        [entry] = session.get_one(Task, task_id).timeline
    assert (entry.kind, entry.text) == ("call_placed", "Call placed by Dana")
    assert not re.search(r"\d{4}", entry.text or "")


def test_it_places_one_call_for_a_double_click(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    nonce = new_nonce()

    first = press_call(browser, task_id, nonce=nonce)
    second = press_call(browser, task_id, nonce=nonce)

    assert calls.posts == 1
    assert len(attempts(services)) == 1
    assert first.json["attempt"]["id"] == second.json["attempt"]["id"]
    assert timeline_kinds(services, task_id) == ["call_placed"]


def test_it_goes_back_to_the_task_page_after_a_form_post(
    browser: FlaskClient, calls: FakeCalls, task_id: int
) -> None:
    answer = browser.post(f"/tasks/{task_id}/calls", data={**CSRF, "nonce": new_nonce()})

    assert answer.status_code == 302
    assert len(calls.placed) == 1


def test_it_refuses_a_post_without_the_csrf_token(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    answer = browser.post(f"/tasks/{task_id}/calls", data={"nonce": new_nonce()})

    assert answer.status_code == 400
    assert calls.posts == 0
    assert attempts(services) == []


def test_it_bridges_the_patient_and_records_the_result(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    press_call(browser, task_id)
    [placed] = calls.placed

    answers = play_bridge(browser, placed, duration="125")

    assert "<Dial" in answers["accept"].text
    [row] = attempts(services)
    assert (row.status, row.dial_status, row.duration) == ("completed", "completed", 125)
    assert row.agent_status == "completed"
    assert row.patient_call_sid is not None and row.ended_at is not None
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]
    status = browser.get(f"/calls/{row.id}.json", headers={"X-Background": "1"})
    assert status.json == {
        "id": row.id,
        "status": "completed",
        "label": "Call ended after 2 min 5 s",
        "ended": True,
        "dial_status": "completed",
        "answered_by": None,
        "duration": 125,
        "error": None,
    }


@pytest.mark.parametrize(
    ("dial_status", "outcome"),
    [("no-answer", "no-answer"), ("busy", "busy"), ("failed", "failed"), ("canceled", "canceled")],
)
def test_it_records_a_patient_who_was_not_reached(
    browser: FlaskClient,
    services: Services,
    calls: FakeCalls,
    task_id: int,
    dial_status: str,
    outcome: str,
) -> None:
    press_call(browser, task_id)

    play_bridge(browser, calls.placed[0], dial_status=dial_status)

    [row] = attempts(services)
    assert (row.status, row.dial_status) == (outcome, dial_status)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_never_dials_the_patient_when_no_key_is_pressed(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    press_call(browser, task_id)

    answers = play_bridge(browser, calls.placed[0], digits=None)

    assert "<Gather" in answers["agent"].text
    [row] = attempts(services)
    assert (row.status, row.dial_status, row.patient_call_sid) == ("agent_missed", None, None)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_hangs_up_when_the_agent_presses_another_key(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    press_call(browser, task_id)

    answers = play_bridge(browser, calls.placed[0], digits="2")

    assert "<Dial" not in answers["accept"].text
    assert "<Hangup" in answers["accept"].text
    assert attempts(services)[0].status == "agent_declined"


def test_it_counts_an_agent_who_never_answered_as_missed(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    press_call(browser, task_id)
    [placed] = calls.placed
    path = bridge_path(placed.status_callback)

    post_twilio(browser, path, leg(placed.sid, DANA, RIVERSIDE_NUMBER, CallStatus="ringing"))
    post_twilio(browser, path, leg(placed.sid, DANA, RIVERSIDE_NUMBER, CallStatus="no-answer"))

    [row] = attempts(services)
    assert (row.status, row.agent_status) == ("agent_missed", "no-answer")


def test_it_lets_staff_call_a_patient_who_opted_out_of_texts(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        contact.opted_out_at = services.clock() - timedelta(days=1)
        session.commit()

    press_call(browser, task_id)
    play_bridge(browser, calls.placed[0])

    assert attempts(services)[0].status == "completed"


# --- the contact window ----------------------------------------------------------------


def test_it_warns_outside_the_contact_window_and_says_when_it_opens(
    services: Services, clock: FakeClock, dana: User, task_id: int
) -> None:
    # 21:00 in New York (the patient's zone, from her 202 number): outside 08:00-20:00.
    clock.now = NIGHT

    panel = _panel(services, task_id, dana)

    assert (panel.allowed, panel.override_possible) == (False, True)
    assert panel.opens_at == datetime(2026, 11, 18, 13, 0, tzinfo=UTC)
    # On the agent's clock, in the practice's zone, as the rest of the workspace shows time.
    assert panel.reason == (
        "Outside the patient's contact window: quiet hours for the patient (America/New_York) "
        "until Wed Nov 18 at 8:00 AM EST. Call now only if the patient asked to be called at "
        "this time."
    )


def test_it_refuses_a_call_at_night_without_the_patients_request(
    browser: FlaskClient,
    services: Services,
    clock: FakeClock,
    calls: FakeCalls,
    task_id: int,
    dana: User,
) -> None:
    _at(NIGHT, clock, browser, services, dana)

    answer = press_call(browser, task_id)
    ticked_without_reason = press_call(browser, task_id, override="1", override_reason=" ")

    assert answer.status_code == 409
    assert answer.json["override_possible"] is True
    assert "contact window" in answer.json["error"]
    assert ticked_without_reason.status_code == 409
    assert calls.posts == 0
    assert attempts(services) == []


def test_it_calls_at_night_when_the_patient_asked_and_audits_it(
    browser: FlaskClient,
    services: Services,
    clock: FakeClock,
    calls: FakeCalls,
    task_id: int,
    riverside: Practice,
    dana: User,
) -> None:
    _at(NIGHT, clock, browser, services, dana)

    answer = press_call(
        browser, task_id, override="1", override_reason="asked in her voicemail for 9 pm"
    )
    play_bridge(browser, calls.placed[0])

    assert answer.status_code == 200, answer.text
    [row] = attempts(services)
    assert (row.status, row.override_reason) == ("completed", "asked in her voicemail for 9 pm")
    actions = _audit_actions(services, riverside.id)
    assert actions == [
        ("placed_call", {"override": True}),
        ("quiet_hours_override", {"override": True}),
    ]
    with services.session() as session:
        entries = audit.entries(session, riverside.id)
    # The agent's free text may carry patient details: it stays on the attempt only.
    assert [entry.call_attempt_id for entry in entries] == [row.id, row.id]


def test_it_checks_the_window_again_when_the_agent_accepts(
    browser: FlaskClient,
    services: Services,
    clock: FakeClock,
    calls: FakeCalls,
    task_id: int,
    dana: User,
) -> None:
    # 19:59 in New York: Call is allowed, but the agent picks up after 20:00.
    _at(datetime(2026, 11, 18, 0, 59, tzinfo=UTC), clock, browser, services, dana)
    press_call(browser, task_id)
    clock.advance(minutes=2)

    answers = play_bridge(browser, calls.placed[0])

    assert "<Dial" not in answers["accept"].text
    [row] = attempts(services)
    assert (row.status, row.dial_status) == ("blocked", None)
    assert row.error is not None and "contact window" in row.error


# --- caps and other refusals -----------------------------------------------------------


def test_it_refuses_a_fourth_attempt_in_a_day_without_override(
    browser: FlaskClient,
    services: Services,
    clock: FakeClock,
    calls: FakeCalls,
    task_id: int,
    riverside: Practice,
) -> None:
    for hours in (5, 3):
        _sent_text(services, riverside.id, ANA, clock() - timedelta(hours=hours))
    press_call(browser, task_id)
    play_bridge(browser, calls.placed[0], dial_status="no-answer")

    refused = press_call(browser, task_id)
    with_override = press_call(browser, task_id, override="1", override_reason="she asked again")

    assert refused.status_code == 409
    assert refused.json["override_possible"] is False
    assert refused.json["error"] == (
        "The patient has had 3 calls or texts in the last 24 hours; the next is possible "
        "from Wed Nov 18 at 5:00 AM EST."
    )
    assert with_override.status_code == 409
    assert calls.posts == 1


def test_it_counts_dialled_calls_in_the_text_cap(
    services: Services,
    clock: FakeClock,
    twilio_messages: FakeMessages,
    task_id: int,
    riverside: Practice,
    dana: User,
) -> None:
    with services.session() as session:
        task = session.get_one(Task, task_id)
        assert task.contact is not None
        for n, hours in enumerate((6, 4, 2)):
            at = clock() - timedelta(hours=hours)
            session.add(
                CallAttempt(
                    practice_id=riverside.id,
                    task_id=task_id,
                    user_id=dana.id,
                    contact_id=task.contact.id,
                    request_key=f"{task_id}:earlier-{n}",
                    # The agent's phone rang out on one: the patient was never dialled.
                    status="no-answer" if n else "agent_missed",
                    dial_status="no-answer" if n else None,
                    created_at=at,
                    updated_at=at,
                )
            )
        session.commit()
        history = delivery.contact_history(
            session, texting_policy(session, riverside.id), task.contact, None, clock()
        )
        assert len(history.attempts) == 2
        session.commit()
    _sent_text(services, riverside.id, ANA, clock() - timedelta(hours=1))
    with services.session() as session:
        task = session.get_one(Task, task_id)
        assert task.contact is not None
        practice = session.get_one(Practice, riverside.id)
        message = delivery.queue_text(
            session,
            practice=practice,
            contact=task.contact,
            task=task,
            template="second_attempt",
            kind="manual",
            dedupe_key="test:manual",
            attempt=2,
            now=clock(),
            base_url=PUBLIC_BASE_URL,
        )
        assert message is not None
        session.commit()
        message_id = message.id

    with services.session() as session:
        outcome = delivery.send_message(
            session, services.gateway, message_id, clock=clock, settings=services.send_settings
        )

    assert outcome == "deferred"
    assert twilio_messages.sent == []
    with services.session() as session:
        deferred = session.get_one(Message, message_id)
    assert deferred.defer_reason is not None and "3 attempts in 24 h" in deferred.defer_reason


def test_it_disables_call_for_a_task_without_a_callback_number(
    browser: FlaskClient, services: Services, calls: FakeCalls, riverside: Practice, dana: User
) -> None:
    no_number = make_task(services, riverside.id, phone=None, name=None)

    panel = _panel(services, no_number, dana)
    answer = press_call(browser, no_number)

    assert (panel.allowed, panel.override_possible) == (False, False)
    assert panel.reason == "This task has no callback number."
    assert answer.status_code == 409
    assert calls.posts == 0


def test_it_refuses_a_second_call_while_one_is_under_way(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int, dana: User
) -> None:
    press_call(browser, task_id)

    again = press_call(browser, task_id)

    assert again.status_code == 409
    assert _panel(services, task_id, dana).allowed is False
    assert calls.posts == 1


def test_it_answers_404_for_another_practices_task_and_call(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    )
    theirs = make_task(services, harbor.id)
    press_call(browser, task_id)
    [mine] = attempts(services)
    with services.session() as session:
        session.execute(
            CallAttempt.__table__.update()
            .where(CallAttempt.id == mine.id)
            .values(practice_id=harbor.id)
        )
        session.commit()

    assert press_call(browser, theirs).status_code == 404
    assert browser.get(f"/calls/{mine.id}.json").status_code == 404
    assert calls.posts == 1


def test_it_sends_a_signed_out_browser_to_sign_in(
    client: FlaskClient, calls: FakeCalls, task_id: int
) -> None:
    answer = client.post(f"/tasks/{task_id}/calls", data={"nonce": new_nonce()})

    assert answer.status_code in (400, 401)
    assert calls.posts == 0


# --- two presses at once ----------------------------------------------------------------

# How long the first request waits at the gate for the second to catch up. With the rows
# locked, the second never arrives (it waits for the first to commit) and this runs out.
RACE_WAIT_SECONDS = 2.0


def _gate_meeting_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make two requests meet at the compliance gate if they can both get there: without
    the locks, each then decides before the other has written anything."""
    barrier = threading.Barrier(2)
    real_check = bridging.check_call

    def check_call(session: Any, **kwargs: Any) -> bridging.Verdict:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=RACE_WAIT_SECONDS)
        return real_check(session, **kwargs)

    monkeypatch.setattr(bridging, "check_call", check_call)


def _race(*work: Callable[[], str]) -> list[str]:
    results: list[str] = []
    errors: list[BaseException] = []

    def run(job: Callable[[], str]) -> None:
        try:
            results.append(job())
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    return sorted(results)


def test_it_places_one_call_when_two_tabs_press_call_at_once(
    services: Services,
    calls: FakeCalls,
    task_id: int,
    riverside: Practice,
    dana: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _gate_meeting_point(monkeypatch)

    def press() -> str:
        # Each tab's form has its own nonce, and each request its own session.
        with services.session() as session:
            try:
                bridging.start_call(
                    session,
                    gateway=services.gateway,
                    base_url=PUBLIC_BASE_URL,
                    task_id=task_id,
                    practice=session.get_one(Practice, riverside.id),
                    user=session.get_one(User, dana.id),
                    nonce=new_nonce(),
                    now=services.clock(),
                )
            except bridging.CallRefused as refused:
                return refused.message
            return "placed"

    results = _race(press, press)

    assert results == ["A call for this task is under way.", "placed"]
    assert len(attempts(services)) == 1
    assert calls.posts == 1


def test_it_dials_one_patient_once_when_two_agents_accept_at_the_cap(
    browser: FlaskClient,
    services: Services,
    clock: FakeClock,
    calls: FakeCalls,
    task_id: int,
    riverside: Practice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two tasks for one patient who has had two texts today: one more attempt is allowed.
    other_task = make_task(services, riverside.id, category="referral")
    for hours in (5, 3):
        _sent_text(services, riverside.id, ANA, clock() - timedelta(hours=hours))
    for task in (task_id, other_task):
        assert press_call(browser, task).status_code == 200
    for placed in calls.placed:
        post_twilio(
            browser,
            bridge_path(placed.url),
            leg(placed.sid, DANA, RIVERSIDE_NUMBER, CallStatus="in-progress"),
        )
    _gate_meeting_point(monkeypatch)

    def accept(placed: Placed) -> Callable[[], str]:
        def job() -> str:
            attempt_id = int(placed.url.rsplit("=", 1)[1])
            params = leg(placed.sid, DANA, RIVERSIDE_NUMBER, CallStatus="in-progress", Digits="1")
            with services.session() as session:
                twiml = bridging.agent_pressed(
                    session, attempt_id, params, base_url=PUBLIC_BASE_URL, now=clock()
                )
            return "dialled" if "<Dial" in twiml else "not dialled"

        return job

    results = _race(*(accept(placed) for placed in calls.placed))

    assert results == ["dialled", "not dialled"]
    statuses = sorted(row.status for row in attempts(services))
    assert statuses == ["blocked", "patient_ringing"]


# --- the provider's errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "wording"),
    [
        (("error", 429, 20429), "failed", "Twilio is busy"),
        (("error", 503, 20503), "failed", "Twilio is busy"),
        (("error", 400, 21211), "failed", "Twilio refused the call (error 21211)"),
        (("error", 500, 20500), "unknown", "may or may not have been placed"),
        (("timeout",), "unknown", "may or may not have been placed"),
    ],
)
def test_it_tells_the_agent_what_became_of_a_call_twilio_did_not_take(
    browser: FlaskClient,
    services: Services,
    calls: FakeCalls,
    task_id: int,
    fault: tuple[Any, ...],
    status: str,
    wording: str,
) -> None:
    calls.faults.append(fault)

    answer = press_call(browser, task_id)

    [row] = attempts(services)
    assert (row.status, row.agent_call_sid) == (status, None)
    assert row.error is not None and wording in row.error
    assert answer.json["attempt"]["error"] == row.error
    assert calls.posts == 1


def test_it_lets_the_agent_try_again_after_a_refused_call(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    calls.faults.append(("error", 429, 20429))
    press_call(browser, task_id)

    again = press_call(browser, task_id)

    assert again.status_code == 200
    assert [row.status for row in attempts(services)] == ["failed", "agent_ringing"]
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result", "call_placed"]


def test_it_adopts_a_call_whose_answer_was_lost_when_twilio_calls_back(
    browser: FlaskClient, services: Services, calls: FakeCalls, task_id: int
) -> None:
    calls.faults.append(("timeout",))
    press_call(browser, task_id)
    [row] = attempts(services)

    # Twilio had placed it after all: its webhooks carry a sid we never saw.
    lost = Placed(
        sid="CA" + "5" * 32,
        form={
            "To": [DANA],
            "From": [RIVERSIDE_NUMBER],
            "Url": [f"{PUBLIC_BASE_URL}/twilio/voice/bridge/agent?a={row.id}"],
        },
    )
    play_bridge(browser, lost)

    done = attempt(services, row.id)
    assert (done.status, done.agent_call_sid) == ("completed", lost.sid)


# --- development: the console gateway and "Simulate answer" ---------------------------


@pytest.fixture
def dev_browser(services: Services, dana: User) -> FlaskClient:
    """`telephony run` without Twilio credentials: the console gateway, and /dev."""
    services.settings = dataclasses.replace(
        services.settings, twilio_account_sid=None, twilio_auth_token=None
    )
    app = create_app(services=services)
    app.config["TESTING"] = True
    client = app.test_client()
    sign_in_as(client, services, dana)
    return client


def test_it_shows_the_console_call_and_plays_the_bridge_through(
    dev_browser: FlaskClient, services: Services, task_id: int
) -> None:
    press_call(dev_browser, task_id)
    [row] = attempts(services)
    assert row.status == "agent_ringing"
    assert isinstance(services.gateway, ConsoleGateway)
    [item] = services.gateway.outbox()
    assert (item.kind, item.sid, item.to) == ("call", row.agent_call_sid, DANA)

    page = dev_browser.get("/dev/outbox").get_data(as_text=True)
    listed = dev_browser.get("/dev/outbox?format=json").get_json()["calls"]
    played = dev_browser.post(f"/dev/calls/{row.id}/answer", data={**CSRF, "outcome": "completed"})

    assert "Simulate answer</button>" in page and "+*******0142" in page and DANA not in page
    assert [(call["id"], call["can_answer"]) for call in listed] == [(row.id, True)]
    assert played.status_code == 302
    done = attempt(services, row.id)
    assert (done.status, done.dial_status, done.duration) == ("completed", "completed", 47)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]
    status = dev_browser.get(f"/calls/{row.id}.json", headers={"X-Background": "1"}).get_json()
    assert (status["status"], status["ended"]) == ("completed", True)
    assert "Simulate answer</button>" not in dev_browser.get("/dev/outbox").get_data(as_text=True)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("no-key", "agent_missed"), ("no-answer", "no-answer"), ("busy", "busy")],
)
def test_it_simulates_the_other_answers(
    dev_browser: FlaskClient, services: Services, task_id: int, outcome: str, status: str
) -> None:
    press_call(dev_browser, task_id)
    [row] = attempts(services)

    dev_browser.post(f"/dev/calls/{row.id}/answer", data={**CSRF, "outcome": outcome})

    assert attempt(services, row.id).status == status


def test_it_simulates_only_for_this_browser_and_this_machine(
    dev_browser: FlaskClient, services: Services, task_id: int
) -> None:
    press_call(dev_browser, task_id)
    [row] = attempts(services)
    path = f"/dev/calls/{row.id}/answer"

    without_token = dev_browser.post(path, data={"outcome": "completed"})
    from_elsewhere = dev_browser.post(
        path, data={**CSRF, "outcome": "completed"}, environ_base={"REMOTE_ADDR": "203.0.113.9"}
    )

    assert (without_token.status_code, from_elsewhere.status_code) == (400, 404)
    assert attempt(services, row.id).status == "agent_ringing"


# --- the panel on the task page --------------------------------------------------------


def _render_panel(app: Flask, services: Services, task_id: int, user: User) -> str:
    panel = _panel(services, task_id, user)
    with services.session() as session:
        task = session.get_one(Task, task_id)
    with app.test_request_context(f"/tasks/{task_id}"):
        return render_template("workspace/_call_panel.html", task=task, call_panel=panel)


def test_it_renders_a_call_form_with_a_fresh_nonce(
    app: Flask, services: Services, task_id: int, dana: User
) -> None:
    first = _render_panel(app, services, task_id, dana)
    second = _render_panel(app, services, task_id, dana)

    assert f'action="/tasks/{task_id}/calls"' in first
    assert 'name="csrf_token"' in first
    nonces = [re.findall(r'name="nonce" value="([^"]+)"', page) for page in (first, second)]
    assert len(nonces[0]) == 1 and nonces[0] != nonces[1]
    assert "+*******0142" in first and DANA not in first
    assert "data-status-url" not in first
    assert 'name="override"' not in first


def test_it_renders_the_override_and_the_live_status(
    app: Flask,
    browser: FlaskClient,
    services: Services,
    clock: FakeClock,
    calls: FakeCalls,
    task_id: int,
    dana: User,
) -> None:
    press_call(browser, task_id)
    play_bridge(browser, calls.placed[0], dial_status="busy")
    clock.now = NIGHT

    page = _render_panel(app, services, task_id, dana)

    assert 'data-status-url="/calls/1.json"' in page
    assert 'data-ended="true"' in page and "Line busy" in page
    assert 'name="override"' in page and 'name="override_reason"' in page
    assert "contact window" in page


def test_it_shows_the_panel_on_the_task_page(
    browser: FlaskClient, calls: FakeCalls, task_id: int
) -> None:
    press_call(browser, task_id)

    page = browser.get(f"/tasks/{task_id}")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-testid="call-panel"' in html
    assert 'data-status-url="/calls/1.json"' in html
    assert "calls.js" in html
    assert "Simulate the answer" not in html  # Twilio credentials are set


def test_it_points_a_developer_at_the_call_simulator(
    dev_browser: FlaskClient, services: Services, task_id: int, dana: User
) -> None:
    page = dev_browser.get(f"/tasks/{task_id}").get_data(as_text=True)

    assert 'href="/dev/outbox"' in page and "Simulate the answer" in page
