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
        # Calls and texts refused together.
        "Do not call or text me",
        "Please don't call or text this number",
        "don't call or text",
        "dont call or txt",
        "do not text or call",
        "Don't call me again or text me",
        "Don't call me, or text me",
        "Never call or text me",
        "Do not call/text me",
        "don't call & text me",
        "don't call and text me",
        "Do not call, text, or email me",
        "Do not call, text or email me",
        "Stop calling and texting me",
        "Stop calling me and texting me",
        "Stop the calls and texts",
        "No more calls or texts",
        # "No" texts.
        "No texts please",
        "no texts",
        "no text messages",
        "No text message please",
        "No text, call me instead",
        "No texts or calls",
        "No calls or texts",
        "Please no more text messages",
        "Hi, no texts please",
        "no further texts thanks",
        "No SMS",
        "No contact please",
        "Call me but no texts please",
        # Consent.
        "I do not consent to receive text messages",
        "I don't consent",
        "I do not consent.",
        "I no longer consent to texts",
        "I never consented to these messages",
        "You don't have my permission to text me",
        "I withdraw my consent",
        "I am withdrawing my consent",
        "I rescind my consent",
        "I revoke consent",
        "Consent withdrawn",
        "My consent is revoked",
        "I never signed up for these texts",
        "I didn't ask for these messages",
        # All communication.
        "Please cease all communication",
        "Please cease all communications",
        "stop all communication",
        "cease contact",
        "Please stop all contact",
        "Do not communicate with me",
        "Cease and desist",
        # Already caught; kept here beside their variants.
        "no more texts",
        "do not contact me",
        "remove me from your list",
        "unsubscribe me",
    ],
)
def test_it_recognises_a_revocation_of_texts_in_other_words(body: str) -> None:
    assert classify(body) is Intent.REVOCATION


@pytest.mark.parametrize(
    "body",
    [
        "Don't call me again",
        "Never call this number",
        "Stop calling me",
        "No more calls",
        "You don't have my permission to call me",
    ],
)
def test_a_refusal_of_calls_alone_is_still_a_revocation(body: str) -> None:
    assert classify(body) is Intent.REVOCATION


@pytest.mark.parametrize(
    "body",
    [
        "don't call, text me please",
        "Don't call, text or email me instead",
        "Don't call me, text me or email me",
        "don't call, and text me the results",
        "Don't call me again, text me please",
        "Don't call me anymore, just text",
        "Never call this number, just text",
        "Stop calling me, text me instead",
        "Stop calling. Text me",
        "stop calling and text me",
        "No more calls, texts are fine",
        "I don't want to be called, texts are fine",
        "I don't consent to calls, text me instead",
        "Put me on your do not call list, text only",
        # The others will do.
        "Don't call, text or email is fine",
        "Don't call, text or email works",
        "Don't call, text or email's fine",
        "I don't want a call, a text would be better",
    ],
)
def test_a_refusal_of_calls_that_asks_for_texts_is_not_a_revocation(body: str) -> None:
    # Opting out here would stop the very texts the patient asked for.
    assert classify(body) is Intent.OTHER


def test_a_request_for_texts_does_not_undo_a_refusal_of_texts() -> None:
    assert classify("Don't call me again, not even by text") is Intent.REVOCATION
    assert classify("Stop texting me, just call") is Intent.REVOCATION
    assert classify("Don't call me again. Don't text me either") is Intent.REVOCATION


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
        "can you text me the address?",
        "no, text me tomorrow instead",
        "No text me tomorrow",
        "I can't call right now, text me",
        "Don't call me at work, text me",
        "Do not call me until after 5, text me",
        "Please call or text me back",
        "Call or text whenever",
        "Is it ok to text or call?",
        "Don't forget to text me",
        "Don't call my mom or text her",
        "stop by tomorrow?",
        "Stop & Shop is near me",
        "no problem, thanks",
        "No worries, text me later",
        "No, call me instead",
        "No calls today, I'm at work",
        "no, thanks for the text",
        "I got no texts from you",
        "I have no text messages from you",
        "I got a call but no text",
        "Still no text?",
        "You called but left no message",
        "No texts came through, can you resend?",
        "No messages left on my voicemail",
        "There were no reminders sent",
        "I have no contact with my ex",
        "no contact info on your website?",
        "I don't consent to sharing my records with my employer",
        "I didn't ask for a refill",
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


