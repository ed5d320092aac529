"""The inquiry and task API, as an integration (a web form, an EHR) uses it."""

from __future__ import annotations

from datetime import datetime

import jsonschema
import pytest
from sqlalchemy import select

from telephony_service.services import intake
from telephony_service.web.openapi import openapi_document
from tests.conftest import FakeClock
from tests.helpers import (
    ANA,
    BEN,
    HARBOR_NUMBER,
    api_get,
    call_ended,
    make_api_key,
    make_practice,
    new_sid,
    recording_ready,
    run_jobs,
    transcription_ready,
)


@pytest.fixture
def riverside(services):
    return make_practice(services)


@pytest.fixture
def key(services, riverside):
    return make_api_key(services, riverside.id)


def _schema(name: str) -> dict:
    document = openapi_document("https://callbacks.example.test")
    schema = dict(document["components"]["schemas"][name])
    schema["components"] = document["components"]  # resolve $refs
    return schema


def _check(body: dict, name: str) -> None:
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{name}", **_schema(name)})


def post_inquiry(client, key, body, idempotency_key=None):
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return client.post("/api/v1/inquiries", json=body, headers=headers)


def test_it_creates_a_task_from_a_web_form(client, key):
    response = post_inquiry(
        client,
        key,
        {
            "category": "new_patient_request",
            "phone": "(202) 555-0143",
            "name": "Ana Lima",
            "reason": "new patient, wants a physical",
            "source": "website",
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    _check(body, "Task")
    assert body["category"] == "new_patient_request"
    assert body["status"] == "new"
    assert body["phone"] == ANA
    assert body["name"] == "Ana Lima"
    assert body["source"] == "website"
    assert body["call_count"] == 0
    assert body["has_voicemail"] is False
    # Tuesday 10:00 New York + 15 business minutes, in the practice's zone with its offset.
    assert body["created_at"] == "2026-11-17T10:00:00-05:00"
    assert body["due_at"] == "2026-11-17T10:15:00-05:00"
    assert body["next_action"] == "call_back"
    assert response.headers["Location"] == f"/api/v1/tasks/{body['id']}"
    assert [entry["kind"] for entry in body["timeline"]] == ["created"]


def test_it_returns_the_first_task_for_a_repeated_idempotency_key(client, key):
    body = {"category": "referral", "phone": BEN, "reason": "referral from Dr. Osei"}
    first = post_inquiry(client, key, body, idempotency_key="form-4711")
    again = post_inquiry(client, key, body, idempotency_key="form-4711")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    listing = api_get(client, key, "/api/v1/tasks").get_json()
    assert len(listing["tasks"]) == 1


def test_it_returns_the_winners_task_when_two_requests_race_on_one_key(client, key, monkeypatch):
    body = {"category": "referral", "phone": BEN, "reason": "referral from Dr. Osei"}
    first = post_inquiry(client, key, body, idempotency_key="form-4712")
    # The second request's first look happens before the first one commits: it finds
    # nothing, writes, and meets the unique key.
    real = intake._task_by_idempotency_key
    looks = []

    def racing(session, practice_id, idempotency_key):
        looks.append(idempotency_key)
        return None if len(looks) == 1 else real(session, practice_id, idempotency_key)

    monkeypatch.setattr(intake, "_task_by_idempotency_key", racing)
    again = post_inquiry(client, key, body, idempotency_key="form-4712")
    assert len(looks) == 2
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert len(api_get(client, key, "/api/v1/tasks").get_json()["tasks"]) == 1


def test_it_refuses_an_idempotency_key_reused_for_another_request(client, key):
    post_inquiry(client, key, {"category": "referral", "phone": BEN}, idempotency_key="k1")
    response = post_inquiry(
        client, key, {"category": "cancellation", "phone": BEN}, idempotency_key="k1"
    )
    assert response.status_code == 409
    _check(response.get_json(), "Error")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"category": "referral", "phone": "555-0143"}, "phone"),
        ({"category": "referral", "phone": "not a number"}, "phone"),
        ({"category": "referral"}, "phone"),
        ({"category": "diagnosis", "phone": ANA}, "category"),
        ({"category": "missed_call", "phone": ANA}, "category"),
        ({"phone": ANA}, "category"),
        ({"category": "referral", "phone": ANA, "name": "x" * 201}, "name"),
        ({"category": "referral", "phone": ANA, "reason": "x" * 1001}, "reason"),
        ({"category": "referral", "phone": ANA, "name": 42}, "name"),
        ({"category": "referral", "phone": ANA, "ssn": "123"}, "ssn"),
        ({"category": "referral", "phone": ANA, "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"category": "referral", "phone": ANA, "timezone": 5}, "timezone"),
        ({"category": "referral", "phone": ANA, "timezone": "localtime"}, "timezone"),
        ({"category": "referral", "phone": ANA, "timezone": "Factory"}, "timezone"),
        ({"category": "referral", "phone": ANA, "timezone": "UTC"}, "timezone"),
        ({"category": "referral", "phone": ANA, "timezone": "EST"}, "timezone"),
        ({"category": "referral", "phone": ANA, "timezone": "Etc/GMT+5"}, "timezone"),
        ({"category": "referral", "phone": ANA, "state": "Texas"}, "state"),
        ({"category": "referral", "phone": ANA, "state": "PR"}, "state"),
    ],
)
def test_it_names_each_bad_field(client, key, body, field):
    response = post_inquiry(client, key, body)
    assert response.status_code == 422
    payload = response.get_json()
    _check(payload, "Error")
    assert field in payload["errors"]


