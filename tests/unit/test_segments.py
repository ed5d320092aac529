from __future__ import annotations

import pytest

from telephony_service.domain.segments import (
    GSM_BASIC,
    GSM_EXTENSION,
    Segments,
    count_segments,
    normalise_text,
)

EURO = "\u20ac"
HAN = "\u4e2d"  # one UTF-16 unit, outside GSM-7
EMOJI = "\U0001f600"  # two UTF-16 units


def test_it_holds_the_whole_gsm_alphabet_less_the_escape() -> None:
    assert len(GSM_BASIC) == 127
    assert "\x1b" not in GSM_BASIC
    assert set("^{}\\[~]|\f" + EURO) == GSM_EXTENSION
    assert count_segments("".join(sorted(GSM_BASIC))) == Segments("GSM-7", 127, 1)


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_it_counts_gsm_segments_at_the_boundaries(length: int, segments: int) -> None:
    assert count_segments("a" * length) == Segments("GSM-7", length, segments)


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_it_counts_ucs2_segments_at_the_boundaries(length: int, segments: int) -> None:
    assert count_segments(HAN * length) == Segments("UCS-2", length, segments)


def test_it_counts_an_empty_text_as_nothing_to_send() -> None:
    assert count_segments("") == Segments("GSM-7", 0, 0)


@pytest.mark.parametrize("char", sorted(GSM_EXTENSION))
def test_it_counts_each_extension_character_as_two_units(char: str) -> None:
    assert count_segments(char) == Segments("GSM-7", 2, 1)


def test_it_counts_extension_characters_at_the_single_segment_boundary() -> None:
    assert count_segments(EURO * 80) == Segments("GSM-7", 160, 1)
    assert count_segments("a" * 158 + "[") == Segments("GSM-7", 160, 1)
    assert count_segments("a" * 159 + "[") == Segments("GSM-7", 161, 2)
    assert count_segments(EURO * 80 + "a") == Segments("GSM-7", 161, 2)


def test_it_never_splits_an_escape_pair_across_segments() -> None:
    # 152 + 2 would straddle the 153-septet boundary, so the euro opens segment two.
    assert count_segments("a" * 151 + EURO + "a" * 153) == Segments("GSM-7", 306, 2)
    assert count_segments("a" * 152 + EURO + "a" * 152) == Segments("GSM-7", 306, 3)


def test_it_counts_an_emoji_as_two_units() -> None:
    assert count_segments(EMOJI) == Segments("UCS-2", 2, 1)
    assert count_segments(EMOJI * 35) == Segments("UCS-2", 70, 1)
    assert count_segments(EMOJI * 35 + "a") == Segments("UCS-2", 71, 2)
    assert count_segments("a" * 159 + EMOJI) == Segments("UCS-2", 161, 3)


def test_it_never_splits_a_surrogate_pair_across_segments() -> None:
    assert count_segments(HAN * 65 + EMOJI + HAN * 67) == Segments("UCS-2", 134, 2)
    assert count_segments(HAN * 66 + EMOJI + HAN * 66) == Segments("UCS-2", 134, 3)


@pytest.mark.parametrize("char", ["\u2019", "\u00a0", "`", "\u00e1", "\u00e7", "\u2014", HAN])
def test_it_switches_the_whole_text_to_ucs2_for_one_foreign_character(char: str) -> None:
    assert count_segments("a" * 100 + char) == Segments("UCS-2", 101, 2)


def test_it_treats_accented_letters_in_the_alphabet_as_gsm() -> None:
    assert count_segments("Ren\u00e9e M\u00fcller, Espa\u00f1a, \u00c7a va").encoding == "GSM-7"


@pytest.mark.parametrize(
    ("pasted", "plain"),
    [
        ("O\u2019Neil", "O'Neil"),
        ("\u2018quoted\u2019", "'quoted'"),
        ("\u201cquoted\u201d", '"quoted"'),
        ("\u201equoted\u201f", '"quoted"'),
        ("Kapi\u02bbolani", "Kapi'olani"),
        ("it`s", "it's"),
        ("a\u00a0b", "a b"),
        ("a\u2002b\u2003c\u2009d\u200ae", "a b c d e"),
        ("a\u202fb\u205fc\u3000d", "a b c d"),
        ("a\u200bb", "ab"),
        ("a\u200cb\u2060c\ufeffd\u00ade", "abcde"),
        ("a\u200eb\u202ec", "abc"),
        ("9\u201310", "9-10"),
        ("now\u2014today", "now-today"),
        ("\u22125", "-5"),
        ("wait\u2026", "wait..."),
        ("\u2022 item", "- item"),
        ("1\u20442", "1/2"),
        ("\uff33\uff54\uff4f\uff50\uff01", "Stop!"),
        ("e\u0301", "\u00e9"),
        ("line\u2028next", "line\nnext"),
        ("tab\there", "tab here"),
    ],
)
def test_it_replaces_copy_paste_characters_with_gsm_equivalents(pasted: str, plain: str) -> None:
    assert normalise_text(pasted) == plain
    assert count_segments(normalise_text(pasted)).encoding == "GSM-7"


def test_it_strips_control_characters_but_keeps_newlines() -> None:
    assert normalise_text("a\x00b\x07c\x1bd\x7fe\x9ff\ng") == "abcdef\ng"


def test_it_turns_every_line_ending_into_a_newline() -> None:
    assert normalise_text("a\r\nb\rc\nd") == "a\nb\nc\nd"


def test_it_drops_a_stray_joiner_but_keeps_emoji_sequences_whole() -> None:
    assert normalise_text("Smith\u200d Clinic") == "Smith Clinic"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert normalise_text(family) == family
    heart = "\u2764\ufe0f"
    assert normalise_text(heart) == heart


def test_it_leaves_emoji_and_other_scripts_alone() -> None:
    text = f"Gracias {EMOJI} \u00c1ngel \u4e2d\u6587"
    assert normalise_text(text) == text


def test_it_is_idempotent() -> None:
    pasted = "O\u2019Neil\u00a0\u2014 \u201cFamily\u201d\u2026\x07\r\n\u2022"
    once = normalise_text(pasted)
    assert normalise_text(once) == once
