from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from telephony_service.domain.calendar import BusinessCalendar, parse_weekly_hours
from telephony_service.domain.categories import Category
from telephony_service.domain.sla import SLA_DESCRIPTIONS, first_response_due

NEW_YORK = "America/New_York"
NY_CAL = BusinessCalendar(NEW_YORK)


def local(tz: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz))


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return local(NEW_YORK, y, mo, d, h, mi)


def due(category: Category, received_at: datetime, cal: BusinessCalendar = NY_CAL) -> datetime:
    result = first_response_due(category, received_at, cal)
    assert result.tzinfo is UTC
    return result


def test_it_describes_every_category() -> None:
    assert set(SLA_DESCRIPTIONS) == set(Category)
    assert SLA_DESCRIPTIONS[Category.NEW_PATIENT_REQUEST] == "15 business minutes"


@pytest.mark.parametrize("category", list(Category))
def test_it_has_a_rule_for_every_category(category: Category) -> None:
    assert due(category, ny(2026, 1, 14, 9, 0)) > ny(2026, 1, 14, 9, 0)


@pytest.mark.parametrize(
    ("category", "minutes"),
    [
        (Category.NEW_PATIENT_REQUEST, 15),
        (Category.WEB_FORM, 30),
        (Category.MISSED_CALL, 60),
        (Category.VOICEMAIL, 60),
        (Category.CANCELLATION, 60),
        (Category.INCOMPLETE_SCHEDULING, 120),
    ],
)
def test_it_gives_business_minute_deadlines(category: Category, minutes: int) -> None:
    received = ny(2026, 1, 14, 9, 0)
    assert due(category, received) == received + timedelta(minutes=minutes)


def test_it_carries_a_friday_afternoon_missed_call_to_monday() -> None:
    result = due(Category.MISSED_CALL, ny(2026, 1, 23, 16, 30))
    assert result == ny(2026, 1, 26, 8, 30)


def test_it_starts_a_new_patient_request_clock_at_opening() -> None:
    assert due(Category.NEW_PATIENT_REQUEST, ny(2026, 1, 14, 7, 0)) == ny(2026, 1, 14, 8, 15)


def test_it_gives_incomplete_scheduling_two_business_hours_across_the_night() -> None:
    result = due(Category.INCOMPLETE_SCHEDULING, ny(2026, 1, 14, 16, 0))
    assert result == ny(2026, 1, 15, 9, 0)


def test_it_keeps_monday_0830_local_across_the_spring_forward_weekend() -> None:
    result = due(Category.MISSED_CALL, ny(2026, 3, 6, 16, 30))
    assert result == datetime(2026, 3, 9, 12, 30, tzinfo=UTC)
    assert result.astimezone(ZoneInfo(NEW_YORK)).isoformat() == "2026-03-09T08:30:00-04:00"


def test_it_keeps_monday_0830_local_across_the_fall_back_weekend() -> None:
    result = due(Category.MISSED_CALL, ny(2026, 10, 30, 16, 30))
    assert result == datetime(2026, 11, 2, 13, 30, tzinfo=UTC)
    assert result.astimezone(ZoneInfo(NEW_YORK)).isoformat() == "2026-11-02T08:30:00-05:00"


def test_it_follows_london_hours_and_summer_time() -> None:
    cal = BusinessCalendar("Europe/London", observe_us_holidays=False)
    # UK clocks go forward on 2026-03-29.
    result = due(Category.VOICEMAIL, local("Europe/London", 2026, 3, 27, 16, 30), cal)
    assert result == datetime(2026, 3, 30, 7, 30, tzinfo=UTC)
    winter = due(Category.VOICEMAIL, local("Europe/London", 2026, 3, 20, 16, 30), cal)
    assert winter == datetime(2026, 3, 23, 8, 30, tzinfo=UTC)


def test_it_follows_los_angeles_hours_for_an_instant_given_in_utc() -> None:
    cal = BusinessCalendar("America/Los_Angeles")
    # 16:50 Pacific on Friday 2026-01-23.
    received = datetime(2026, 1, 24, 0, 50, tzinfo=UTC)
    result = due(Category.NEW_PATIENT_REQUEST, received, cal)
    assert result == local("America/Los_Angeles", 2026, 1, 26, 8, 5)
    assert result == datetime(2026, 1, 26, 16, 5, tzinfo=UTC)


def test_it_skips_the_observed_independence_day() -> None:
    assert due(Category.MISSED_CALL, ny(2026, 7, 2, 16, 30)) == ny(2026, 7, 6, 8, 30)


def test_it_skips_thanksgiving() -> None:
    assert due(Category.CANCELLATION, ny(2026, 11, 25, 16, 30)) == ny(2026, 11, 27, 8, 30)


