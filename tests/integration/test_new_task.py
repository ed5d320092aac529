"""A new task and the "created" line of its timeline, and the other rows a missed call writes,
inserted with Core statements and then kept in the session as loaded rows."""

from __future__ import annotations

from sqlalchemy import select

from telephony_service.db import insert_row
from telephony_service.domain.categories import Category
from telephony_service.models import Contact, Message, Task, TaskEvent
from telephony_service.services import intake
from telephony_service.services.practices import calendar_for, practice_by_number
from telephony_service.wiring import Services
from tests.helpers import ANA, RIVERSIDE_NUMBER, make_practice, statements


def test_it_writes_the_task_and_its_created_line_together(services: Services) -> None:
    make_practice(services)
    postgres = services.engine.dialect.name == "postgresql"
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None
        contact = intake._lock_contact(session, practice.id, ANA, services.clock())
        calendar_for(practice)  # read once per process (its closures), not per task
        with statements(services) as seen:
            task = intake._new_task(
                session,
                practice,
                contact,
                category=Category.WEB_FORM,
                source="website",
                at=services.clock(),
                reason="Wants a new-patient visit",
                created_text="Wants a new-patient visit",
            )
            # Every column is known: reading them asks the database nothing.
            facts = (task.status, task.flag, task.owner_id, task.idempotency_key, task.due_at)
        assert len(seen) == (1 if postgres else 2)
        assert facts[:4] == ("new", None, None, None)
        assert task in session and task.id is not None
        # A change after the INSERT is an UPDATE of that row, as for a loaded one.
        task.flag = "sms_undeliverable"
        session.commit()
    with services.session() as session:
        stored = session.get_one(Task, task.id)
        assert (stored.flag, stored.source, stored.category) == (
            "sms_undeliverable",
            "website",
            "web_form",
        )
        assert stored.due_at == facts[4]
        [line] = session.scalars(select(TaskEvent).where(TaskEvent.task_id == task.id))
        assert (line.kind, line.text, line.data, line.at) == (
            "created",
            "Wants a new-patient visit",
            {"source": "website"},
            services.clock(),
        )


def test_it_keeps_the_created_line_first_on_the_timeline(services: Services) -> None:
    make_practice(services)
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None
        now = services.clock()
        task = intake._new_task(
            session, practice, None, category=Category.MISSED_CALL, source="phone", at=now
        )
        intake._timeline(session, task, now, "voicemail", data={"duration": 14})
        session.commit()
        assert [entry.kind for entry in task.timeline] == ["created", "voicemail"]
        assert task.no_callback_number is True


def test_it_inserts_a_row_with_its_defaults_and_keeps_it_loaded(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        # Message's attempt and tries have Python defaults; neither is set here.
        contact = insert_row(
            session, Contact(practice_id=riverside.id, phone=ANA, created_at=services.clock())
        )
        message = Message(
            practice_id=riverside.id,
            contact_id=contact.id,
            dedupe_key="test:1",
            purpose="text_back",
            kind="automated",
            to_number=ANA,
            from_number=RIVERSIDE_NUMBER,
            body="Riverside Family Medicine: sorry we missed your call.",
            segments=1,
            status="pending",
            not_before=services.clock(),
            created_at=services.clock(),
            updated_at=services.clock(),
        )
        with statements(services) as seen:
            insert_row(session, message)
            facts = (message.attempt, message.tries, message.message_sid, contact.opted_out_at)
        assert len(seen) == 1
        assert facts == (0, 0, None, None)
        assert message.id is not None and message in session
        message.status = "claimed"
        session.commit()
    with services.session() as session:
        stored = session.get_one(Message, message.id)
        assert (stored.status, stored.attempt, stored.tries) == ("claimed", 0, 0)


def test_it_knows_a_caller_it_has_just_created(services: Services) -> None:
    riverside = make_practice(services)
    postgres = services.engine.dialect.name == "postgresql"
    with services.session() as session:
        first, created = intake._lock_caller(session, riverside.id, ANA, services.clock())
        session.commit()
    with services.session() as session:
        again, created_again = intake._lock_caller(session, riverside.id, ANA, services.clock())
        session.commit()
    assert first.id == again.id
    # PostgreSQL says which upsert inserted the row; elsewhere it is not known (False).
    assert (created, created_again) == ((True, False) if postgres else (False, False))


def test_it_gives_way_to_a_row_inserted_after_a_rollback(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        ghost = insert_row(
            session, Contact(practice_id=riverside.id, phone=ANA, created_at=services.clock())
        )
        session.rollback()
        # SQLite hands the same id out again; the session must take the new row.
        real = insert_row(
            session, Contact(practice_id=riverside.id, phone=ANA, created_at=services.clock())
        )
        session.commit()
        assert real in session and session.get(Contact, real.id) is real
        assert ghost is not real
    with services.session() as session:
        assert session.scalars(select(Contact.phone)).all() == [ANA]
