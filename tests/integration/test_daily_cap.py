"""The practice's daily send cap, counted per day of the practice's own calendar."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from telephony_service.models import Message, PracticeSendCount
from telephony_service.services.practices import set_daily_send_cap
from telephony_service.wiring import Services
from tests.conftest import FakeClock
from tests.helpers import ANA, BEN, HARBOR_NUMBER, make_practice
from tests.sms_support import FakeMessages, send_in, text_back_due

CARA = "+12025550199"  # a third patient, also in Washington
DREW = "+14155550123"  # a patient in San Francisco


def _send(services: Services, message_id: int) -> str:
    with services.session() as session:
        return send_in(session, services, message_id)


def _counts(services: Services, practice_id: int) -> dict[date, int]:
    with services.session() as session:
        rows = session.scalars(
            select(PracticeSendCount).where(PracticeSendCount.practice_id == practice_id)
        )
        return {row.day: row.sent for row in rows}


def test_it_defers_texts_over_the_daily_cap_to_the_practices_next_day(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    practice = make_practice(services)
    with services.session() as session:
        set_daily_send_cap(session, practice.id, 2)
        session.commit()
    first, second, third = (text_back_due(services, practice.id, who) for who in (ANA, BEN, CARA))

    assert [_send(services, first), _send(services, second)] == ["sent", "sent"]
    assert _send(services, third) == "deferred"
    with services.session() as session:
        held = session.get_one(Message, third)
        assert held.status == "pending"
        assert held.defer_reason is not None
        assert "daily send cap reached (2 texts a day)" in held.defer_reason
        # Not before midnight in New York, the practice's zone (then the patient's window).
        new_york = ZoneInfo("America/New_York")
        assert held.not_before.astimezone(new_york).date() == date(2026, 11, 18)
        due = held.not_before
    assert len(twilio_messages.sent) == 2
    assert _counts(services, practice.id) == {date(2026, 11, 17): 2}

    clock.now = due
    assert _send(services, third) == "sent"
    assert _counts(services, practice.id) == {date(2026, 11, 17): 2, date(2026, 11, 18): 1}


def test_it_counts_a_text_on_the_practices_day_not_utcs(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    # 02:00 UTC on the 18th is 18:00 on the 17th in San Francisco.
    clock.now = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)
    practice = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    )
    assert _send(services, text_back_due(services, practice.id, DREW)) == "sent"
    assert _counts(services, practice.id) == {date(2026, 11, 17): 1}


def test_it_keeps_each_practices_count_apart(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    riverside = make_practice(services)
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/New_York"
    )
    assert _send(services, text_back_due(services, riverside.id, ANA)) == "sent"
    assert _send(services, text_back_due(services, harbor.id, BEN)) == "sent"
    assert _send(services, text_back_due(services, harbor.id, CARA)) == "sent"
    assert _counts(services, riverside.id) == {date(2026, 11, 17): 1}
    assert _counts(services, harbor.id) == {date(2026, 11, 17): 2}


def test_two_workers_sending_at_once_never_pass_the_cap_together(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    practice = make_practice(services)
    with services.session() as session:
        set_daily_send_cap(session, practice.id, 1)
        session.commit()
    first = text_back_due(services, practice.id, ANA)
    second = text_back_due(services, practice.id, BEN)
    outcomes: dict[str, str] = {}
    worker = threading.Thread(target=lambda: outcomes.update(second=_send(services, second)))

    def second_worker_sends_meanwhile() -> None:
        # The first worker passed the gate and is waiting for Twilio's answer. (SQLite: the
        # second waits for the first's write lock, so it runs after it.)
        twilio_messages.on_create = None
        worker.start()
        worker.join(timeout=1)

    twilio_messages.on_create = second_worker_sends_meanwhile
    outcomes["first"] = _send(services, first)
    worker.join(timeout=30)

    assert outcomes == {"first": "sent", "second": "deferred"}
    assert len(twilio_messages.sent) == 1
    with services.session() as session:
        reason = session.get_one(Message, second).defer_reason
    if services.engine.dialect.name == "postgresql":
        assert reason == "the last texts under the daily send cap (1) are being sent"
        # Once the first has settled the second waits for the practice's next day.
        with services.session() as session:
            clock.now = session.get_one(Message, second).not_before  # 1-3 minutes, at random
        assert _send(services, second) == "deferred"
        with services.session() as session:
            reason = session.get_one(Message, second).defer_reason
    assert reason is not None and reason.startswith("daily send cap reached (1 texts a day)")


def test_texts_that_saw_each_other_on_the_wire_wait_different_minutes() -> None:
    """Both of two texts that each saw the other wait; were their waits equal they would
    meet again at the same minute, and again, and the last text under the cap never go."""
    from telephony_service.services import delivery

    waits = {delivery._in_flight_wait() for _ in range(200)}
    assert len(waits) > 1
    assert all(timedelta(seconds=30) <= wait <= timedelta(minutes=3) for wait in waits)
    minutes = sorted(wait.total_seconds() // 60 for wait in waits)
    assert minutes == sorted(set(minutes))  # whole minutes apart, past the rounding
