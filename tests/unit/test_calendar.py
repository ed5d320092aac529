from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from telephony_service.domain.calendar import (
    DEFAULT_HOURS,
    BusinessCalendar,
    dump_weekly_hours,
    parse_weekly_hours,
)

NEW_YORK = "America/New_York"


def local(tz: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz))


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return local(NEW_YORK, y, mo, d, h, mi)


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is UTC


LUNCH_HOURS = parse_weekly_hours(
    {day: [["08:00", "12:00"], ["13:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
)


def test_it_uses_weekday_office_hours_by_default() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.hours is DEFAULT_HOURS
    assert cal.is_business_day(date(2026, 1, 14))
    assert not cal.is_business_day(date(2026, 1, 17))
    assert not cal.is_business_day(date(2026, 1, 18))


def test_it_rejects_an_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        BusinessCalendar("Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="unknown time zone"):
        BusinessCalendar("")


def test_it_rejects_invalid_hours_given_directly() -> None:
    with pytest.raises(ValueError, match="before closing"):
        BusinessCalendar(NEW_YORK, hours={0: [(time(17), time(8))]})
    with pytest.raises(ValueError, match="weekday"):
        BusinessCalendar(NEW_YORK, hours={7: [(time(8), time(17))]})


def test_it_skips_observed_us_federal_holidays() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert not cal.is_business_day(date(2026, 7, 3))
    assert not cal.is_business_day(date(2026, 11, 26))
    assert cal.is_business_day(date(2026, 11, 27))
    assert cal.intervals_on(date(2026, 7, 3)) == []


def test_it_ignores_holidays_when_asked_to() -> None:
    cal = BusinessCalendar(NEW_YORK, observe_us_holidays=False)
    assert cal.is_business_day(date(2026, 7, 3))


def test_it_skips_practice_closures() -> None:
    cal = BusinessCalendar(NEW_YORK, closures=frozenset({date(2026, 1, 14)}))
    assert not cal.is_business_day(date(2026, 1, 14))
    assert cal.next_open(ny(2026, 1, 13, 17, 0)) == ny(2026, 1, 15, 8, 0)


def test_it_gives_utc_intervals_for_a_local_day() -> None:
    cal = BusinessCalendar(NEW_YORK)
    intervals = cal.intervals_on(date(2026, 1, 14))
    assert intervals == [
        (datetime(2026, 1, 14, 13, 0, tzinfo=UTC), datetime(2026, 1, 14, 22, 0, tzinfo=UTC))
    ]
    for start, end in intervals:
        assert_utc(start)
        assert_utc(end)


def test_it_gives_utc_intervals_in_summer_time() -> None:
    cal = BusinessCalendar(NEW_YORK)
    start, end = cal.intervals_on(date(2026, 6, 10))[0]
    assert start == datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    assert end == datetime(2026, 6, 10, 21, 0, tzinfo=UTC)


def test_it_reads_an_opening_time_in_a_spring_forward_gap_with_the_earlier_offset() -> None:
    hours = {6: [(time(2, 30), time(5, 0))]}
    cal = BusinessCalendar(NEW_YORK, hours=hours, observe_us_holidays=False)
    start, end = cal.intervals_on(date(2026, 3, 8))[0]
    # 02:30 does not exist that night; read at -05:00 it is 03:30 daylight time.
    assert start == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert end == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)


def test_it_reads_an_ambiguous_opening_time_as_its_first_occurrence() -> None:
    hours = {6: [(time(1, 30), time(4, 0))]}
    cal = BusinessCalendar(NEW_YORK, hours=hours, observe_us_holidays=False)
    start, end = cal.intervals_on(date(2026, 11, 1))[0]
    assert start == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert end == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def test_it_knows_when_it_is_open() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.is_open(ny(2026, 1, 14, 8, 0))
    assert cal.is_open(ny(2026, 1, 14, 16, 59))
    assert not cal.is_open(ny(2026, 1, 14, 17, 0))
    assert not cal.is_open(ny(2026, 1, 14, 7, 59))
    assert not cal.is_open(ny(2026, 1, 17, 12, 0))


def test_it_checks_openness_for_instants_given_in_any_zone() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.is_open(datetime(2026, 1, 14, 13, 0, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 1, 14, 12, 59, tzinfo=UTC))


def test_it_refuses_naive_datetimes() -> None:
    cal = BusinessCalendar(NEW_YORK)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.is_open(datetime(2026, 1, 14, 12, 0))


def test_it_returns_the_same_instant_as_next_open_when_open() -> None:
    cal = BusinessCalendar(NEW_YORK)
    at = ny(2026, 1, 14, 10, 17)
    result = cal.next_open(at)
    assert result == at
    assert_utc(result)


def test_it_finds_the_next_opening_over_a_weekend() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.next_open(ny(2026, 1, 16, 17, 0)) == ny(2026, 1, 20, 8, 0)  # MLK day Monday
    assert cal.next_open(ny(2026, 1, 23, 18, 0)) == ny(2026, 1, 26, 8, 0)


def test_it_finds_the_afternoon_opening_during_lunch() -> None:
    cal = BusinessCalendar(NEW_YORK, hours=LUNCH_HOURS)
    assert cal.next_open(ny(2026, 1, 14, 12, 15)) == ny(2026, 1, 14, 13, 0)


def test_it_raises_when_the_calendar_has_no_hours() -> None:
    cal = BusinessCalendar(NEW_YORK, hours={})
    with pytest.raises(ValueError, match="calendar has no business hours"):
        cal.next_open(ny(2026, 1, 14, 10, 0))
    with pytest.raises(ValueError, match="calendar has no business hours"):
        cal.add_business_minutes(ny(2026, 1, 14, 10, 0), 15)
    with pytest.raises(ValueError, match="calendar has no business hours"):
        cal.close_of_day(ny(2026, 1, 14, 10, 0))


def test_it_adds_business_minutes_within_a_day() -> None:
    cal = BusinessCalendar(NEW_YORK)
    result = cal.add_business_minutes(ny(2026, 1, 14, 9, 0), 90)
    assert result == ny(2026, 1, 14, 10, 30)
    assert_utc(result)


def test_it_adds_business_minutes_up_to_exactly_closing_time() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.add_business_minutes(ny(2026, 1, 14, 16, 0), 60) == ny(2026, 1, 14, 17, 0)


def test_it_carries_business_minutes_over_to_the_next_day() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.add_business_minutes(ny(2026, 1, 14, 16, 30), 60) == ny(2026, 1, 15, 8, 30)


def test_it_starts_counting_at_the_next_opening() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.add_business_minutes(ny(2026, 1, 14, 6, 0), 15) == ny(2026, 1, 14, 8, 15)
    assert cal.add_business_minutes(ny(2026, 1, 24, 11, 0), 15) == ny(2026, 1, 26, 8, 15)


def test_it_treats_zero_minutes_as_next_open() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.add_business_minutes(ny(2026, 1, 14, 18, 0), 0) == ny(2026, 1, 15, 8, 0)
    assert cal.add_business_minutes(ny(2026, 1, 14, 9, 5), 0) == ny(2026, 1, 14, 9, 5)


def test_it_rejects_negative_minutes() -> None:
    cal = BusinessCalendar(NEW_YORK)
    with pytest.raises(ValueError, match="negative"):
        cal.add_business_minutes(ny(2026, 1, 14, 9, 0), -1)


def test_it_does_not_count_the_lunch_break() -> None:
    cal = BusinessCalendar(NEW_YORK, hours=LUNCH_HOURS)
    assert cal.add_business_minutes(ny(2026, 1, 14, 11, 30), 60) == ny(2026, 1, 14, 13, 30)


def test_it_adds_many_days_of_business_minutes() -> None:
    cal = BusinessCalendar(NEW_YORK)
    # Five 9-hour days from Monday 08:00 ends at Friday 17:00.
    assert cal.add_business_minutes(ny(2026, 1, 26, 8, 0), 5 * 9 * 60) == ny(2026, 1, 30, 17, 0)


def test_it_counts_real_minutes_across_the_spring_forward_weekend() -> None:
    cal = BusinessCalendar(NEW_YORK)
    result = cal.add_business_minutes(ny(2026, 3, 6, 16, 30), 60)
    assert result == datetime(2026, 3, 9, 12, 30, tzinfo=UTC)
    assert result.astimezone(ZoneInfo(NEW_YORK)).utcoffset() == timedelta(hours=-4)


def test_it_finds_the_close_of_the_current_day() -> None:
    cal = BusinessCalendar(NEW_YORK)
    result = cal.close_of_day(ny(2026, 1, 14, 10, 0))
    assert result == ny(2026, 1, 14, 17, 0)
    assert_utc(result)
    assert cal.close_of_day(ny(2026, 1, 14, 6, 0)) == ny(2026, 1, 14, 17, 0)


def test_it_uses_the_next_business_days_close_after_hours() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.close_of_day(ny(2026, 1, 14, 17, 0)) == ny(2026, 1, 15, 17, 0)
    assert cal.close_of_day(ny(2026, 1, 17, 10, 0)) == ny(2026, 1, 20, 17, 0)


def test_it_closes_at_the_end_of_the_last_split_interval() -> None:
    cal = BusinessCalendar(NEW_YORK, hours=LUNCH_HOURS)
    assert cal.close_of_day(ny(2026, 1, 14, 12, 30)) == ny(2026, 1, 14, 17, 0)


def test_it_gives_a_wall_time_on_the_next_business_day() -> None:
    cal = BusinessCalendar(NEW_YORK)
    result = cal.next_business_day_at(ny(2026, 1, 14, 7, 0), time(10, 0))
    assert result == ny(2026, 1, 15, 10, 0)
    assert_utc(result)
    assert cal.next_business_day_at(ny(2026, 7, 2, 16, 0), time(10, 0)) == ny(2026, 7, 6, 10, 0)


def test_it_gives_the_close_a_number_of_business_days_later() -> None:
    cal = BusinessCalendar(NEW_YORK)
    assert cal.business_day_close_after(ny(2026, 1, 14, 9, 0), 1) == ny(2026, 1, 15, 17, 0)
    # Monday 2026-01-19 is Martin Luther King Jr. Day.
    assert cal.business_day_close_after(ny(2026, 1, 15, 9, 0), 2) == ny(2026, 1, 20, 17, 0)
    assert cal.business_day_close_after(ny(2026, 11, 25, 9, 0), 2) == ny(2026, 11, 30, 17, 0)
    with pytest.raises(ValueError, match="at least 1"):
        cal.business_day_close_after(ny(2026, 1, 14, 9, 0), 0)


def test_it_parses_weekly_hours() -> None:
    hours = parse_weekly_hours({"mon": [["08:00", "12:00"], ["13:00", "17:30"]], "sat": []})
    assert hours[0] == [(time(8), time(12)), (time(13), time(17, 30))]
    assert hours[5] == []
    assert hours[6] == []
    assert set(hours) == set(range(7))


def test_it_dumps_weekly_hours_back_to_json_shape() -> None:
    data = {"mon": [["08:00", "12:00"], ["13:00", "17:30"]], "fri": [["09:00", "15:00"]]}
    dumped = dump_weekly_hours(parse_weekly_hours(data))
    assert dumped["mon"] == data["mon"]
    assert dumped["fri"] == data["fri"]
    assert dumped["sun"] == []
    assert list(dumped) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def test_it_dumps_the_default_hours() -> None:
    dumped = dump_weekly_hours(DEFAULT_HOURS)
    assert dumped["wed"] == [["08:00", "17:00"]]
    assert dumped["sat"] == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"monday": [["08:00", "17:00"]]}, "unknown day keys"),
        ({"mon": [["8:00", "17:00"]]}, "HH:MM"),
        ({"mon": [["08:00", "25:00"]]}, "HH:MM"),
        ({"mon": [["08:00", "17:60"]]}, "HH:MM"),
        ({"mon": [["08-00", "17:00"]]}, "HH:MM"),
        ({"mon": [["noon", "17:00"]]}, "HH:MM"),
        ({"mon": [["08:00"]]}, "pair"),
        ({"mon": ["08:00-17:00"]}, "pair"),
        ({"mon": None}, "list of"),
        ({"mon": [[8, 17]]}, "HH:MM"),
        ({"mon": [["17:00", "08:00"]]}, "before closing"),
        ({"mon": [["08:00", "08:00"]]}, "before closing"),
        ({"mon": [["08:00", "12:00"], ["11:00", "17:00"]]}, "overlap"),
        ({"mon": [["13:00", "17:00"], ["08:00", "12:00"]]}, "overlap or are not in order"),
    ],
)
def test_it_rejects_bad_weekly_hours(data: dict[str, list[list[str]]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_weekly_hours(data)


def test_it_accepts_back_to_back_intervals() -> None:
    hours = parse_weekly_hours({"mon": [["08:00", "12:00"], ["12:00", "17:00"]]})
    assert len(hours[0]) == 2


def test_it_loads_only_the_united_states_holiday_calendar() -> None:
    import subprocess
    import sys

    script = (
        "import sys, datetime\n"
        "from telephony_service.domain.calendar import BusinessCalendar\n"
        "from telephony_service.domain.compliance import _state_holidays\n"
        "cal = BusinessCalendar('America/New_York')\n"
        "assert not cal.is_business_day(datetime.date(2026, 11, 26))  # Thanksgiving\n"
        "assert datetime.date(2026, 2, 17) in _state_holidays('LA', 2026)  # Mardi Gras\n"
        "print(sum(m.startswith('holidays.countries.') for m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"
