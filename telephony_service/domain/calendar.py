"""Business-hours arithmetic for a practice in its own time zone."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from telephony_service.domain.us_holidays import us_holidays

WeeklyHours = Mapping[int, Sequence[tuple[time, time]]]

_WORKDAY: tuple[tuple[time, time], ...] = ((time(8, 0), time(17, 0)),)

DEFAULT_HOURS: WeeklyHours = MappingProxyType(
    {0: _WORKDAY, 1: _WORKDAY, 2: _WORKDAY, 3: _WORKDAY, 4: _WORKDAY, 5: (), 6: ()}
)

DAY_KEYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Guards against looping forever on a calendar that is never open.
_SEARCH_DAYS = 400


def _parse_clock(text: str, day: str) -> time:
    try:
        hour_text, minute_text = text.split(":")
        if len(hour_text) != 2 or len(minute_text) != 2:
            raise ValueError
        return time(int(hour_text), int(minute_text))
    except (ValueError, AttributeError):
        raise ValueError(f"{day}: {text!r} is not a time in HH:MM form") from None


def _check_day(day: str, intervals: Sequence[tuple[time, time]]) -> None:
    previous_close: time | None = None
    for opens, closes in intervals:
        if opens.tzinfo is not None or closes.tzinfo is not None:
            raise ValueError(f"{day}: opening hours must be local wall-clock times")
        if opens >= closes:
            raise ValueError(
                f"{day}: opening time {opens:%H:%M} must be before closing time {closes:%H:%M}"
            )
        if previous_close is not None and opens < previous_close:
            raise ValueError(f"{day}: intervals overlap or are not in order at {opens:%H:%M}")
        previous_close = closes


def validate_weekly_hours(hours: WeeklyHours) -> None:
    for weekday, intervals in hours.items():
        if weekday not in range(7):
            raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), not {weekday!r}")
        _check_day(DAY_KEYS[weekday], intervals)


def parse_weekly_hours(
    data: Mapping[str, Sequence[Sequence[str]]],
) -> dict[int, list[tuple[time, time]]]:
    unknown = sorted(set(data) - set(DAY_KEYS))
    if unknown:
        raise ValueError(f"unknown day keys {unknown}; expected some of {list(DAY_KEYS)}")
    hours: dict[int, list[tuple[time, time]]] = {}
    for weekday, day in enumerate(DAY_KEYS):
        raw_intervals = data.get(day, [])
        if not isinstance(raw_intervals, list | tuple):
            raise ValueError(f"{day}: expected a list of [open, close] pairs")
        intervals: list[tuple[time, time]] = []
        for pair in raw_intervals:
            if isinstance(pair, str) or len(pair) != 2:
                raise ValueError(
                    f"{day}: each interval must be an [open, close] pair, not {pair!r}"
                )
            intervals.append((_parse_clock(pair[0], day), _parse_clock(pair[1], day)))
        _check_day(day, intervals)
        hours[weekday] = intervals
    return hours


def dump_weekly_hours(hours: WeeklyHours) -> dict[str, list[list[str]]]:
    return {
        day: [[f"{opens:%H:%M}", f"{closes:%H:%M}"] for opens, closes in hours.get(weekday, ())]
        for weekday, day in enumerate(DAY_KEYS)
    }


@functools.lru_cache(maxsize=64)
def _us_holidays(year: int) -> frozenset[date]:
    # The library files observed dates under the year they fall in (e.g. 2021-12-31 for
    # New Year's Day 2022), so one year's lookup is enough for any date in that year.
    return frozenset(us_holidays(year))


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"datetime {at.isoformat()} must be timezone-aware")


def _default_hours() -> WeeklyHours:
    return DEFAULT_HOURS


@dataclass(frozen=True)
class BusinessCalendar:
    timezone: str
    hours: WeeklyHours = field(default_factory=_default_hours)
    observe_us_holidays: bool = True
    closures: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        validate_weekly_hours(self.hours)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_local(self, at: datetime) -> datetime:
        _require_aware(at)
        return at.astimezone(self.zone)

    def local_instant(self, d: date, local_time: time) -> datetime:
        """UTC instant of a local wall time on a local date.

        fold=0 is used: a wall time skipped by a spring-forward gap is read with the offset
        in force before the gap (so 02:30 becomes 03:30 daylight time), and a wall time
        repeated by a fall-back is the first of its two occurrences.
        """
        wall = datetime.combine(d, local_time.replace(tzinfo=None, fold=0), tzinfo=self.zone)
        return wall.astimezone(UTC)

    def is_business_day(self, d: date) -> bool:
        if not self.hours.get(d.weekday()):
            return False
        if d in self.closures:
            return False
        return not (self.observe_us_holidays and d in _us_holidays(d.year))

    def intervals_on(self, d: date) -> list[tuple[datetime, datetime]]:
        if not self.is_business_day(d):
            return []
        result: list[tuple[datetime, datetime]] = []
        for opens, closes in self.hours[d.weekday()]:
            start = self.local_instant(d, opens)
            end = self.local_instant(d, closes)
            # A boundary inside a DST gap can make intervals touch, overlap or invert in
            # real time; trimming keeps each instant counted at most once.
            if result:
                start = max(start, result[-1][1])
            if start < end:
                result.append((start, end))
        return result

    def is_open(self, at: datetime) -> bool:
        local_date = self.to_local(at).date()
        return any(start <= at < end for start, end in self.intervals_on(local_date))

    def _open_time_from(self, at: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals from `at` onwards, the first one clipped to start at `at`."""
        day = self.to_local(at).date()
        idle_days = 0
        while idle_days <= _SEARCH_DAYS:
            idle_days += 1
            for start, end in self.intervals_on(day):
                if end > at:
                    idle_days = 0
                    yield max(start, at.astimezone(UTC)), end
            day += timedelta(days=1)
        raise ValueError("calendar has no business hours")

    def _next_business_day(self, d: date) -> date:
        for offset in range(1, _SEARCH_DAYS + 1):
            candidate = d + timedelta(days=offset)
            if self.intervals_on(candidate):
                return candidate
        raise ValueError("calendar has no business hours")

    def next_open(self, at: datetime) -> datetime:
        start, _ = next(self._open_time_from(at))
        return start

    def add_business_minutes(self, start: datetime, minutes: int) -> datetime:
        if minutes < 0:
            raise ValueError(f"minutes must not be negative, not {minutes}")
        remaining = timedelta(minutes=minutes)
        for opens, closes in self._open_time_from(start):
            if opens + remaining <= closes:
                return opens + remaining
            remaining -= closes - opens
        raise AssertionError("unreachable: the open-time iterator never ends")

    def close_of_day(self, at: datetime) -> datetime:
        local_date = self.to_local(at).date()
        intervals = self.intervals_on(local_date)
        if intervals and at < intervals[-1][1]:
            return intervals[-1][1]
        return self.intervals_on(self._next_business_day(local_date))[-1][1]

    def next_business_day_at(self, at: datetime, local_time: time) -> datetime:
        day = self._next_business_day(self.to_local(at).date())
        return self.local_instant(day, local_time)

    def business_day_close_after(self, at: datetime, days: int) -> datetime:
        if days < 1:
            raise ValueError(f"days must be at least 1, not {days}")
        day = self.to_local(at).date()
        for _ in range(days):
            day = self._next_business_day(day)
        return self.intervals_on(day)[-1][1]
