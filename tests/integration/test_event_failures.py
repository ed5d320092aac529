"""A failing event keeps no patient data in its error, and a failed job undoes all it did."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from telephony_service.models import Call, Contact
from telephony_service.services import intake
from tests.helpers import ANA, call_ended, events, make_practice, new_sid, run_jobs
from workers import runtime
from workers.jobs import EventFailed, process_webhook_event


def test_it_keeps_phone_numbers_out_of_a_database_error(client, services, monkeypatch, caplog):
    practice = make_practice(services)
    call_ended(client, new_sid("CA"))
    services.dispatcher.flush()
    [event] = events(services)
    real = intake._HANDLERS["voice.status"]

    def duplicate_contact(session, params, at, base_url):  # type: ignore[no-untyped-def]
        real(session, params, at, base_url)
        # A second contact for the same number: the unique constraint names the number.
        session.add(Contact(practice_id=practice.id, phone=ANA, created_at=at))
        session.flush()

    monkeypatch.setitem(intake._HANDLERS, "voice.status", duplicate_contact)
    runtime.install(services)
    with pytest.raises(EventFailed) as raised:
        process_webhook_event(event.id)

    digits = ANA.removeprefix("+1")
    stored = events(services)[0].error or ""
    assert "IntegrityError" in stored
    for text in (str(raised.value), stored, caplog.text):
        assert digits not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_it_undoes_everything_a_failed_event_did(client, services, monkeypatch):
    make_practice(services)
    call_ended(client, new_sid("CA"))
    real = intake._HANDLERS["voice.status"]

    def fails_late(session, params, at, base_url):  # type: ignore[no-untyped-def]
        real(session, params, at, base_url)  # creates the call row, the contact and the task
        raise RuntimeError("boom")

    monkeypatch.setitem(intake._HANDLERS, "voice.status", fails_late)
    run_jobs(services, services.redis)
    with services.session() as session:
        assert session.scalars(select(Call)).all() == []
        assert session.scalars(select(Contact)).all() == []


def test_it_rolls_back_a_row_made_inside_a_savepoint(services, clock):
    # SQLite's driver would have committed at the savepoint's release (see db.py).
    with services.session() as session:
        intake._lock_call(session, new_sid("CA"), clock())
        session.rollback()
        assert session.scalars(select(Call)).all() == []
