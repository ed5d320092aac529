"""The task page: context, call script and timeline; the outcome form over HTTP."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from telephony_service.models import AuditEntry, Task, TaskEvent, User
from telephony_service.wiring import Services
from tests.conftest import FakeClock
from tests.helpers import (
    ACCOUNT_SID,
    ANA,
    HARBOR_NUMBER,
    call_ended,
    make_practice,
    new_sid,
    post_twilio,
    recording_ready,
    run_jobs,
    tasks_of,
    transcription_ready,
)
from tests.queue_support import make_task
from tests.sms_support import FakeMessages
from tests.workspace_support import CSRF, make_user, sign_in_as

ESCALATION = (
    "I can help with the scheduling side. For clinical symptoms or medical advice, "
    "I&#39;ll route your question to the appropriate care team."
)
GOOD_NOTE = "Booked a new-patient visit with Dr. Ortiz for Tuesday 9:30; forms texted."
BACKGROUND = {"X-Background": "1"}


@pytest.fixture
def riverside(services: Services) -> int:
    return make_practice(services).id


@pytest.fixture
def alice(services: Services, riverside: int) -> User:
    return make_user(services, riverside)


@pytest.fixture
def browser(client: FlaskClient, services: Services, alice: User) -> FlaskClient:
    sign_in_as(client, services, alice)
    return client


@pytest.fixture
def voicemail_task(
    client: FlaskClient,
    services: Services,
    riverside: int,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
) -> int:
    """A voicemail as Twilio delivers it: call ended, recording, transcription."""
    call_sid, recording_sid = new_sid("CA"), new_sid("RE")
    call_ended(client, call_sid)
    recording_ready(client, call_sid, recording_sid)
    transcription_ready(client, call_sid, recording_sid, "Hi, I need to book a checkup.")
    run_jobs(services, worker_redis)
    [task] = tasks_of(services, riverside)
    assert task.category == "voicemail"
    return task.id


def outcome_form(nonce: str | None = None) -> dict[str, str]:
    """What every rendering of the outcome form carries: the CSRF token and its own nonce."""
    return {**CSRF, "nonce": nonce or secrets.token_urlsafe(12)}


def _task(services: Services, task_id: int) -> Task:
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        session.expunge(task)
        return task


def _audit(services: Services, action: str) -> list[AuditEntry]:
    with services.session() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


def _events(services: Services, task_id: int, kind: str) -> list[TaskEvent]:
    with services.session() as session:
        return list(
            session.scalars(
                select(TaskEvent).where(TaskEvent.task_id == task_id, TaskEvent.kind == kind)
            )
        )


# --- the page ----------------------------------------------------------------------------


def test_it_shows_a_voicemail_task_with_its_script_and_timeline(
    browser: FlaskClient, services: Services, voicemail_task: int, alice: User
) -> None:
    response = browser.get(f"/tasks/{voicemail_task}")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'data-testid="patient-phone">(202) 555-0143<' in html
    # The call script for the category, filled in: who, from where, about what, since when.
    assert (
        "Hi, this is Alice calling from Riverside Family Medicine. I&#39;m following up on "
        "your voicemail from this morning so we can help you find the right visit time."
    ) in html
    assert ESCALATION in html
    assert "date of birth" in html
    for blank in ("day", "time", "provider"):
        assert f'data-blank="{blank}"' in html
    assert "{{" not in html and "[[" not in html
    # The timeline: the voicemail to play, its transcription, the text-back and its status.
    recording = re.search(r'<audio controls preload="none" src="([^"]+)"', html)
    assert recording is not None
    assert recording.group(1).startswith(
        f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
    )
    assert recording.group(1).endswith(".mp3")
    assert "Hi, I need to book a checkup." in html
    assert "Text: We missed your call" in html
    assert 'data-testid="text-status">Queued<' in html
    assert 'data-testid="task-status">New<' in html
    [viewed] = _audit(services, "viewed_task")
    assert (viewed.user_id, viewed.task_id) == (alice.id, voicemail_task)


def test_it_shows_replies_and_the_opt_out_history(
    browser: FlaskClient, services: Services, voicemail_task: int, clock: FakeClock
) -> None:
    clock.advance(minutes=2)
    for body in ("Can you call after 3?", "STOP"):
        post_twilio(
            browser,
            "/twilio/sms/incoming",
            {
                "AccountSid": ACCOUNT_SID,
                "MessageSid": new_sid("SM"),
                "From": ANA,
                "To": "+16175550100",
                "Body": body,
            },
        )
        run_jobs(services, services.redis)

    html = browser.get(f"/tasks/{voicemail_task}").get_data(as_text=True)

    assert 'data-testid="reply">Can you call after 3?<' in html
    assert "Opted out of texts" in html
    assert "Consent history (1)" in html
    assert "Automated texts stopped" in html


def test_it_flags_a_task_without_a_callback_number(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside, phone=None)

    html = browser.get(f"/tasks/{task_id}").get_data(as_text=True)

    assert 'data-testid="no-callback-number"' in html
    assert 'data-testid="patient-phone"' not in html


def test_it_marks_an_overdue_task(browser: FlaskClient, services: Services, riverside: int) -> None:
    overdue = make_task(services, riverside, due_in=-timedelta(minutes=20))
    on_time = make_task(services, riverside, due_in=timedelta(minutes=20), phone="+13125550188")

    assert "overdue by 20 min" in browser.get(f"/tasks/{overdue}").get_data(as_text=True)
    assert 'data-testid="overdue"' not in browser.get(f"/tasks/{on_time}").get_data(as_text=True)


def test_it_answers_404_for_another_practices_task(
    browser: FlaskClient, services: Services
) -> None:
    harbor = make_practice(services, name="Harbor Pediatrics", number=HARBOR_NUMBER)
    theirs = make_task(services, harbor.id)

    assert browser.get(f"/tasks/{theirs}").status_code == 404
    assert browser.get(f"/tasks/{theirs}/live", headers=BACKGROUND).status_code == 404
    response = browser.post(
        f"/tasks/{theirs}/outcome",
        data={**outcome_form(), "disposition": "scheduled", "note": GOOD_NOTE},
    )
    assert response.status_code == 404
    assert _task(services, theirs).status == "new"
    assert _audit(services, "viewed_task") == []


def test_it_sends_a_signed_out_browser_to_sign_in(
    client: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)

    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert client.get(f"/tasks/{task_id}/live", headers=BACKGROUND).status_code == 401


def test_it_refreshes_the_status_and_timeline_in_the_background(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)
    browser.post(
        f"/tasks/{task_id}/outcome",
        data={**outcome_form(), "disposition": "scheduled", "note": GOOD_NOTE},
    )

    response = browser.get(f"/tasks/{task_id}/live", headers=BACKGROUND)

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "scheduled"
    assert 'data-testid="task-status">Scheduled<' in body["html"]
    assert GOOD_NOTE in body["html"]
    # The page's own poll is not somebody opening the task.
    assert _audit(services, "viewed_task") == []


# --- the outcome form --------------------------------------------------------------------


def test_it_refuses_a_low_information_note_and_changes_nothing(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)

    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "no_answer",
            "note": "called pt",
            "next_action_at": "",
        },
    )

    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Say what happened and what comes next" in html
    assert 'data-testid="error-next"' in html
    # The form keeps what was typed.
    assert ">called pt</textarea>" in html
    assert re.search(r'value="no_answer" required\s+checked', html)
    task = _task(services, task_id)
    assert (task.status, task.owner_id) == ("new", None)
    assert _events(services, task_id, "note") == []
    assert _audit(services, "changed_task") == []


def test_it_records_a_reached_outcome_and_goes_back_to_the_queue(
    browser: FlaskClient, services: Services, riverside: int, alice: User
) -> None:
    task_id = make_task(services, riverside)

    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={**outcome_form("form-1"), "disposition": "scheduled", "note": GOOD_NOTE},
    )

    assert response.status_code == 303
    assert response.headers["Location"] == "/queue"
    task = _task(services, task_id)
    assert task.status == "scheduled"
    assert task.owner_id == alice.id
    assert task.cadence_stopped_at is not None
    [note] = _events(services, task_id, "note")
    assert note.text == GOOD_NOTE
    assert note.data == {"disposition": "scheduled", "user_id": alice.id, "nonce": "form-1"}
    [changed] = _audit(services, "changed_task")
    assert changed.data == {"disposition": "scheduled", "from": "new", "to": "scheduled"}
    assert GOOD_NOTE not in str(changed.data)
    queue = browser.get("/queue").get_data(as_text=True)
    assert f"Task #{task_id}: Scheduled recorded" in queue


def test_it_stores_the_next_action_time_typed_on_the_practice_clock_in_utc(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)

    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "left_voicemail",
            "note": "Left voicemail re: referral scheduling; second attempt set for tomorrow.",
            # 09:00 in New York on Wednesday 18 November 2026 (EST, UTC-5).
            "next_action_at": "2026-11-18T09:00",
        },
    )

    assert response.status_code == 303
    task = _task(services, task_id)
    assert task.status == "second_attempt_scheduled"
    assert task.next_action == "call_back"
    assert task.next_action_at is not None
    assert task.next_action_at.isoformat() == "2026-11-18T14:00:00+00:00"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Set when the next attempt should happen."),
        ("2026-11-17T09:59", "Pick a time in the future."),
        ("tomorrow", "Enter a date and a time."),
    ],
)
def test_it_requires_a_future_next_action_time_where_the_outcome_needs_one(
    browser: FlaskClient, services: Services, riverside: int, value: str, message: str
) -> None:
    task_id = make_task(services, riverside)

    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "no_answer",
            "note": GOOD_NOTE,
            "next_action_at": value,
        },
    )

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _task(services, task_id).status == "new"


def test_it_moves_an_escalation_to_the_clinicians_and_only_they_can_close_it(
    browser: FlaskClient, services: Services, riverside: int, client: FlaskClient, app
) -> None:
    task_id = make_task(services, riverside)
    escalated = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "needs_clinical_escalation",
            "note": "Patient asks whether the new rash needs a visit; routed to the nurses.",
        },
    )
    assert escalated.status_code == 303
    task = _task(services, task_id)
    assert (task.status, task.owner_id) == ("needs_clinical_escalation", None)

    page = browser.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'value="resolved"' not in page
    assert 'value="wrong_number"' not in page
    assert 'data-testid="escalated-notice"' in page

    refused = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "resolved",
            "note": "Told the patient it is nothing to worry.",
        },
    )
    assert refused.status_code == 403
    assert "Only clinical staff can move a clinical escalation on or close it" in refused.get_data(
        as_text=True
    )
    assert _task(services, task_id).status == "needs_clinical_escalation"

    nurse = make_user(
        services, riverside, email="nina@clinic.example", role="clinician", name="Nina"
    )
    clinician = app.test_client()
    sign_in_as(clinician, services, nurse)
    assert 'value="resolved"' in clinician.get(f"/tasks/{task_id}").get_data(as_text=True)
    closed = clinician.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "resolved",
            "note": "Spoke with patient; rash advice given, no visit needed.",
        },
    )
    assert closed.status_code == 303
    task = _task(services, task_id)
    assert (task.status, task.owner_id) == ("closed_resolved", nurse.id)


def test_it_refuses_an_outcome_without_the_csrf_token(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)

    response = browser.post(
        f"/tasks/{task_id}/outcome", data={"disposition": "scheduled", "note": GOOD_NOTE}
    )

    assert response.status_code == 400
    assert _task(services, task_id).status == "new"


def test_it_says_a_closed_task_takes_no_outcome(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside, status="closed_resolved")

    assert 'data-testid="outcome-closed"' in browser.get(f"/tasks/{task_id}").get_data(as_text=True)
    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={**outcome_form(), "disposition": "scheduled", "note": GOOD_NOTE},
    )
    assert response.status_code == 422
    assert "This task is closed" in response.get_data(as_text=True)


def _escalate(browser: FlaskClient, task_id: int) -> None:
    escalated = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "needs_clinical_escalation",
            "note": "Patient asks whether the new rash needs a visit; routed to the nurses.",
        },
    )
    assert escalated.status_code == 303


def test_it_refuses_an_agent_the_two_step_close_of_an_escalation(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)
    _escalate(browser, task_id)

    page = browser.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert re.findall(r'name="disposition" value="([a-z_]+)"', page) == [
        "left_voicemail",
        "no_answer",
    ]
    assert 'name="next_action_at"' not in page

    # "Scheduled" (open to anyone before) and then "resolved" would close it: neither goes.
    for disposition in ("scheduled", "resolved"):
        refused = browser.post(
            f"/tasks/{task_id}/outcome",
            data={**outcome_form(), "disposition": disposition, "note": GOOD_NOTE},
        )
        assert refused.status_code == 403
        assert "Only clinical staff" in refused.get_data(as_text=True)
    task = _task(services, task_id)
    assert (task.status, task.owner_id, task.next_action) == (
        "needs_clinical_escalation",
        None,
        "clinical_review",
    )
    assert len(_events(services, task_id, "note")) == 1


def test_it_records_an_agents_missed_call_on_an_escalation_as_a_note_only(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)
    _escalate(browser, task_id)

    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={
            **outcome_form(),
            "disposition": "no_answer",
            "note": "Called back about the rash question, no answer; the nurses still have it.",
        },
    )

    assert response.status_code == 303
    task = _task(services, task_id)
    # Still in the clinicians' take-next, which only takes unowned tasks.
    assert (task.status, task.owner_id, task.next_action) == (
        "needs_clinical_escalation",
        None,
        "clinical_review",
    )
    assert [
        note.data["disposition"] for note in _events(services, task_id, "note") if note.data
    ] == [
        "needs_clinical_escalation",
        "no_answer",
    ]


def test_it_records_one_outcome_for_a_form_sent_twice(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)
    page = browser.get(f"/tasks/{task_id}").get_data(as_text=True)
    nonce = re.search(r'id="outcome-form".*?name="nonce" value="([^"]+)"', page, re.S)
    assert nonce is not None
    sent = {**CSRF, "nonce": nonce.group(1), "disposition": "scheduled", "note": GOOD_NOTE}

    first = browser.post(f"/tasks/{task_id}/outcome", data=sent)
    again = browser.post(f"/tasks/{task_id}/outcome", data=sent)

    assert (first.status_code, again.status_code) == (303, 303)
    assert len(_events(services, task_id, "note")) == 1
    assert len(_audit(services, "changed_task")) == 1
    assert "this outcome was already recorded" in browser.get("/queue").get_data(as_text=True)
    # The next rendering carries a new nonce.
    assert nonce.group(1) not in browser.get(f"/tasks/{task_id}").get_data(as_text=True)


def test_it_refuses_an_outcome_without_its_nonce(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    task_id = make_task(services, riverside)

    response = browser.post(
        f"/tasks/{task_id}/outcome",
        data={**CSRF, "disposition": "scheduled", "note": GOOD_NOTE},
    )

    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    assert _task(services, task_id).status == "new"
    assert _events(services, task_id, "note") == []
