"""/dev/outbox: the texts the console gateway did not send, for the developer to read."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from telephony_service.models import Contact, Message
from telephony_service.web import create_app
from tests.helpers import ANA, BEN, make_practice


@pytest.fixture
def dev_client(services) -> FlaskClient:
    """The app as `telephony run` builds it on a machine without Twilio credentials."""
    services.settings = dataclasses.replace(
        services.settings, twilio_account_sid=None, twilio_auth_token=None
    )
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app.test_client()


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


def test_it_lists_texts_newest_first_with_masked_numbers_and_full_bodies(services, dev_client):
    practice = make_practice(services)
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


def test_it_escapes_what_it_shows(services, dev_client):
    practice = make_practice(services, name="Smith & <Sons>")
    write_text(services, practice.id, ANA, "<script>alert(1)</script>", ago=timedelta(0))
    page = dev_client.get("/dev/outbox").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Smith &amp; &lt;Sons&gt;" in page


def test_it_answers_json(services, dev_client):
    practice = make_practice(services)
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


def test_it_shows_the_latest_hundred(services, dev_client):
    practice = make_practice(services)
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


def test_it_hides_the_outbox_from_other_machines(dev_client: FlaskClient) -> None:
    response = dev_client.get("/dev/outbox", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 404
