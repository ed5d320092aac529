"""The migrations themselves: what a revision does to data already there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, insert, inspect, make_url, select, text

from telephony_service.db import make_engine, table
from telephony_service.migrate import alembic_config, upgrade
from telephony_service.models import Base, Contact, Message, Practice, PracticeSendCount
from tests.conftest import _admin_url


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """A database of its own, with no schema: the session's database is at head already."""
    admin = _admin_url()
    if admin == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    name = f"telephony_migrations_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def _sent_text(engine: Engine, practice_id: int, contact_id: int, n: int, **values: object) -> None:
    now = datetime.now(UTC)
    row = {
        "practice_id": practice_id,
        "contact_id": contact_id,
        "dedupe_key": f"key-{n}",
        "purpose": "text_back",
        "attempt": 0,
        "kind": "automated",
        "to_number": "+14155550123",
        "from_number": "+14155550111",
        "body": "Harbor Pediatrics tried to reach you.",
        "segments": 1,
        "status": "delivered",
        "not_before": now,
        "tries": 1,
        "created_at": now,
        "updated_at": now,
    } | values
    with engine.begin() as connection:
        connection.execute(insert(table(Message)).values(row))


def test_it_counts_todays_texts_when_it_adds_the_daily_counts(empty_database: str) -> None:
    upgrade(empty_database, "0003")
    engine = make_engine(empty_database)
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            practice_id = connection.execute(
                insert(table(Practice))
                .values(
                    name="Harbor Pediatrics",
                    twilio_number="+14155550111",
                    timezone="America/Los_Angeles",
                    business_hours={},
                    observe_us_holidays=True,
                    daily_send_cap=500,
                    created_at=now,
                )
                .returning(table(Practice).c.id)
            ).scalar_one()
            contact_id = connection.execute(
                insert(table(Contact))
                .values(practice_id=practice_id, phone="+14155550123", created_at=now)
                .returning(table(Contact).c.id)
            ).scalar_one()
        _sent_text(engine, practice_id, contact_id, 1, sent_at=now)
        _sent_text(engine, practice_id, contact_id, 2, sent_at=now - timedelta(minutes=5))
        _sent_text(engine, practice_id, contact_id, 3, sent_at=now, kind="reply")
        _sent_text(engine, practice_id, contact_id, 4, sent_at=None, status="pending")
        _sent_text(engine, practice_id, contact_id, 5, sent_at=now - timedelta(days=9))

        upgrade(empty_database)

        with engine.connect() as connection:
            counts = connection.execute(select(table(PracticeSendCount))).all()
        by_day: dict[date, int] = {}
        for row in counts:
            assert row.practice_id == practice_id
            by_day[row.day] = row.sent
        zone = ZoneInfo("America/Los_Angeles")
        expected: dict[date, int] = {}
        for sent_at in (now, now - timedelta(minutes=5)):
            day = sent_at.astimezone(zone).date()
            expected[day] = expected.get(day, 0) + 1
        # Replies, unsent texts and texts older than yesterday are not counted.
        assert by_day == expected

        # And back down, and up again.
        command.downgrade(alembic_config(empty_database), "0003")
        upgrade(empty_database)
        with engine.connect() as connection:
            assert connection.execute(select(table(PracticeSendCount).c.sent)).all()
    finally:
        engine.dispose()


def test_it_leaves_the_schema_as_the_models_describe_it(empty_database: str) -> None:
    upgrade(empty_database)
    engine = make_engine(empty_database)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_it_drops_the_unread_index_of_texts_by_practice_and_send_time(
    empty_database: str,
) -> None:
    def message_indexes() -> set[str]:
        with engine.connect() as connection:
            return {index["name"] for index in inspect(connection).get_indexes("messages")}

    upgrade(empty_database)
    engine = make_engine(empty_database)
    try:
        assert "ix_messages_practice_sent" not in message_indexes()
        # The indexes the gate and the scheduler read stay.
        assert {"ix_messages_due", "ix_messages_contact_created"} <= message_indexes()

        command.downgrade(alembic_config(empty_database), "0004")
        assert "ix_messages_practice_sent" in message_indexes()
        upgrade(empty_database)
        assert "ix_messages_practice_sent" not in message_indexes()
    finally:
        engine.dispose()
