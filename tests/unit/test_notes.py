"""The note quality check: useful notes pass, call-log shorthand is refused with an example."""

from __future__ import annotations

import pytest

from telephony_service.domain.notes import EXAMPLE, check_note, clean_note

GOOD = "Left voicemail re: referral scheduling; second attempt set for tomorrow morning."


def test_it_rejects_called_pt_with_the_helpful_message() -> None:
    problem = check_note("called pt")
    assert problem is not None
    assert EXAMPLE in problem
    assert "Say what happened and what comes next" in problem


def test_it_accepts_a_note_that_says_what_happened_and_what_comes_next() -> None:
    assert check_note(GOOD) is None
    assert check_note("Booked new patient visit with Dr. Ortiz, Tue 9:30; forms sent.") is None


@pytest.mark.parametrize(
    "note",
    [
        "",
        "   \n ",
        "lvm",
        "n/a",
        "done",
        "no answer",
        "left vm",
        "called",
        "Called pt, no answer, left VM.",
        "called patient again, left a voicemail message",
    ],
)
def test_it_rejects_empty_and_low_information_notes(note: str) -> None:
    assert check_note(note) is not None


@pytest.mark.parametrize("note", ["Rescheduled visit.", "Pt wants Tues appt"])
def test_it_rejects_notes_that_are_too_short(note: str) -> None:
    problem = check_note(note)
    assert problem is not None
    assert "too short" in problem


def test_it_rejects_the_same_word_over_and_over() -> None:
    assert check_note("test test test test test test") is not None


def test_it_says_a_note_is_required_when_there_is_none() -> None:
    assert check_note("") == f"A note is required. {EXAMPLE}"


def test_it_refuses_a_note_longer_than_the_limit() -> None:
    problem = check_note("Booked the visit for Tuesday. " * 200)
    assert problem is not None
    assert "under" in problem


def test_it_tidies_spaces_but_keeps_line_breaks() -> None:
    assert clean_note("  Booked   Tue 9:30.\n  Forms   sent.  ") == "Booked Tue 9:30.\nForms sent."
