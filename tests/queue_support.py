"""Tasks for the queue tests, placed exactly where a test wants them in the queue."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from telephony_service.domain.categories import BASE_PRIORITY, Category
from telephony_service.models import CallAttempt, Contact, Message, Task
from telephony_service.wiring import Services


def make_task(
    services: Services,
    practice_id: int,
    *,
    due_in: timedelta = timedelta(minutes=30),
    category: str = "missed_call",
    status: str = "new",
    owner_id: int | None = None,
    name: str | None = None,
    phone: str | None = "+12025550143",
    created_ago: timedelta = timedelta(minutes=12),
) -> int:
    now = services.clock()
    with services.session() as session:
        contact_id = None
        if phone is not None:
            contact = session.scalar(
                select(Contact).where(Contact.practice_id == practice_id, Contact.phone == phone)
            )
            if contact is None:
                contact = Contact(practice_id=practice_id, phone=phone, created_at=now)
                session.add(contact)
                session.flush()
            contact_id = contact.id
        task = Task(
            practice_id=practice_id,
            contact_id=contact_id,
            category=category,
            status=status,
            priority=BASE_PRIORITY[Category(category)],
            name=name,
            source="test",
            no_callback_number=phone is None,
            call_count=1,
            has_voicemail=False,
            owner_id=owner_id,
            created_at=now - created_ago,
            updated_at=now - created_ago,
            due_at=now + due_in,
        )
        session.add(task)
        session.commit()
        return task.id


def add_call_attempt(services: Services, task_id: int, key: str) -> None:
    now = services.clock()
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        session.add(
            CallAttempt(
                practice_id=task.practice_id,
                task_id=task_id,
                request_key=key,
                status="completed",
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()


def add_text(
    services: Services, task_id: int, key: str, *, sent: bool, kind: str = "automated"
) -> None:
    now = services.clock()
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.contact_id is not None
        session.add(
            Message(
                practice_id=task.practice_id,
                task_id=task_id,
                contact_id=task.contact_id,
                dedupe_key=key,
                purpose="text_back",
                attempt=1,
                kind=kind,
                to_number="+12025550143",
                from_number="+16175550100",
                body="We missed your call.",
                segments=1,
                status="delivered" if sent else "pending",
                not_before=now,
                created_at=now,
                sent_at=now if sent else None,
                updated_at=now,
            )
        )
        session.commit()


def owner_of(services: Services, task_id: int) -> int | None:
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.owner_id
