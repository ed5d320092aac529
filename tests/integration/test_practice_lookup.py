"""Finding the practice that owns a called number, as every event a worker applies does."""

from __future__ import annotations

from datetime import date

from sqlalchemy import update

from telephony_service.domain.calendar import parse_weekly_hours
from telephony_service.models import Practice
from telephony_service.services.practices import (
    _by_number,
    _calendars,
    _policies,
    add_closure,
    calendar_for,
    practice_by_number,
    set_business_hours,
    set_daily_send_cap,
    set_texting_hours,
    texting_policy,
)
from telephony_service.wiring import Services
from tests.helpers import HARBOR_NUMBER, RIVERSIDE_NUMBER, make_practice, statements


def test_it_reads_the_practice_once_and_then_without_a_query(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        with statements(services) as seen:
            first = practice_by_number(session, RIVERSIDE_NUMBER)
        assert first is not None and first.id == riverside.id
        assert len([sql for sql in seen if "FROM practices" in sql]) == 1
    with services.session() as session:
        with statements(services) as seen:
            again = practice_by_number(session, RIVERSIDE_NUMBER)
            assert again is not None
            assert (again.name, again.timezone) == ("Riverside Family Medicine", "America/New_York")
            assert again.business_hours == riverside.business_hours
        assert not [sql for sql in seen if "practices" in sql]


def test_it_gives_each_session_a_row_of_its_own(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        add_closure(session, riverside.id, date(2026, 12, 24), "staff training")
        session.commit()
    with services.session() as session:
        practice_by_number(session, RIVERSIDE_NUMBER)
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None
        assert practice in session
        # Its relationships load in that session, as a queried row's do.
        assert [closure.day for closure in practice.closures] == [date(2026, 12, 24)]
        assert session.get(Practice, riverside.id) is practice
        # A change made to one session's row (then thrown away) is not what the next gets.
        practice.name = "Someone Else"
        session.rollback()
    with services.session() as session:
        other = practice_by_number(session, RIVERSIDE_NUMBER)
        assert other is not None and other.name == "Riverside Family Medicine"


def test_it_sees_a_change_made_in_this_process_at_once(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        practice_by_number(session, RIVERSIDE_NUMBER)
    with services.session() as session:
        set_daily_send_cap(session, riverside.id, 42)
        session.commit()
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None and practice.daily_send_cap == 42
    with services.session() as session:
        set_business_hours(session, riverside.id, ["sat=09:00-12:00"])
        session.commit()
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None and practice.business_hours["sat"] == [["09:00", "12:00"]]
    with services.session() as session:
        set_texting_hours(session, riverside.id, {"sun": None})
        session.commit()
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None and practice.texting_hours is not None
        assert practice.texting_hours["sun"] is None


def test_it_does_not_remember_a_number_no_practice_owns(services: Services) -> None:
    with services.session() as session:
        assert practice_by_number(session, HARBOR_NUMBER) is None
    harbor = make_practice(services, name="Harbor Pediatrics", number=HARBOR_NUMBER)
    with services.session() as session:
        found = practice_by_number(session, HARBOR_NUMBER)
        assert found is not None and found.id == harbor.id


def test_it_keeps_the_cached_row_apart_from_each_sessions_copy(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None
        # Changed in place and never saved: neither the cache nor the next session sees it.
        practice.business_hours["sun"] = [["09:00", "10:00"]]
        session.rollback()
    with services.session() as session:
        again = practice_by_number(session, RIVERSIDE_NUMBER)
        assert again is not None and again.business_hours == riverside.business_hours


def test_it_gives_the_row_a_session_already_holds(services: Services) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        practice_by_number(session, RIVERSIDE_NUMBER)  # cached
    with services.session() as session:
        held = session.get_one(Practice, riverside.id)
        held.daily_send_cap = 7  # not flushed yet
        assert practice_by_number(session, RIVERSIDE_NUMBER) is held
        assert held.daily_send_cap == 7


def test_it_forgets_an_old_copy_cached_while_a_change_was_uncommitted(
    services: Services,
) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        practice_by_number(session, RIVERSIDE_NUMBER)
        cap = texting_policy(session, riverside.id).daily_send_cap
        old_values = _by_number.get(RIVERSIDE_NUMBER, lambda: None)
        old_policy = _policies.get(riverside.id, lambda: None)
    assert cap != 42 and old_values is not None and old_policy is not None
    with services.session() as session:
        set_daily_send_cap(session, riverside.id, 42)  # flushed, not yet committed
        if services.engine.dialect.name == "postgresql":
            # Meanwhile another thread of this process reads the committed row, and caches it.
            with services.session() as other:
                found = practice_by_number(other, RIVERSIDE_NUMBER)
                assert found is not None and found.daily_send_cap == cap
                assert texting_policy(other, riverside.id).daily_send_cap == cap
        else:
            # SQLite: every transaction takes the one write lock first, so that thread would
            # wait for this commit; what it would have cached is put back by hand.
            _by_number.get(RIVERSIDE_NUMBER, lambda: old_values)
            _policies.get(riverside.id, lambda: old_policy)
        session.commit()
    with services.session() as session:
        practice = practice_by_number(session, RIVERSIDE_NUMBER)
        assert practice is not None and practice.daily_send_cap == 42
        assert texting_policy(session, riverside.id).daily_send_cap == 42


def test_it_builds_a_policy_and_a_calendar_from_the_database_not_from_an_old_copy(
    services: Services,
) -> None:
    riverside = make_practice(services)
    with services.session() as session:
        practice_by_number(session, RIVERSIDE_NUMBER)  # the row's copy, kept for a TTL
    week = dict(riverside.business_hours) | {"sat": [["09:00", "12:00"]]}
    # Another process (a manager's command) changes the practice; this one hears nothing.
    practices = Practice.__table__
    with services.engine.begin() as connection:
        connection.execute(
            update(practices)
            .where(practices.c.id == riverside.id)
            .values(daily_send_cap=42, business_hours=week)
        )
    # The policy's and the calendar's time ran out; the row copy's has not.
    _policies.clear()
    _calendars.clear()
    with services.session() as session:
        held = practice_by_number(session, RIVERSIDE_NUMBER)
        assert held is not None and held.daily_send_cap != 42  # the copy, as it was
        assert texting_policy(session, riverside.id).daily_send_cap == 42
        assert calendar_for(held).hours == parse_weekly_hours(week)
