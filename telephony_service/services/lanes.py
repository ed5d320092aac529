"""Lanes: the categories an agent owns during set hours ("new patients, weekdays 8-12").

A lane's hours are practice-local wall-clock times stored like Practice.business_hours
({"mon": [["08:00", "12:00"]], ...}); no hours at all means the lane is always on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.domain.calendar import DAY_KEYS, dump_weekly_hours, parse_weekly_hours
from telephony_service.domain.categories import LABELS, Category
from telephony_service.models import Lane, Practice, User
from telephony_service.services.practices import InvalidInput

ALWAYS = "always"
MAX_NAME = 100


@dataclass(frozen=True)
class LaneView:
    """A lane as the queue page and the CLI show it."""

    id: int
    user_id: int
    name: str
    categories: tuple[str, ...]
    hours: dict[str, list[list[str]]]

    @property
    def category_labels(self) -> tuple[str, ...]:
        return tuple(LABELS[Category(value)] for value in self.categories)

    @property
    def hours_text(self) -> str:
        return describe_hours(self.hours)


# --- parsing what an operator types ----------------------------------------------------


def parse_categories(values: str | Iterable[str]) -> tuple[str, ...]:
    """Category values from "a,b" or a list; unknown names are refused with the valid ones."""
    parts = values.split(",") if isinstance(values, str) else list(values)
    chosen: list[str] = []
    known = {category.value for category in Category}
    for raw in parts:
        value = raw.strip().lower()
        if not value:
            continue
        if value not in known:
            raise InvalidInput(
                f"{value!r} is not a category; use some of {', '.join(sorted(known))}"
            )
        if value not in chosen:
            chosen.append(value)
    if not chosen:
        raise InvalidInput("a lane needs at least one category")
    return tuple(chosen)


def parse_hours(spec: str | None) -> dict[str, list[list[str]]]:
    """Weekly hours from "mon-fri 08:00-12:00; sat 09:00-11:00,13:00-15:00".

    Groups are separated by ";"; a group is days (a day, a range such as mon-fri or
    fri-mon, or a list such as mon,wed) then one or more HH:MM-HH:MM intervals. Empty or
    "always" means the lane is always on. Intervals cannot cross midnight: write the two
    days' parts as two groups.
    """
    text = (spec or "").strip()
    if not text or text.lower() == ALWAYS:
        return {}
    week: dict[str, list[list[str]]] = {}
    for group in text.split(";"):
        group = group.strip()
        if not group:
            continue
        day_part, _, time_part = group.partition(" ")
        days = _parse_days(day_part, group)
        intervals = _parse_intervals(time_part, group)
        for day in days:
            week.setdefault(day, []).extend(intervals)
    for intervals in week.values():
        intervals.sort()
    try:
        parsed = parse_weekly_hours(week)
    except ValueError as exc:
        raise InvalidInput(f"lane hours: {exc}") from None
    # Only the days that have hours: an empty mapping is the "always" lane.
    return {day: spans for day, spans in dump_weekly_hours(parsed).items() if spans}


def _parse_days(text: str, group: str) -> list[str]:
    days: list[str] = []
    for part in text.lower().split(","):
        start, dash, end = part.strip().partition("-")
        first = _day_index(start, group)
        if not dash:
            days.append(DAY_KEYS[first])
            continue
        last = _day_index(end, group)
        # A range may wrap the weekend (fri-mon).
        span = (last - first) % 7
        days.extend(DAY_KEYS[(first + offset) % 7] for offset in range(span + 1))
    return days


def _day_index(text: str, group: str) -> int:
    key = text.strip()[:3]
    if len(text.strip()) < 3 or key not in DAY_KEYS:
        raise InvalidInput(
            f"lane hours {group!r}: {text.strip()!r} is not a day; write e.g. mon-fri 08:00-12:00"
        )
    return DAY_KEYS.index(key)


def _parse_intervals(text: str, group: str) -> list[list[str]]:
    intervals: list[list[str]] = []
    for part in text.split(","):
        opens, dash, closes = part.strip().partition("-")
        if not dash or not opens.strip() or not closes.strip():
            raise InvalidInput(
                f"lane hours {group!r}: give times as HH:MM-HH:MM, e.g. mon-fri 08:00-12:00"
            )
        intervals.append([opens.strip(), closes.strip()])
    return intervals


def describe_hours(hours: dict[str, Any]) -> str:
    """Stored hours back in the form parse_hours reads, days with equal hours grouped."""
    if not hours:
        return ALWAYS
    groups: list[tuple[list[int], str]] = []
    for index, day in enumerate(DAY_KEYS):
        spans = hours.get(day) or []
        if not spans:
            continue
        text = ",".join(f"{opens}-{closes}" for opens, closes in spans)
        if groups and groups[-1][1] == text and groups[-1][0][-1] == index - 1:
            groups[-1][0].append(index)
        else:
            groups.append(([index], text))
    parts = []
    for indexes, text in groups:
        days = DAY_KEYS[indexes[0]]
        if len(indexes) > 1:
            days = f"{days}-{DAY_KEYS[indexes[-1]]}"
        parts.append(f"{days} {text}")
    return "; ".join(parts)


# --- lanes -------------------------------------------------------------------------------


def add_lane(
    session: Session,
    *,
    practice_id: int,
    user_id: int,
    name: str,
    categories: str | Iterable[str],
    hours: str | None,
    now: datetime,
) -> Lane:
    practice = session.get(Practice, practice_id)
    if practice is None:
        raise InvalidInput(f"there is no practice {practice_id}")
    user = session.get(User, user_id)
    # The same message for "no such user" and "another practice's user": the CLI is
    # run per practice and should not confirm ids of other practices.
    if user is None or user.practice_id != practice_id:
        raise InvalidInput(f"practice {practice_id} has no user {user_id}")
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"the lane name must be 1 to {MAX_NAME} characters")
    lane = Lane(
        practice_id=practice_id,
        user_id=user_id,
        name=name,
        categories={"categories": list(parse_categories(categories))},
        hours=parse_hours(hours),
        created_at=now,
    )
    session.add(lane)
    session.flush()
    return lane


def list_lanes(session: Session, practice_id: int, *, user_id: int | None = None) -> list[LaneView]:
    query = select(Lane).where(Lane.practice_id == practice_id)
    if user_id is not None:
        query = query.where(Lane.user_id == user_id)
    return [view(lane) for lane in session.scalars(query.order_by(Lane.user_id, Lane.id))]


def view(lane: Lane) -> LaneView:
    return LaneView(
        id=lane.id,
        user_id=lane.user_id,
        name=lane.name,
        categories=tuple(lane.categories.get("categories", ())),
        hours=dict(lane.hours),
    )


def is_active(hours: dict[str, Any], now: datetime, timezone: str) -> bool:
    """Whether a lane with these hours is on at `now` (aware) in the practice's zone."""
    if not hours:
        return True
    local = now.astimezone(ZoneInfo(timezone))
    spans: Sequence[Sequence[str]] = hours.get(DAY_KEYS[local.weekday()]) or []
    wall = local.time().replace(tzinfo=None)
    return any(_clock(opens) <= wall < _clock(closes) for opens, closes in spans)


def _clock(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def active_lanes(
    session: Session, *, practice: Practice, user: User, now: datetime
) -> list[LaneView]:
    """The user's lanes that are on now."""
    return [
        lane
        for lane in list_lanes(session, practice.id, user_id=user.id)
        if is_active(lane.hours, now, practice.timezone)
    ]


def lane_categories(lanes: Iterable[LaneView]) -> tuple[str, ...]:
    seen: list[str] = []
    for lane in lanes:
        seen.extend(category for category in lane.categories if category not in seen)
    return tuple(seen)
