"""Call scripts: voice_templates/scripts/ rendered with the task's context."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from telephony_service.domain.categories import Category
from telephony_service.models import User
from telephony_service.services.scripts import (
    Blank,
    CallScript,
    When,
    agent_name,
    parse_script,
    render_script,
    spoken_reason,
    when_of,
)

ESCALATION = (
    "I can help with the scheduling side. For clinical symptoms or medical advice, "
    "I'll route your question to the appropriate care team."
)
NEW_YORK = ZoneInfo("America/New_York")
# Tuesday 17 November 2026, 10:00 in New York.
NOW = datetime(2026, 11, 17, 15, 0, tzinfo=UTC)
THIS_MORNING = When("today", "morning", "Tuesday")


def _script(category: str, reason: str | None = None, when: When = THIS_MORNING) -> CallScript:
    return render_script(
        category,
        agent="Sam",
        practice="Riverside Family Medicine",
        practice_number="(617) 555-0100",
        reason=reason,
        when=when,
    )


def test_it_fills_the_opening_line_with_the_context() -> None:
    script = _script("referral", reason="Referral from Dr. Lee")
    assert script.section("opening").text == (
        "Hi, this is Sam calling from Riverside Family Medicine. I'm following up on your "
        "referral from Dr. Lee from this morning so we can help you find the right visit time."
    )


@pytest.mark.parametrize("category", [c.value for c in Category])
def test_it_renders_every_category_with_the_exact_escalation_phrase(category: str) -> None:
    script = _script(category)
    assert [s.key for s in script.sections] == [
        "opening",
        "verification",
        "options",
        "escalation",
        "closing",
        "voicemail",
    ]
    assert script.section("escalation").lines[0].text == ESCALATION
    assert script.section("options").lines
    # Nothing left unfilled: no template syntax and no {placeholder} in what is shown.
    assert not re.search(r"[{}]", script.text)
    assert script.blanks == ("day", "time", "provider")


@pytest.mark.parametrize(
    ("category", "fallback"),
    [
        ("missed_call", "missed call"),
        ("voicemail", "voicemail"),
        ("new_patient_request", "new patient request"),
        ("referral", "referral"),
        ("cancellation", "cancelled appointment"),
    ],
)
def test_it_says_the_category_when_the_task_has_no_reason(category: str, fallback: str) -> None:
    assert f"following up on your {fallback} from this morning" in _script(category).text


def test_it_leaves_the_visit_day_time_and_provider_as_blanks_for_the_agent() -> None:
    closing = _script("new_patient_request").section("closing").lines[0]
    assert closing.style == "said"
    assert closing.pieces[:6] == (
        "You're set for ",
        Blank("day"),
        " at ",
        Blank("time"),
        " with ",
        Blank("provider"),
    )


def test_it_keeps_details_off_voicemail_and_verifies_before_details() -> None:
    script = _script("referral", reason="MRI results")
    voicemail = script.section("voicemail").text
    assert "MRI" not in voicemail
    assert "referral" not in voicemail
    assert "(617) 555-0100" in voicemail
    assert "date of birth" in script.section("verification").text


@pytest.mark.parametrize(
    ("created", "spoken"),
    [
        (datetime(2026, 11, 17, 13, 30, tzinfo=UTC), "from this morning"),
        (datetime(2026, 11, 16, 19, 0, tzinfo=UTC), "from yesterday afternoon"),
        (datetime(2026, 11, 16, 23, 30, tzinfo=UTC), "from yesterday evening"),
        (datetime(2026, 11, 13, 15, 0, tzinfo=UTC), "from Friday"),
        (datetime(2026, 11, 3, 15, 0, tzinfo=UTC), "from November 3"),
    ],
)
def test_it_says_when_relative_to_now_in_the_practice_zone(created: datetime, spoken: str) -> None:
    assert spoken in _script("missed_call", when=when_of(created, NOW, NEW_YORK)).text


def test_it_counts_days_on_the_practice_clock_not_utc() -> None:
    # 03:30 UTC on the 17th is 22:30 on the 16th in New York: yesterday evening there.
    when = when_of(datetime(2026, 11, 17, 3, 30, tzinfo=UTC), NOW, NEW_YORK)
    assert when == When("yesterday", "evening", "Monday")


def test_it_introduces_the_agent_by_name_or_the_email_local_part() -> None:
    assert agent_name(User(name="Sam Ortiz", email="sam@clinic.example")) == "Sam Ortiz"
    assert agent_name(User(name=None, email="jo.smith@clinic.example")) == "jo.smith"
    assert agent_name(User(name="  ", email="jo@clinic.example")) == "jo"


def test_it_shortens_a_long_reason_to_something_sayable() -> None:
    long = "Wants to book a visit for a sore knee and also " + "asks about parking " * 10
    spoken = spoken_reason(long)
    assert spoken is not None
    assert len(spoken) <= 83
    assert spoken.endswith("...")
    assert spoken_reason("Knee pain.") == "knee pain"
    assert spoken_reason("MRI results") == "MRI results"
    assert spoken_reason("   ") is None


def test_it_reads_sections_lines_and_blanks() -> None:
    [section] = parse_script("[closing] Recap\n> Set for [[day]].\n- an option\nguidance")
    assert section.title == "Recap"
    assert [line.style for line in section.lines] == ["said", "option", "guidance"]
    assert section.lines[0].pieces == ("Set for ", Blank("day"), ".")
