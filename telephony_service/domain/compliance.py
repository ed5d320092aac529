"""The compliance gate: may this text or call to a patient go now?

It is asked at send/dial time, not only when a message is queued, because an opt-out, another
attempt or the patient's clock may all have changed in between. It never drops a message for
timing reasons: a cap or quiet hours give a Defer to the earliest instant at which every rule is
met, and only opt-outs, invalid numbers and policies that never open give a Block.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from phonenumbers.tzdata import TIMEZONE_DATA

from telephony_service.domain.phones import number_facts
from telephony_service.domain.states import (
    AREA_CODE_STATES,
    STATE_RULES,
    STATE_ZONES,
    StateRule,
)
from telephony_service.domain.us_holidays import us_holidays

Hours = tuple[time, time]


@dataclass(frozen=True)
class Allowed:
    pass


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str


@dataclass(frozen=True)
class Block:
    reason: str


Decision: TypeAlias = Allowed | Defer | Block


class Channel(StrEnum):
    TEXT = "text"
    CALL = "call"


class Purpose(StrEnum):
    AUTOMATED = "automated"
    MANUAL = "manual"
    REPLY = "reply"


@dataclass(frozen=True)
class ContactFacts:
    phone: str
    timezone: str | None
    state: str | None
    opted_out: bool


@dataclass(frozen=True)
class History:
    # Calls and texts to this contact on any channel, replies excluded.
    attempts: Sequence[datetime]
    automated_texts: Sequence[datetime]
    # Automated and manual texts since midnight in the practice's own zone.
    practice_sent_today: int
    # The practice's other texts on the wire (other workers' sends, or outcomes unknown):
    # each may yet count against the day.
    practice_in_flight: int = 0


@dataclass(frozen=True)
class Policy:
    practice_timezone: str
    # Allowed texting hours per weekday (0 = Monday) in the patient's local time. None for a
    # weekday, or a weekday left out, means no texts that day; None for the whole mapping means
    # the manager adds nothing to the legal window.
    texting_window: Mapping[int, Hours | None] | None
    daily_send_cap: int | None

    def __post_init__(self) -> None:
        _zone(self.practice_timezone)
        if self.daily_send_cap is not None and self.daily_send_cap < 0:
            raise ValueError(f"daily_send_cap must not be negative, not {self.daily_send_cap}")
        for weekday, hours in (self.texting_window or {}).items():
            if weekday not in range(7):
                raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), not {weekday!r}")
            if hours is None:
                continue
            start, end = hours
            if start.tzinfo is not None or end.tzinfo is not None:
                raise ValueError(f"{_DAY_NAMES[weekday]}: texting hours must be wall-clock times")
            if start >= end:
                raise ValueError(
                    f"{_DAY_NAMES[weekday]}: texting window start {start:%H:%M} must be before "
                    f"its end {end:%H:%M}"
                )


# The strictest common state window; federal law alone would allow 08:00-21:00.
_FLOOR: Hours = (time(8, 0), time(20, 0))
# Without a zone the patient could be anywhere in the US: noon to 20:00 in New York falls
# inside 08:00-20:00 local from Maine to Alaska (09:00-17:00 in California); only Hawaii and
# the Aleutians would see it start before 08:00.
_UNKNOWN_ZONE = "America/New_York"
_UNKNOWN_FLOOR: Hours = (time(12, 0), time(20, 0))

ATTEMPTS_PER_DAY = 3
AUTOMATED_TEXTS_PER_DAY = 1
AUTOMATED_TEXTS_PER_WEEK = 3
_DAY = timedelta(hours=24)
_WEEK = timedelta(days=7)
# A text that would pass the daily cap only if the practice's texts on the wire fail waits
# this long (then to the whole minute) for them to settle.
IN_FLIGHT_WAIT = timedelta(seconds=30)

# How far ahead a window is searched for; a policy closed for longer than this is a Block.
SEARCH_DAYS = 14
# Caps are lower bounds and the window only moves forward, so the search settles in two or
# three rounds; the limit only guards against a future rule that would break that.
_MAX_ROUNDS = 10

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Reference instants for telling whether the zones of a country-wide list share one clock.
_OFFSET_SAMPLES = (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC))


def _require_aware(at: datetime, what: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} {at.isoformat()} must be timezone-aware")


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r}") from None


def is_zone(name: str) -> bool:
    """Whether `name` is a place's IANA time zone, Area/City (a contact's zone must be one).
    Not UTC, a fixed offset (EST, Etc/GMT+5) or the server's own "localtime": a patient's
    window read on one of those is hours off their clock, all year or half of it."""
    return name in _place_zones()


@functools.cache
def _place_zones() -> frozenset[str]:
    return frozenset(
        name for name in available_timezones() if "/" in name and not name.startswith("Etc/")
    )


def _one_clock(zones: tuple[str, ...]) -> bool:
    offsets = {tuple(at.astimezone(_zone(z)).utcoffset() for at in _OFFSET_SAMPLES) for z in zones}
    return len(offsets) == 1


@functools.lru_cache(maxsize=4096)
def contact_zones(phone: str, known_zone: str | None) -> tuple[str, ...]:
    """The zones the patient may be in: the known one, else the number's, else none."""
    if known_zone is not None:
        _zone(known_zone)
        return (known_zone,)
    facts = number_facts(phone)
    if facts is None:
        return ()
    zones = facts.zones
    # Toll-free, personal and unmapped +1 numbers get the whole code's list (all 42 zones,
    # Guam to Newfoundland): that says nothing about where the patient is, and no minute of
    # the day is inside all of them. Any other country's list does place the patient in
    # that country, and its zones share a window (mainland Spain and the Canaries, the
    # Australian mainland): that window is the one to keep, as for any number with several
    # zones.
    if len(zones) > 1 and facts.country_code == 1:
        country_wide = TIMEZONE_DATA.get(str(facts.country_code), ())
        if zones == tuple(country_wide) and not _one_clock(zones):
            return ()
    return zones


