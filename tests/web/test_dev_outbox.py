"""/dev/outbox: the texts and calls the console gateway did not send, for a signed-in
developer to read, of their own practice only."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from telephony_service.models import CallAttempt, Contact, Message, Practice
from telephony_service.web import create_app
from tests.helpers import ANA, BEN, HARBOR_NUMBER, make_practice
from tests.queue_support import make_task
from tests.workspace_support import CSRF, make_user, sign_in_as


@pytest.fixture
def riverside(services) -> Practice:
    return make_practice(services)


@pytest.fixture
def harbor(services) -> Practice:
    return make_practice(services, name="Harbor Pediatrics", number=HARBOR_NUMBER)


@pytest.fixture
def anonymous(services) -> FlaskClient:
    """The app as `telephony run` builds it on a machine without Twilio credentials."""
    services.settings = dataclasses.replace(
        services.settings, twilio_account_sid=None, twilio_auth_token=None
    )
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture
def dev_client(services, anonymous, riverside) -> FlaskClient:
    """A developer signed in at Riverside."""
    sign_in_as(anonymous, services, make_user(services, riverside.id))
    return anonymous


def ringing_call(services, practice_id: int, sid: str) -> int:
    """A click-to-call the console gateway "placed": the agent's phone is ringing."""
    task_id = make_task(services, practice_id)
    now = services.clock()
    with services.session() as session:
        attempt = CallAttempt(
            practice_id=practice_id,
            task_id=task_id,
            request_key=f"test:{sid}",
            status="agent_ringing",
            agent_call_sid=sid,
            created_at=now,
            updated_at=now,
        )
        session.add(attempt)
        session.commit()
        return attempt.id


def status_of(services, attempt_id: int) -> str:
    with services.session() as session:
        return session.get_one(CallAttempt, attempt_id).status


def write_text(services, practice_id: int, phone: str, body: str, *, ago: timedelta, **extra):
    now = services.clock() - ago
    with services.session() as session:
        contact = session.scalar(
            select(Contact).where(Contact.practice_id == practice_id, Contact.phone == phone)
        )
        if contact is None:
            contact = Contact(practice_id=practice_id, phone=phone, created_at=now)
            session.add(contact)
            session.flush()
        fields = {
            "purpose": "text_back",
            "kind": "automated",
            "status": "pending",
            "not_before": now,
            **extra,
        }
        session.add(
            Message(
                practice_id=practice_id,
                contact_id=contact.id,
                dedupe_key=f"test:{phone}:{body}",
                attempt=1,
                to_number=phone,
                from_number="+16175550100",
                body=body,
                segments=1,
                tries=0,
                created_at=now,
                updated_at=now,
                **fields,
            )
        )
        session.commit()


def test_it_lists_texts_newest_first_with_masked_numbers_and_full_bodies(
    services, dev_client, riverside
):
    practice = riverside
    write_text(
        services,
        practice.id,
        ANA,
        "Riverside Family Medicine: sorry we missed your call.",
        ago=timedelta(hours=1),
        status="delivered",
    )
    write_text(
        services,
        practice.id,
        BEN,
        "Riverside Family Medicine: we will call you back.",
        ago=timedelta(0),
        defer_reason="quiet hours for the patient until Wed 18 Nov 08:00",
        not_before=services.clock() + timedelta(hours=12),
    )

    response = dev_client.get("/dev/outbox")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert page.index("we will call you back") < page.index("sorry we missed your call")
    assert "+*******0143" in page and "+*******0188" in page
    assert ANA not in page and "2025550143" not in page
    assert "Riverside Family Medicine" in page
    assert "10:00 EST" in page  # 15:00 UTC in the practice's own zone
    assert "quiet hours for the patient until Wed 18 Nov 08:00" in page
    assert "delivered" in page


def test_it_escapes_what_it_shows(services, anonymous):
    practice = make_practice(services, name="Smith & <Sons>")
    sign_in_as(anonymous, services, make_user(services, practice.id))
    dev_client = anonymous
    write_text(services, practice.id, ANA, "<script>alert(1)</script>", ago=timedelta(0))
    page = dev_client.get("/dev/outbox").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Smith &amp; &lt;Sons&gt;" in page


