"""The audit log is append-only: entries are added with the change they describe, never
rewritten. PostgreSQL enforces it with a trigger; SQLite (development only) has none, so
there the guarantee is that the service offers no way to change an entry."""

from __future__ import annotations

import inspect

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from telephony_service.models import AuditEntry
from telephony_service.services import audit
from telephony_service.wiring import Services
from tests.helpers import HARBOR_NUMBER, make_practice
from tests.workspace_support import make_user


@pytest.fixture
def entry_id(services: Services) -> int:
    practice = make_practice(services)
    user = make_user(services, practice.id)
    with services.session() as session:
        audit.record(
            session,
            practice_id=practice.id,
            user_id=user.id,
            action="signed_in",
            now=services.clock(),
        )
        session.commit()
        return int(session.scalars(select(AuditEntry.id)).one())


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'viewed_task' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
    ],
)
def test_it_refuses_to_rewrite_or_delete_an_entry(services, entry_id, statement):
    if services.engine.dialect.name != "postgresql":
        # SQLite: no trigger. The service module is the only writer, and it can only add.
        public = {
            name
            for name, member in inspect.getmembers(audit, inspect.isfunction)
            if member.__module__ == audit.__name__ and not name.startswith("_")
        }
        assert public == {"record", "entries"}
        return
    with services.session() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement), {"id": entry_id})
        session.rollback()
        [entry] = session.scalars(select(AuditEntry)).all()
    assert entry.action == "signed_in"


def test_it_adds_an_entry_only_with_the_change_it_describes(services, clock):
    practice = make_practice(services)
    with services.session() as session:
        audit.record(
            session, practice_id=practice.id, user_id=None, action="signed_in", now=clock()
        )
        session.rollback()  # the change failed, so nothing happened worth recording

        assert audit.entries(session, practice.id) == []


def test_it_refuses_an_action_nobody_would_understand(services, clock):
    practice = make_practice(services)
    with services.session() as session, pytest.raises(ValueError, match="unknown audit action"):
        audit.record(session, practice_id=practice.id, user_id=None, action="peeked", now=clock())


def test_it_lists_only_the_practices_own_entries(services, clock):
    riverside = make_practice(services)
    harbor = make_practice(services, name="Harbor Pediatrics", number=HARBOR_NUMBER)
    with services.session() as session:
        for practice_id in (riverside.id, harbor.id, riverside.id):
            audit.record(
                session, practice_id=practice_id, user_id=None, action="signed_in", now=clock()
            )
        session.commit()

        assert [entry.practice_id for entry in audit.entries(session, riverside.id)] == [
            riverside.id,
            riverside.id,
        ]
