"""Attempt cadences: what happens to an unanswered task, and when.

A cadence is data (stored per practice and category, edited by managers), a list of steps
run in order. Each step's time is counted from the step before it, in the practice's
business calendar, so a task that arrives on a Friday evening is not texted on Sunday.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from telephony_service.domain.calendar import BusinessCalendar
from telephony_service.domain.categories import Category


class Action(enum.StrEnum):
    TEXT = "text"  # an automated text
    CALL = "call"  # a call attempt is due: the task comes up in the agents' queue
    CLOSE = "close"  # the cadence is exhausted: closed_no_response


class When(enum.StrEnum):
    IMMEDIATELY = "immediately"
    SLA = "sla"  # the category's first-response deadline
    NEXT_BUSINESS_MORNING = "next_business_morning"
    BUSINESS_DAYS_LATER = "business_days_later"
    CLOSE_OF_DAY = "close_of_day"


# Templates a cadence may send; the others (replies) answer a patient's own message.
CADENCE_TEMPLATES = frozenset({"text_back", "second_attempt", "final_message"})


@dataclass(frozen=True)
class Step:
    action: Action
    when: When
    template: str | None = None
    days: int = 1
    at: time | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action.value, "when": self.when.value}
        if self.template is not None:
            data["template"] = self.template
        if self.when is When.BUSINESS_DAYS_LATER:
            data["days"] = self.days
        if self.at is not None:
            data["at"] = self.at.strftime("%H:%M")
        return data


class CadenceInvalid(ValueError):
    pass


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_steps(data: Mapping[str, Any]) -> tuple[Step, ...]:
    """Steps from their stored JSON form, checked as strictly as a manager's edit."""
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise CadenceInvalid("a cadence needs a non-empty list of steps")
    steps = []
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            raise CadenceInvalid(f"step {number}: expected an object")
        try:
            action = Action(str(raw.get("action")))
            when = When(str(raw.get("when")))
        except ValueError:
            raise CadenceInvalid(f"step {number}: unknown action or when") from None
        template = raw.get("template")
        if action is Action.TEXT and template is None:
            raise CadenceInvalid(f"step {number}: a text step needs a template")
        if template is not None and template not in CADENCE_TEMPLATES:
            raise CadenceInvalid(f"step {number}: unknown template {template!r}")
        if action is Action.CLOSE and template is not None:
            raise CadenceInvalid(f"step {number}: closing sends nothing")
        days = raw.get("days", 1)
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 30:
            raise CadenceInvalid(f"step {number}: days must be a whole number from 1 to 30")
        at = None
        if raw.get("at") is not None:
            match = _CLOCK.match(str(raw["at"]))
            if match is None:
                raise CadenceInvalid(f"step {number}: at must be HH:MM")
            at = time(int(match[1]), int(match[2]))
        steps.append(Step(action=action, when=when, template=template, days=days, at=at))
    if steps[-1].action is not Action.CLOSE:
        raise CadenceInvalid("the last step must close the task")
    if any(step.action is Action.CLOSE for step in steps[:-1]):
        raise CadenceInvalid("only the last step may close the task")
    return tuple(steps)


def dump_steps(steps: Sequence[Step]) -> dict[str, Any]:
    return {"steps": [step.to_json() for step in steps]}


_MORNING = time(9, 0)
_FINAL = time(10, 0)

# The design's default: a text right after a missed call; attempt 1 by the SLA; attempt 2
# the next business morning with a text; a final message two business days later; then
# closed_no_response at that day's close.
_WITH_TEXT_BACK = (
    Step(Action.TEXT, When.IMMEDIATELY, template="text_back"),
    Step(Action.CALL, When.SLA),
    Step(Action.CALL, When.NEXT_BUSINESS_MORNING, template="second_attempt", at=_MORNING),
    Step(Action.TEXT, When.BUSINESS_DAYS_LATER, template="final_message", days=2, at=_FINAL),
    Step(Action.CLOSE, When.CLOSE_OF_DAY),
)
# Inquiries did not ring unanswered: no "we missed your call" text.
_WITHOUT_TEXT_BACK = _WITH_TEXT_BACK[1:]

DEFAULT_CADENCES: Mapping[Category, tuple[Step, ...]] = {
    category: (
        _WITH_TEXT_BACK
        if category in (Category.MISSED_CALL, Category.VOICEMAIL)
        else _WITHOUT_TEXT_BACK
    )
    for category in Category
}


def step_due(
    step: Step,
    *,
    previous: datetime,
    sla_due: datetime,
    calendar: BusinessCalendar,
) -> datetime:
    """When a step falls due, counted from the previous step's time (or the task's
    creation, for the first step)."""
    if step.when is When.IMMEDIATELY:
        return previous
    if step.when is When.SLA:
        return max(previous, sla_due)
    if step.when is When.NEXT_BUSINESS_MORNING:
        return calendar.next_open(calendar.next_business_day_at(previous, step.at or _MORNING))
    if step.when is When.BUSINESS_DAYS_LATER:
        due = previous
        for _ in range(step.days):
            due = calendar.next_business_day_at(due, step.at or _FINAL)
        return calendar.next_open(due)
    return calendar.close_of_day(previous)