def test_it_refuses_a_body_that_is_not_a_json_object(client, key):
    response = client.post(
        "/api/v1/inquiries",
        data="category=referral",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"},
    )
    assert response.status_code == 422
    assert "body" in response.get_json()["errors"]


def test_it_refuses_an_oversize_body(client, key):
    response = post_inquiry(client, key, {"category": "referral", "phone": ANA, "x": "y" * 100_000})
    assert response.status_code == 413


@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer tsk_wrong", "Basic abc", "tsk_x"])
def test_it_requires_a_valid_api_key(client, key, header):
    headers = {} if header is None else {"Authorization": header}
    response = client.get("/api/v1/tasks", headers=headers)
    assert response.status_code == 401
    _check(response.get_json(), "Error")


def test_it_hides_another_practices_tasks(client, services, key):
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    )
    harbor_key = make_api_key(services, harbor.id)
    created = post_inquiry(client, key, {"category": "referral", "phone": ANA}).get_json()

    assert api_get(client, harbor_key, f"/api/v1/tasks/{created['id']}").status_code == 404
    assert api_get(client, harbor_key, "/api/v1/tasks").get_json()["tasks"] == []
    assert api_get(client, key, f"/api/v1/tasks/{created['id']}").status_code == 200


def test_it_answers_404_for_an_unknown_task(client, key):
    assert api_get(client, key, "/api/v1/tasks/424242").status_code == 404
    assert api_get(client, key, f"/api/v1/tasks/{2**70}").status_code == 404


def test_it_lists_tasks_earliest_deadline_first_in_pages(client, key, clock: FakeClock):
    # Deadlines: new patient 15 min, web form 30 min, referral end of day, post-visit 2 days.
    for category in ("post_visit", "referral", "new_patient_request", "web_form"):
        post_inquiry(client, key, {"category": category, "phone": ANA})
        clock.advance(minutes=1)
    first = api_get(client, key, "/api/v1/tasks?limit=2").get_json()
    _check(first, "TaskList")
    assert [t["category"] for t in first["tasks"]] == ["new_patient_request", "web_form"]
    assert first["next_cursor"]
    second = api_get(client, key, f"/api/v1/tasks?limit=2&cursor={first['next_cursor']}")
    second_body = second.get_json()
    assert [t["category"] for t in second_body["tasks"]] == ["referral", "post_visit"]
    assert second_body["next_cursor"] is None
    dues = [datetime.fromisoformat(t["due_at"]) for t in first["tasks"] + second_body["tasks"]]
    assert dues == sorted(dues)


