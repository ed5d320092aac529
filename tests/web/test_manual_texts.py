"""The task page's "Send text": approved templates only, through the compliance gate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from telephony_service.models import AuditEntry, Contact, Message, TaskEvent, User
from telephony_service.services import consent
from telephony_service.wiring import Services
from tests.conftest import FakeClock
from tests.helpers import ANA, HARBOR_NUMBER, make_practice, run_jobs
from tests.queue_support import make_task
from tests.sms_support import FakeMessages, messages
from tests.workspace_support import CSRF, make_user, sign_in_as


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
def task_id(services: Services, riverside: int) -> int:
    return make_task(services, riverside, phone=ANA)


def send(browser: FlaskClient, task_id: int, template: str, nonce: str = "n-1") -> str:
    response = browser.post(
        f"/tasks/{task_id}/texts",
        data={**CSRF, "template": template, "nonce": nonce},
        follow_redirects=True,
    )
    assert response.status_code == 200
    return response.get_data(as_text=True)


def audit_rows(services: Services) -> list[AuditEntry]:
    with services.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == "sent_text")))


def test_it_offers_the_approved_templates_with_a_preview(
    browser: FlaskClient, task_id: int
) -> None:
    html = browser.get(f"/tasks/{task_id}").get_data(as_text=True)

    for template in ("text_back", "second_attempt", "final_message"):
        assert f'name="template" value="{template}"' in html
        assert f'data-testid="sms-preview-{template}">Riverside Family Medicine:' in html
    for keyword_reply in ("help_reply", "opt_out_confirmation", "opt_in_confirmation"):
        assert f'value="{keyword_reply}"' not in html


def test_it_sends_a_text_the_gate_allows_now(
    browser: FlaskClient,
    services: Services,
    task_id: int,
    alice: User,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
) -> None:
    html = send(browser, task_id, "second_attempt")

    assert "Text sent to (202) 555-0143." in html
    run_jobs(services, worker_redis)
    [sent] = twilio_messages.to(ANA)
    assert sent.body.startswith("Riverside Family Medicine: we tried to call you back")
    [message] = messages(services)
    assert (message.kind, message.purpose, message.status) == ("manual", "second_attempt", "queued")
    [entry] = audit_rows(services)
    assert (entry.user_id, entry.task_id) == (alice.id, task_id)
    assert entry.data == {"template": "second_attempt"}
    assert 'data-testid="text-status">Queued<' in browser.get(f"/tasks/{task_id}").get_data(
        as_text=True
    )


def test_it_defers_a_text_at_night_and_says_when_it_will_go(
    browser: FlaskClient,
    services: Services,
    task_id: int,
    alice: User,
    clock: FakeClock,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
) -> None:
    # Tuesday 21:00 in Washington, DC: after the 20:00 end of the legal texting window.
    clock.now = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)
    sign_in_as(browser, services, alice)  # the evening shift

    html = send(browser, task_id, "text_back")

    assert (
        "Deferred: outside the patient&#39;s texting hours; it will go at Wed 8:00 AM "
        "(patient&#39;s time)"
    ) in html
    # ... and its row on the timeline says so too.
    assert 'data-testid="text-status">Deferred until' in html
    [message] = messages(services)
    assert message.status == "pending"
    assert message.not_before == datetime(2026, 11, 18, 13, 0, tzinfo=UTC)
    run_jobs(services, worker_redis)
    assert twilio_messages.sent == []


def test_it_does_not_send_to_a_patient_who_opted_out(
    browser: FlaskClient,
    services: Services,
    task_id: int,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
) -> None:
    with services.session() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == ANA)).one()
        consent.opt_out(session, contact, at=services.clock(), source="keyword")
        session.commit()

    html = send(browser, task_id, "text_back")

    assert "Not sent: the patient opted out of texts" in html
    assert 'data-testid="text-status">Not sent (blocked)' in html
    [message] = messages(services)
    assert message.status == "blocked"
    run_jobs(services, worker_redis)
    assert twilio_messages.sent == []
    with services.session() as session:
        kinds = session.scalars(select(TaskEvent.kind).where(TaskEvent.task_id == task_id)).all()
    assert "text_blocked" in kinds
    assert audit_rows(services)[0].data == {"template": "text_back"}


def test_it_refuses_a_template_agents_may_not_send(
    browser: FlaskClient, services: Services, task_id: int
) -> None:
    response = browser.post(
        f"/tasks/{task_id}/texts", data={**CSRF, "template": "help_reply", "nonce": "n-1"}
    )

    assert response.status_code == 422
    assert messages(services) == []


def test_it_sends_one_text_for_a_double_press(
    browser: FlaskClient, services: Services, task_id: int, twilio_messages: FakeMessages
) -> None:
    send(browser, task_id, "text_back", nonce="same")
    html = send(browser, task_id, "text_back", nonce="same")

    assert "This text was already sent" in html
    assert len(messages(services)) == 1


def test_it_refuses_a_send_without_its_nonce(
    browser: FlaskClient, services: Services, task_id: int
) -> None:
    # A fresh nonce made up here would let a double press send two texts.
    for data in (
        {**CSRF, "template": "text_back"},
        {**CSRF, "template": "text_back", "nonce": " "},
    ):
        response = browser.post(f"/tasks/{task_id}/texts", data=data)

        assert response.status_code == 400
        assert "This form has expired" in response.get_data(as_text=True)
    assert messages(services) == []
    assert audit_rows(services) == []


def test_it_says_why_a_closed_task_or_a_task_without_a_number_gets_no_text(
    browser: FlaskClient, services: Services, riverside: int
) -> None:
    closed = make_task(services, riverside, status="closed_resolved")
    anonymous = make_task(services, riverside, phone=None)

    assert "Not sent: the task is closed" in send(browser, closed, "text_back")
    assert "Not sent: this task has no callback number" in send(browser, anonymous, "text_back")
    assert messages(services) == []


def test_it_answers_404_for_another_practices_task(
    browser: FlaskClient, services: Services
) -> None:
    harbor = make_practice(services, name="Harbor Pediatrics", number=HARBOR_NUMBER)
    theirs = make_task(services, harbor.id)

    response = browser.post(
        f"/tasks/{theirs}/texts", data={**CSRF, "template": "text_back", "nonce": "n-1"}
    )

    assert response.status_code == 404
    assert messages(services) == []
    assert audit_rows(services) == []


def test_it_refuses_a_send_without_the_csrf_token(
    browser: FlaskClient, services: Services, task_id: int
) -> None:
    response = browser.post(f"/tasks/{task_id}/texts", data={"template": "text_back"})

    assert response.status_code == 400
    assert messages(services) == []


def test_it_needs_a_signed_in_user(client: FlaskClient, services: Services, task_id: int) -> None:
    with client.session_transaction() as cookie:
        cookie["csrf"] = "test-csrf-token"

    response = client.post(f"/tasks/{task_id}/texts", data={**CSRF, "template": "text_back"})

    assert response.status_code == 401
    assert messages(services) == []


def test_it_keeps_message_bodies_out_of_the_audit_log(
    browser: FlaskClient, services: Services, task_id: int, twilio_messages: FakeMessages
) -> None:
    send(browser, task_id, "final_message")

    [entry] = audit_rows(services)
    [message] = messages(services)
    assert message.body not in str(entry.data)
    with services.session() as session:
        assert session.scalar(select(Message.kind)) == "manual"