def test_it_answers_json(services, dev_client, riverside):
    practice = riverside
    write_text(
        services,
        practice.id,
        ANA,
        "Riverside Family Medicine: please call us.",
        ago=timedelta(0),
        status="failed",
        error_code=30006,
        error="landline or unreachable carrier",
    )
    response = dev_client.get("/dev/outbox?format=json")
    assert response.status_code == 200
    [text] = response.get_json()["messages"]
    assert text["to"] == "+*******0143"
    assert text["body"] == "Riverside Family Medicine: please call us."
    assert text["practice"] == "Riverside Family Medicine"
    assert text["created_at"] == "2026-11-17T10:00:00-05:00"
    assert (text["purpose"], text["kind"], text["status"]) == ("text_back", "automated", "failed")
    assert text["error"] == "30006 landline or unreachable carrier"


def test_it_shows_the_latest_hundred(services, dev_client, riverside):
    practice = riverside
    for minutes in range(105):
        write_text(services, practice.id, ANA, f"text {minutes}", ago=timedelta(minutes=minutes))
    texts = dev_client.get("/dev/outbox?format=json").get_json()["messages"]
    assert len(texts) == 100
    assert texts[0]["body"] == "text 0" and texts[-1]["body"] == "text 99"


def test_it_is_not_there_when_twilio_credentials_are_set(services, client):
    make_practice(services)
    assert services.settings.twilio_enabled
    assert client.get("/dev/outbox").status_code == 404
    assert client.get("/dev/outbox?format=json").status_code == 404


def test_it_hides_the_outbox_from_other_machines(services, dev_client, riverside):
    attempt = ringing_call(services, riverside.id, "CA" + "1" * 32)
    elsewhere = {"REMOTE_ADDR": "203.0.113.9"}

    page = dev_client.get("/dev/outbox", environ_base=elsewhere)
    played = dev_client.post(
        f"/dev/calls/{attempt}/answer", data={**CSRF, "outcome": "busy"}, environ_base=elsewhere
    )

    assert (page.status_code, played.status_code) == (404, 404)
    assert status_of(services, attempt) == "agent_ringing"


def test_it_sends_a_developer_who_is_not_signed_in_to_sign_in(services, anonymous, riverside):
    write_text(services, riverside.id, ANA, "Riverside: we will call you back.", ago=timedelta(0))
    attempt = ringing_call(services, riverside.id, "CA" + "1" * 32)

    page = anonymous.get("/dev/outbox")
    listed = anonymous.get("/dev/outbox?format=json", headers={"X-Background": "1"})
    with anonymous.session_transaction() as cookie:
        cookie["csrf"] = "test-csrf-token"  # a token alone is not a sign-in
    played = anonymous.post(f"/dev/calls/{attempt}/answer", data={**CSRF, "outcome": "busy"})

    assert page.status_code == 302
    assert page.headers["Location"].startswith("/login?next=/dev/outbox")
    assert listed.status_code == 401
    assert played.status_code == 401
    assert status_of(services, attempt) == "agent_ringing"


def test_it_shows_only_the_signed_in_users_practice(services, dev_client, riverside, harbor):
    write_text(services, riverside.id, ANA, "Riverside: we will call you back.", ago=timedelta(0))
    write_text(services, harbor.id, BEN, "Harbor: we will call you back.", ago=timedelta(0))
    ours = ringing_call(services, riverside.id, "CA" + "1" * 32)
    ringing_call(services, harbor.id, "CA" + "2" * 32)

    listed = dev_client.get("/dev/outbox?format=json").get_json()
    page = dev_client.get("/dev/outbox").get_data(as_text=True)

    assert [text["body"] for text in listed["messages"]] == ["Riverside: we will call you back."]
    assert [call["id"] for call in listed["calls"]] == [ours]
    assert "Harbor" not in page


def test_it_simulates_no_answer_to_another_practices_call(services, dev_client, harbor):
    theirs = ringing_call(services, harbor.id, "CA" + "2" * 32)

    response = dev_client.post(f"/dev/calls/{theirs}/answer", data={**CSRF, "outcome": "busy"})

    assert response.status_code == 404
    assert status_of(services, theirs) == "agent_ringing"


def test_it_refuses_a_simulated_answer_without_the_csrf_token(services, dev_client, riverside):
    attempt = ringing_call(services, riverside.id, "CA" + "1" * 32)

    response = dev_client.post(f"/dev/calls/{attempt}/answer", data={"outcome": "busy"})

    assert response.status_code == 400
    assert status_of(services, attempt) == "agent_ringing"