def test_it_filters_by_status_category_and_phone(client, key):
    post_inquiry(client, key, {"category": "referral", "phone": ANA})
    post_inquiry(client, key, {"category": "cancellation", "phone": BEN})
    by_category = api_get(client, key, "/api/v1/tasks?category=cancellation").get_json()
    assert [t["phone"] for t in by_category["tasks"]] == [BEN]
    by_phone = api_get(client, key, "/api/v1/tasks?phone=%28202%29%20555-0143").get_json()
    assert [t["category"] for t in by_phone["tasks"]] == ["referral"]
    assert len(api_get(client, key, "/api/v1/tasks?status=open").get_json()["tasks"]) == 2
    assert api_get(client, key, "/api/v1/tasks?status=closed_resolved").get_json()["tasks"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("category=x", "category"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage", "cursor"),
        ("phone=12", "phone"),
    ],
)
def test_it_refuses_bad_list_parameters(client, key, query, field):
    response = api_get(client, key, f"/api/v1/tasks?{query}")
    assert response.status_code == 422
    assert field in response.get_json()["errors"]


def test_it_shows_a_voicemail_task_with_calls_and_transcription(client, services, key):
    call_sid, recording_sid = new_sid("CA"), new_sid("RE")
    call_ended(client, call_sid)
    recording_ready(client, call_sid, recording_sid)
    transcription_ready(client, call_sid, recording_sid, "Hi, this is Ana, please call me.")
    call_ended(client, new_sid("CA"))
    run_jobs(services, services.redis)

    [task] = api_get(client, key, "/api/v1/tasks").get_json()["tasks"]
    _check(task, "Task")
    assert task["category"] == "voicemail"
    assert task["has_voicemail"] is True
    assert task["call_count"] == 2
    assert task["phone"] == ANA
    timeline = {entry["kind"]: entry for entry in task["timeline"]}
    assert timeline["transcription"]["text"] == "Hi, this is Ana, please call me."
    assert "call_merged" in timeline


def test_it_serves_an_openapi_document_that_covers_every_api_route(client, app):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    documented = {"/api/v1" + path for path in document["paths"]}
    routes = {
        rule.rule.replace("<int:task_id>", "{id}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1") and rule.endpoint != "api.openapi"
    }
    assert routes == documented
    jsonschema.Draft202012Validator.check_schema(document["components"]["schemas"]["Task"])


def test_it_keeps_the_patients_time_zone_and_state_from_the_sender(client, key, services):
    """A web form knows where the patient is better than the number's area code: the
    compliance gate reads the contact's zone and state first."""
    from telephony_service.models import Contact

    body = {"category": "referral", "phone": ANA, "timezone": "America/Chicago", "state": "tx"}
    first = post_inquiry(client, key, body, idempotency_key="ref-1")
    assert first.status_code == 201
    assert post_inquiry(client, key, body, idempotency_key="ref-1").status_code == 200
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert (contact.timezone, contact.state) == ("America/Chicago", "TX")

    # A later inquiry without them (or with them blank) leaves what is known; one with them
    # updates it.
    blank = {"category": "web_form", "phone": ANA, "timezone": "", "state": " "}
    assert post_inquiry(client, key, blank).status_code == 201
    post_inquiry(client, key, {"category": "web_form", "phone": ANA, "timezone": "America/Denver"})
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert (contact.timezone, contact.state) == ("America/Denver", "TX")

    # A move: the new state, without a zone, drops a zone that is not one of its own.
    post_inquiry(client, key, {"category": "web_form", "phone": ANA, "state": "NY"})
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert (contact.timezone, contact.state) == (None, "NY")
    post_inquiry(
        client, key, {"category": "web_form", "phone": ANA, "timezone": "America/New_York"}
    )
    post_inquiry(client, key, {"category": "web_form", "phone": ANA, "state": "NY"})
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert (contact.timezone, contact.state) == ("America/New_York", "NY")
