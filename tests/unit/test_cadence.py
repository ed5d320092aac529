"""Cadences as data: defaults, validation of a manager's edit, and step times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from telephony_service.domain.cadence import (
    DEFAULT_CADENCES,
    Action,
    CadenceInvalid,
    When,
    dump_steps,
    parse_steps,
    step_due,
)
from telephony_service.domain.calendar import BusinessCalendar
from telephony_service.domain.categories import Category

BOSTON = BusinessCalendar("America/New_York")


def test_it_texts_back_only_after_calls() -> None:
    for category, steps in DEFAULT_CADENCES.items():
        texts_back = steps[0].template == "text_back"
        assert texts_back == (category in (Category.MISSED_CALL, Category.VOICEMAIL))
        assert steps[-1].action is Action.CLOSE


def test_it_round_trips_the_stored_form() -> None:
    steps = DEFAULT_CADENCES[Category.MISSED_CALL]
    assert parse_steps(dump_steps(steps)) == steps


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"steps": []}, "non-empty"),
        (
            {"steps": [{"action": "text", "when": "sla"}, {"action": "close", "when": "sla"}]},
            "template",
        ),
        ({"steps": [{"action": "call", "when": "sla"}]}, "last step"),
        (
            {"steps": [{"action": "fax", "when": "sla"}, {"action": "close", "when": "sla"}]},
            "unknown",
        ),
        (
            {
                "steps": [
                    {"action": "text", "when": "sla", "template": "diagnosis"},
                    {"action": "close", "when": "sla"},
                ]
            },
            "unknown template",
        ),
        (
            {
                "steps": [
                    {"action": "call", "when": "business_days_later", "days": 0},
                    {"action": "close", "when": "sla"},
                ]
            },
            "days",
        ),
        (
            {
                "steps": [
                    {"action": "call", "when": "sla", "at": "25:00"},
                    {"action": "close", "when": "sla"},
                ]
            },
            "HH:MM",
        ),
    ],
)
def test_it_rejects_a_broken_cadence(data: dict[str, object], problem: str) -> None:
    with pytest.raises(CadenceInvalid, match=problem):
        parse_steps(data)


def test_it_counts_the_second_attempt_from_the_next_business_morning() -> None:
    friday_evening = datetime(2026, 11, 20, 21, 30, tzinfo=UTC)  # 16:30 in Boston
    [_, _, second, final, close] = DEFAULT_CADENCES[Category.MISSED_CALL]
    monday = step_due(second, previous=friday_evening, sla_due=friday_evening, calendar=BOSTON)
    assert monday == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # Monday 09:00
    due = step_due(second, previous=monday, sla_due=monday, calendar=BOSTON)
    assert due == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # Tuesday 09:00
    # Two business days later, across Thanksgiving (Thu 26 Nov 2026): Wednesday, Friday.
    final_due = step_due(final, previous=due, sla_due=due, calendar=BOSTON)
    assert final_due == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # Friday 10:00
    assert step_due(close, previous=final_due, sla_due=due, calendar=BOSTON) == datetime(
        2026, 11, 27, 22, 0, tzinfo=UTC
    )


def test_it_never_schedules_the_sla_step_before_the_previous_one() -> None:
    [first, sla_step, *_] = DEFAULT_CADENCES[Category.MISSED_CALL]
    now = datetime(2026, 11, 17, 15, 0, tzinfo=UTC)
    assert step_due(first, previous=now, sla_due=now, calendar=BOSTON) == now
    assert first.when is When.IMMEDIATELY
    later = datetime(2026, 11, 17, 16, 0, tzinfo=UTC)
    assert step_due(sla_step, previous=later, sla_due=now, calendar=BOSTON) == later