@pytest.mark.parametrize(
    "body",
    [
        # "No" with plurals, where the clause ends or is polite about it.
        "No texts please",
        "no text messages",
        "no more texts",
        "no calls or texts",
        "No texts or phone calls please",
        # Refusing communication with the patient.
        "don't communicate with me",
        "do not communicate with me again",
        "Never communicate with this number again",
        "please cease all communication",
        "stop all communications",
        # Consent.
        "I withdraw my consent",
        "I withdraw my consent to be texted",
        "I withdraw consent for you to text me",
        "My consent has been withdrawn, thanks",
        "consent revoked",
        "I revoke my consent to receive texts",
        "I do not consent to receive text messages",
        "I don't consent.",
        # "Not interested" on its own.
        "Not interested",
        "not interested, thanks",
        "I'm not interested anymore",
        "not interested. stop",
        "not interested in your texts",
        # "Not interested" however it goes on, unless it names another slot or visit.
        "Not interested at all",
        "not interested sorry",
        "Not interested thx",
        "not interested bye",
        "Not interested now",
        "not interested today",
        "not interested in hearing from you",
        "Not interested in any more texts",
        "Not interested in appointment reminders",
        # Withdrawn consent however it goes on, unless it names something other than texts.
        "I withdraw my consent effective immediately",
        "I withdraw my consent now",
        "I withdraw my consent completely",
        "I withdraw my consent at this time",
        "I withdraw my consent for marketing texts",
        "Withdraw my consent for appointment reminders",
        "Consent withdrawn effective Monday",
        "I do not consent to receiving marketing texts",
        # "No" naming the sender or this phone.
        "no texts from you",
        "No messages to this number please",
        # A request beside a report, or a refusal, still refuses.
        "Call me but no texts please",
        "Call me but no texts",
        "I got your call. No texts please",
        "I got a call, no texts please",
        "Can you stop texting me?",
        "I didn't ask for this text",
        # Not wanting texts, with or without a request for something else.
        "I don't want you to text me",
        "I don't want any texts, just call",
        "I don't want to be texted, just call",
        "I don't want to get texts only calls",
        "I no longer wish to be contacted",
        "Don't call, text or email me ever",
    ],
)
def test_it_still_recognises_the_reviewed_revocations(body: str) -> None:
    assert classify(body) is Intent.REVOCATION


@pytest.mark.parametrize(
    "body",
    [
        # "No" with plurals that counts what arrived, or goes on about something else.
        "no messages from the office yet, did you get my form?",
        "No texts from you since Monday?",
        "I haven't got any texts, no messages at all",
        "no alerts on my phone",
        "no messages or calls from you yet?",
        # Communicating something to someone else.
        "Please don't communicate my results to my husband",
        "please don't communicate anything to my employer",
        "don't communicate with my employer",
        # Consent or permission for something other than texts to the patient.
        "I want to cancel my consent for the release of records to my old doctor",
        "I withdraw permission for the pharmacy to contact my doctor",
        "I do not give permission for the pharmacy to contact my doctor",
        "Prior auth permission was denied, what now?",
        "Prior auth permission was cancelled, what now?",
        "I'd like to cancel my consent form appointment",
        "I don't consent to this procedure",
        # "Not interested" in one slot or kind of visit, asking for another.
        "I'm not interested in the 3pm slot, do you have 4?",
        "not interested in tuesday, wednesday works",
        "Not interested in telehealth, in person please",
        "I withdraw my consent for the procedure",
        # "No" that reports what did not arrive: after a clause about what happened, after
        # "but"/"and" there, or in a question.
        "Missed call, no message. Who is this?",
        "I got a call, no text.",
        "Booked last week but no reminders",
        "Had an appointment yesterday, no reminders?",
        "Signed up but no messages",
        "No texts from you?",
        # Asking for texts, or why they stopped.
        "I never signed up for the text reminders, can you sign me up?",
        "I didn't ask for the text to be resent",
        "Why did you stop communicating with me?",
        "Why did you stop texting me?",
        # Not wanting something else, and a text about it is all they ask for.
        "I don't want to cancel, just text me the new time",
        "I don't want to cancel just text me the new time",
        "I dont want to come in, just text me the results",
        "I don't want anything but texts",
    ],
)
def test_it_does_not_opt_out_a_patient_who_wants_to_be_contacted(body: str) -> None:
    # These patients want the texts; reading them as revocations would stop them.
    assert classify(body) is Intent.OTHER


def test_it_treats_a_missing_body_as_other() -> None:
    assert classify(None) is Intent.OTHER


def test_it_prefers_the_keyword_to_a_revocation_for_a_single_word() -> None:
    assert classify("Unsubscribe") is Intent.OPT_OUT
    assert classify("Unsubscribe me") is Intent.REVOCATION