def test_it_skips_practice_closures() -> None:
    cal = BusinessCalendar(NEW_YORK, closures=frozenset({date(2026, 1, 21), date(2026, 1, 22)}))
    assert due(Category.MISSED_CALL, ny(2026, 1, 20, 16, 30), cal) == ny(2026, 1, 23, 8, 30)


def test_it_pauses_the_clock_over_lunch() -> None:
    hours = parse_weekly_hours(
        {d: [["08:00", "12:00"], ["13:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
    )
    cal = BusinessCalendar(NEW_YORK, hours=hours)
    assert due(Category.WEB_FORM, ny(2026, 1, 14, 11, 45), cal) == ny(2026, 1, 14, 13, 15)
    assert due(Category.NEW_PATIENT_REQUEST, ny(2026, 1, 14, 12, 20), cal) == ny(
        2026, 1, 14, 13, 15
    )


def test_it_gives_a_referral_until_the_close_of_the_day() -> None:
    assert due(Category.REFERRAL, ny(2026, 1, 14, 9, 0)) == ny(2026, 1, 14, 17, 0)
    assert due(Category.REFERRAL, ny(2026, 1, 14, 15, 59)) == ny(2026, 1, 14, 17, 0)


def test_it_gives_a_referral_before_opening_the_same_days_close() -> None:
    assert due(Category.REFERRAL, ny(2026, 1, 14, 6, 0)) == ny(2026, 1, 14, 17, 0)


def test_it_moves_a_referral_in_the_last_hour_to_the_next_days_close() -> None:
    assert due(Category.REFERRAL, ny(2026, 1, 14, 16, 0)) == ny(2026, 1, 15, 17, 0)
    assert due(Category.REFERRAL, ny(2026, 1, 16, 16, 30)) == ny(2026, 1, 20, 17, 0)


def test_it_moves_a_referral_after_close_to_the_next_days_close() -> None:
    assert due(Category.REFERRAL, ny(2026, 1, 14, 17, 0)) == ny(2026, 1, 15, 17, 0)
    assert due(Category.REFERRAL, ny(2026, 1, 14, 23, 0)) == ny(2026, 1, 15, 17, 0)


def test_it_moves_a_weekend_referral_to_the_next_business_days_close() -> None:
    assert due(Category.REFERRAL, ny(2026, 1, 24, 11, 0)) == ny(2026, 1, 26, 17, 0)


def test_it_gives_insurance_docs_before_3pm_the_same_days_close() -> None:
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 14, 14, 59)) == ny(2026, 1, 14, 17, 0)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 14, 6, 30)) == ny(2026, 1, 14, 17, 0)


def test_it_gives_insurance_docs_after_3pm_until_10am_next_business_day() -> None:
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 14, 15, 1)) == ny(2026, 1, 15, 10, 0)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 14, 15, 0)) == ny(2026, 1, 15, 10, 0)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 16, 15, 30)) == ny(2026, 1, 20, 10, 0)


def test_it_gives_weekend_insurance_docs_until_10am_next_business_day() -> None:
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 24, 9, 0)) == ny(2026, 1, 26, 10, 0)


def test_it_opens_the_insurance_clock_late_when_10am_is_outside_hours() -> None:
    hours = parse_weekly_hours(
        {
            "mon": [["08:00", "17:00"]],
            "tue": [["11:00", "19:00"]],
            "wed": [["08:00", "09:30"], ["10:30", "17:00"]],
        }
    )
    cal = BusinessCalendar(NEW_YORK, hours=hours)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 12, 16, 0), cal) == ny(2026, 1, 13, 11, 0)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 13, 16, 0), cal) == ny(2026, 1, 14, 10, 30)


def test_it_rolls_insurance_docs_over_when_the_day_closed_before_3pm() -> None:
    hours = parse_weekly_hours({"mon": [["08:00", "17:00"]], "sat": [["08:00", "12:00"]]})
    cal = BusinessCalendar(NEW_YORK, hours=hours)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 24, 11, 0), cal) == ny(2026, 1, 24, 12, 0)
    assert due(Category.INSURANCE_DOCS, ny(2026, 1, 24, 13, 0), cal) == ny(2026, 1, 26, 10, 0)


def test_it_gives_post_visit_two_business_days() -> None:
    assert due(Category.POST_VISIT, ny(2026, 1, 14, 9, 0)) == ny(2026, 1, 16, 17, 0)
    assert due(Category.POST_VISIT, ny(2026, 1, 15, 18, 0)) == ny(2026, 1, 20, 17, 0)
    assert due(Category.POST_VISIT, ny(2026, 1, 24, 10, 0)) == ny(2026, 1, 27, 17, 0)


def test_it_raises_when_the_calendar_has_no_hours() -> None:
    cal = BusinessCalendar(NEW_YORK, hours={})
    for category in Category:
        with pytest.raises(ValueError, match="calendar has no business hours"):
            first_response_due(category, ny(2026, 1, 14, 9, 0), cal)