def state_for_number(phone: str) -> str | None:
    """Two-letter US state of a number's area code, if it is a geographic US one."""
    facts = number_facts(phone)
    if facts is None or facts.country_code != 1:
        return None
    # The table holds only US area codes, and a NANP area code belongs to one country.
    return AREA_CODE_STATES.get(int(str(facts.national_number)[:3]))


@functools.lru_cache(maxsize=256)
def _state_holidays(state: str, year: int) -> Mapping[date, str]:
    # Built once per state and year: evaluate() runs on every send. The library files observed
    # dates under the year they fall in, so one year's table answers for any date in it.
    return us_holidays(year, subdiv=state)


def _intersect_hours(a: Hours, b: Hours) -> Hours | None:
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return (start, end) if start < end else None


def _earliest_of(d: date, wall: time, zone: ZoneInfo, latest: bool) -> datetime:
    # A wall time skipped by a spring-forward gap or repeated by a fall-back has two readings
    # (fold 0 and 1). Taking the later one for a window's start and the earlier one for its end
    # keeps every permitted instant inside the wall-clock window on both readings.
    readings = [
        datetime.combine(d, wall.replace(fold=fold), tzinfo=zone).astimezone(UTC) for fold in (0, 1)
    ]
    return max(readings) if latest else min(readings)


@dataclass(frozen=True)
class _Window:
    """The contact window of one contact on one channel, in each of the contact's zones."""

    zones: tuple[str, ...]
    zone_known: bool
    state: str | None
    rule: StateRule | None
    manager: Mapping[int, Hours | None] | None
    noun: str

    @property
    def floor(self) -> Hours:
        return _FLOOR if self.zone_known else _UNKNOWN_FLOOR

    def local_hours(self, d: date) -> tuple[Hours | None, str]:
        """Allowed local hours on a local date, or None and why the whole day is closed."""
        weekday = d.weekday()
        hours: Hours | None = self.floor
        if self.rule is not None and self.state is not None:
            state_hours = self.rule.hours[weekday]
            if state_hours is None:
                return None, f"no {self.noun} on {_DAY_NAMES[weekday]}s in {self.state}"
            if self.rule.no_state_holidays:
                holiday = _state_holidays(self.state, d.year).get(d)
                if holiday is not None:
                    return None, f"state holiday in {self.state} ({holiday})"
            hours = _intersect_hours(self.floor, state_hours)
        if self.manager is not None and hours is not None:
            manager_hours = self.manager.get(weekday)
            if manager_hours is None:
                return None, f"the practice sends no {self.noun} on {_DAY_NAMES[weekday]}s"
            hours = _intersect_hours(hours, manager_hours)
        return hours, "quiet hours"

    def interval(self, zone_name: str, d: date) -> tuple[datetime, datetime] | None:
        hours, _ = self.local_hours(d)
        if hours is None:
            return None
        zone = _zone(zone_name)
        start = _earliest_of(d, hours[0], zone, latest=True)
        end = _earliest_of(d, hours[1], zone, latest=False)
        return (start, end) if start < end else None

    def rejecting_zone(self, at: datetime) -> str | None:
        """The first zone whose window does not contain `at`, or None if all contain it."""
        for zone_name in self.zones:
            local_date = at.astimezone(_zone(zone_name)).date()
            interval = self.interval(zone_name, local_date)
            if interval is None or not interval[0] <= at < interval[1]:
                return zone_name
        return None

    def _intervals_from(self, zone_name: str, at: datetime) -> list[tuple[datetime, datetime]]:
        first = at.astimezone(_zone(zone_name)).date()
        result = []
        for offset in range(SEARCH_DAYS + 1):
            interval = self.interval(zone_name, first + timedelta(days=offset))
            if interval is not None and interval[1] > at:
                result.append(interval)
        return result

    def first_allowed(self, at: datetime) -> datetime | None:
        """The earliest instant >= `at` inside the window in every zone."""
        if self.rejecting_zone(at) is None:
            return at
        common = self._intervals_from(self.zones[0], at)
        for zone_name in self.zones[1:]:
            common = _intersect_intervals(common, self._intervals_from(zone_name, at))
        horizon = at + timedelta(days=SEARCH_DAYS)
        for start, _ in common:
            if start < horizon:
                return max(start, at)
        return None

    def describe(self, rejected_at: datetime, until: datetime) -> str:
        zone_name = self.rejecting_zone(rejected_at) or self.zones[0]
        zone = _zone(zone_name)
        local_rejected = rejected_at.astimezone(zone)
        local_until = until.astimezone(zone)
        _, cause = self.local_hours(local_rejected.date())
        if local_until.date() == local_rejected.date():
            when = f"{local_until:%H:%M}"
        else:
            when = f"{local_until:%a} {local_until.day} {local_until:%b %H:%M}"
        label = zone_name if self.zone_known else f"time zone unknown, {zone_name} assumed"
        return f"{cause} for the patient ({label}) until {when}"


