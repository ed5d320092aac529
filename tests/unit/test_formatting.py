"""How staff pages write times and stored codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from telephony_service.formatting import (
    clock,
    flag_label,
    helpers,
    local,
    next_action_label,
    relative,
)

NOW = datetime(2026, 11, 17, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (timedelta(seconds=30), "just now"),
        (timedelta(minutes=-12), "12 min ago"),
        (timedelta(hours=3, minutes=5), "in 3 h 5 min"),
        (timedelta(hours=30), "in 30 h"),
        (timedelta(days=-2, hours=-1), "2 days ago"),
    ],
)
def test_it_says_how_far_a_moment_is_from_now(offset: timedelta, words: str) -> None:
    assert relative(NOW + offset, NOW) == words
    assert relative(None, NOW) == ""


def test_it_writes_the_practices_wall_clock_on_twelve_hours() -> None:
    assert clock(datetime(2026, 11, 17, 0, 5)) == "12:05 AM"
    assert clock(datetime(2026, 11, 17, 13, 30)) == "1:30 PM"
    assert local(NOW, ZoneInfo("America/New_York")) == "Tue Nov 17, 10:00 AM EST"


def test_it_names_stored_codes_and_shows_unknown_ones_readably() -> None:
    assert next_action_label("clinical_review") == "Clinical review"
    assert flag_label("wrong_number") == "Wrong number"
    assert flag_label("carrier_blocked") == "Carrier blocked"
    shown = helpers("America/New_York", NOW)
    assert shown["status_label"]("needs_clinical_escalation") == "Needs clinical escalation"
    assert shown["category_label"]("post_visit") == "Post-visit follow-up"
