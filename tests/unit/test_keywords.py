from __future__ import annotations

import pytest

from telephony_service.domain.keywords import (
    HELP_KEYWORDS,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    Intent,
    classify,
)


def test_it_knows_the_carrier_keywords() -> None:
    assert {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
    } == OPT_OUT_KEYWORDS
    assert {"START", "UNSTOP", "YES"} == OPT_IN_KEYWORDS
    assert {"HELP", "INFO"} == HELP_KEYWORDS


@pytest.mark.parametrize("keyword", sorted(OPT_OUT_KEYWORDS))
def test_it_reads_every_opt_out_keyword_in_any_case(keyword: str) -> None:
    assert classify(keyword) is Intent.OPT_OUT
    assert classify(keyword.lower()) is Intent.OPT_OUT
    assert classify(keyword.capitalize()) is Intent.OPT_OUT


@pytest.mark.parametrize("keyword", sorted(OPT_IN_KEYWORDS))
def test_it_reads_every_opt_in_keyword_in_any_case(keyword: str) -> None:
    assert classify(keyword) is Intent.OPT_IN
    assert classify(keyword.lower()) is Intent.OPT_IN
    assert classify(keyword.capitalize()) is Intent.OPT_IN


@pytest.mark.parametrize("keyword", sorted(HELP_KEYWORDS))
def test_it_reads_every_help_keyword_in_any_case(keyword: str) -> None:
    assert classify(keyword) is Intent.HELP
    assert classify(keyword.lower()) is Intent.HELP
    assert classify(keyword.capitalize()) is Intent.HELP


@pytest.mark.parametrize(
    "body",
    [
        "Stop.",
        " STOP!! ",
        "stop\n",
        "\tStop\r\n",
        "Stop 🙏",
        "🙏 stop",
        '"stop"',
        "sToP?!",
        "STOP…",
        "\uff33\uff34\uff2f\uff30",
        "st\u200bop",
        "Opt-out",
        "opt out",
        "Stop all",
        "End.",
        "cancel!",
    ],
)
def test_it_tolerates_case_space_punctuation_and_emoji_around_an_opt_out(body: str) -> None:
    assert classify(body) is Intent.OPT_OUT


@pytest.mark.parametrize("body", ["Start.", " unstop ", "Yes!", "yes 👍", "Un-stop"])
def test_it_tolerates_decoration_around_an_opt_in(body: str) -> None:
    assert classify(body) is Intent.OPT_IN


@pytest.mark.parametrize("body", ["Help?", " info ", "HELP!!!", "Info."])
def test_it_tolerates_decoration_around_help(body: str) -> None:
    assert classify(body) is Intent.HELP


@pytest.mark.parametrize(
    "body",
    [
        "please stop texting me",
        "Please stop texting me!",
        "don't text me",
        "Don\u2019t text me",
        "dont txt me",
        "do not text me anymore",
        "Do not contact me",
        "remove me from your list",
        "Please remove my number",
        "no more texts",
        "No more messages please",
        "stop messaging me",
        "Stop sending me these messages",
        "quit texting me",
        "unsubscribe me",
        "How do I unsubscribe?",
        "take me off your list",
        "Take my number off your list",
        "wrong number, stop",
        "Wrong number",
        "You have the wrong number",
        "Stop it",
        "stop please",
        "Please stop",
        "STOP STOP",
        "Stop 2",
        "STOP. Who is this?",
        "Who is this? Stop",
        "I said STOP",
        "Who is this, STOP texting",
        "Opt me out",
        "I already opted out",
        "I revoke my consent",
        "cancel these texts",
        "Cancel all text reminders",
        "end these messages",
        "I no longer wish to receive text messages",
        "I don't want any more texts",
        "I do not want to be contacted",
        "Don't call me again",
        "Never call this number",
        "leave me alone",
        "Not interested",
        "Lose my number",
        "🛑",
        "Stop with the texts",
    ],
)
def test_it_recognises_a_free_text_revocation(body: str) -> None:
    assert classify(body) is Intent.REVOCATION


@pytest.mark.parametrize(
    "body",
    [
        "Can you stop by tomorrow?",
        "I'll stop at the front desk on my way in",
        "Stop by after 3?",
        "I want to cancel my appointment",
        "Cancel my appointment please",
        "Can I cancel and rebook for Friday?",
        "At the end of the call you said to text back",
        "I ended up going to urgent care",
        "I'm at the bus stop, running late",
        "Stopped by yesterday but you were closed",
        "Please text me the address",
        "Can you call me after 5?",
        "Don't forget to call me back",
        "Don't call me at work, this number is fine after 6",
        "Please don't stop calling, I keep missing you",
        "I quit smoking, do I still need the appointment?",
        "Yes please call me back",
        "Starting Monday I can come in",
        "Information about parking?",
        "Help me reschedule",
        "Thanks!",
        "👍",
        "",
        "   ",
    ],
)
def test_it_does_not_mistake_a_lookalike_for_an_opt_out(body: str) -> None:
    assert classify(body) is Intent.OTHER


def test_it_treats_a_missing_body_as_other() -> None:
    assert classify(None) is Intent.OTHER


def test_it_prefers_the_keyword_to_a_revocation_for_a_single_word() -> None:
    assert classify("Unsubscribe") is Intent.OPT_OUT
    assert classify("Unsubscribe me") is Intent.REVOCATION