def _intersect_intervals(
    a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    result = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            result.append((start, end))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return result


def patient_zones(phone: str, known_zone: str | None, state: str | None) -> tuple[str, ...]:
    """The zones the patient may be in: the known one, else their state's on file, else the
    number's, else none. Where the patient lives says more than the number's area code
    (kept after a move), and a state's rules read on another state's clock could start an
    hour early."""
    if known_zone is None and state:
        found = STATE_ZONES.get(state.upper())
        if found is not None:
            return found
    return contact_zones(phone, known_zone)


def _window_for(contact: ContactFacts, policy: Policy, channel: Channel) -> _Window:
    zones = patient_zones(contact.phone, contact.timezone, contact.state)
    state = contact.state.upper() if contact.state else state_for_number(contact.phone)
    return _Window(
        zones=zones or (_UNKNOWN_ZONE,),
        zone_known=bool(zones),
        state=state,
        rule=STATE_RULES.get(state) if state else None,
        # The manager's quiet hours are about texts; a call is an agent's judgement within the
        # legal window.
        manager=policy.texting_window if channel is Channel.TEXT else None,
        noun="texts" if channel is Channel.TEXT else "calls",
    )


def _ceil_minute(at: datetime) -> datetime:
    floored = at.replace(second=0, microsecond=0)
    return floored if floored == at else floored + timedelta(minutes=1)


def _rolling_bound(times: Sequence[datetime], limit: int, period: timedelta) -> datetime | None:
    """Earliest instant at which fewer than `limit` of `times` lie within the last `period`.

    An attempt exactly `period` ago no longer counts. Attempts stamped in the future (clock
    skew between workers) count until `period` after their stamp.
    """
    if len(times) < limit:
        return None
    return sorted(times, reverse=True)[limit - 1] + period


def _next_midnight(at: datetime, zone_name: str) -> datetime:
    zone = _zone(zone_name)
    tomorrow = at.astimezone(zone).date() + timedelta(days=1)
    # fold=0 gives the first instant of the new day even where midnight is skipped or repeated.
    return datetime.combine(tomorrow, time(0, 0), tzinfo=zone).astimezone(UTC)


Check = Callable[[datetime], datetime | None]


def _settle(
    start: datetime, checks: Sequence[tuple[str, Check]], *, round_always: bool
) -> tuple[datetime | None, dict[str, datetime]]:
    """Earliest instant >= start that passes every check, and where each check first moved it.

    Each check returns the earliest instant >= its argument that it accepts. They are applied in
    turn until none moves the instant, so a deferral never lands in quiet hours or over a cap.
    A deferral is rounded up to a whole minute, then checked again.
    """
    at = start
    moved_by: dict[str, datetime] = {}
    for _ in range(_MAX_ROUNDS):
        moved = False
        for name, check in checks:
            later = check(at)
            if later is None:
                return None, moved_by
            if later > at:
                moved_by.setdefault(name, at)
                at, moved = later, True
        if round_always or at != start:
            rounded = _ceil_minute(at)
            if rounded != at:
                at, moved = rounded, True
        if not moved:
            return at, moved_by
    raise AssertionError("unreachable: the compliance checks did not settle")


def next_allowed(
    start: datetime,
    contact: ContactFacts,
    policy: Policy,
    *,
    channel: Channel = Channel.TEXT,
) -> datetime | None:
    """The earliest whole minute >= start inside the contact window, in UTC.

    None if the window stays shut for SEARCH_DAYS. Caps are not considered here.
    """
    _require_aware(start, "start")
    window = _window_for(contact, policy, channel)
    at, _ = _settle(start.astimezone(UTC), [("window", window.first_allowed)], round_always=True)
    return at


def _at_least(bound: datetime | None) -> Check:
    return lambda at: at if bound is None else max(at, bound)


def evaluate(
    now: datetime,
    *,
    channel: Channel,
    purpose: Purpose,
    contact: ContactFacts,
    history: History,
    policy: Policy,
    in_flight_wait: timedelta = IN_FLIGHT_WAIT,
) -> Decision:
    """Whether the text or call may go now. `in_flight_wait`: how long a text waits for
    the practice's texts on the wire that may take its place under the daily cap."""
    _require_aware(now, "now")
    for at in (*history.attempts, *history.automated_texts):
        _require_aware(at, "history entry")
    if history.practice_sent_today < 0:
        raise ValueError(
            f"practice_sent_today must not be negative, not {history.practice_sent_today}"
        )
    now = now.astimezone(UTC)

    if number_facts(contact.phone) is None:
        return Block("not a valid phone number")

    if purpose is Purpose.REPLY:
        if channel is not Channel.TEXT:
            raise ValueError("a reply is a text; a call is MANUAL or AUTOMATED")
        # The patient has just written to us: answering HELP or confirming STOP at once is
        # expected (and the confirmation is required), so no window or cap holds it back.
        return Allowed()

    # Opting out of texts is not refusing a call the patient asked for, so an agent may still
    # ring; but nothing automated reaches an opted-out patient.
    if contact.opted_out and (channel is Channel.TEXT or purpose is Purpose.AUTOMATED):
        return Block("opted out")

    texting = channel is Channel.TEXT
    if texting and policy.daily_send_cap == 0:
        return Block("the practice's daily send cap is 0")

    window = _window_for(contact, policy, channel)
    checks: list[tuple[str, Check]] = [
        ("window", window.first_allowed),
        ("attempts", _at_least(_rolling_bound(history.attempts, ATTEMPTS_PER_DAY, _DAY))),
    ]
    if texting and purpose is Purpose.AUTOMATED:
        automated = history.automated_texts
        checks += [
            ("automated_day", _at_least(_rolling_bound(automated, AUTOMATED_TEXTS_PER_DAY, _DAY))),
            (
                "automated_week",
                _at_least(_rolling_bound(automated, AUTOMATED_TEXTS_PER_WEEK, _WEEK)),
            ),
        ]
    cap = policy.daily_send_cap
    if texting and cap is not None:
        if history.practice_sent_today >= cap:
            # The count is the practice's since its own midnight, so it is only known to be
            # back under the cap once that day is over.
            midnight = _next_midnight(now, policy.practice_timezone)
            checks.append(("practice_cap", _at_least(midnight)))
        elif history.practice_sent_today + history.practice_in_flight >= cap:
            # The last texts under the cap are on the wire: once they settle, this one
            # either fits or waits for the next day.
            checks.append(("practice_cap_in_flight", _at_least(now + in_flight_wait)))

    until, moved_by = _settle(now, checks, round_always=False)
    if until is None:
        return Block(f"no contact window for the patient in the next {SEARCH_DAYS} days")
    if until == now:
        return Allowed()

    reasons = {
        "attempts": f"{ATTEMPTS_PER_DAY} attempts in 24 h",
        "automated_day": f"{AUTOMATED_TEXTS_PER_DAY} automated text in 24 h",
        "automated_week": f"{AUTOMATED_TEXTS_PER_WEEK} automated texts in 7 days",
        "practice_cap": f"daily send cap reached ({cap} texts a day)",
        "practice_cap_in_flight": f"the last texts under the daily send cap ({cap}) are being sent",
    }
    parts = [
        window.describe(rejected_at, until) if name == "window" else reasons[name]
        for name, rejected_at in moved_by.items()
    ]
    return Defer(until=until, reason="; ".join(parts))
