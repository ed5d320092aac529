"""The click-to-call TwiML, read back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from telephony_service.services import call_twiml

BASE = "https://callbacks.example.test"
ANA = "+12025550143"
RIVERSIDE = "+16175550100"


def _parse(twiml: str) -> ET.Element:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return root


def test_it_whispers_the_task_and_waits_for_one_key() -> None:
    root = _parse(
        call_twiml.whisper_twiml(
            7,
            base_url=BASE,
            category="new_patient_request",
            first_name="Ana",
            reason="Wants a visit for her son.",
        )
    )

    gather, goodbye, hangup = list(root)
    assert gather.tag == "Gather"
    assert gather.attrib["numDigits"] == "1"
    assert gather.attrib["action"] == f"{BASE}/twilio/voice/bridge/accept?a=7"
    assert gather.attrib["method"] == "POST"
    assert gather.attrib["timeout"] == "8"
    [say] = list(gather)
    assert say.tag == "Say"
    assert say.text == (
        "New patient request for Ana. Reason: Wants a visit for her son. "
        "Press 1 to call the patient now."
    )
    assert (goodbye.tag, hangup.tag) == ("Say", "Hangup")
    assert goodbye.text is not None and "not called" in goodbye.text


def test_it_whispers_without_a_name_or_reason() -> None:
    root = _parse(
        call_twiml.whisper_twiml(
            3, base_url=BASE, category="missed_call", first_name=None, reason=""
        )
    )

    say = root.find("Gather/Say")
    assert say is not None
    assert say.text == (
        "Missed call for a caller with no name on file. Press 1 to call the patient now."
    )


def test_it_keeps_a_long_reason_short_and_escapes_it() -> None:
    reason = "Needs <urgent> & careful scheduling " * 20

    root = _parse(
        call_twiml.whisper_twiml(
            3, base_url=BASE, category="referral", first_name="Ben", reason=reason
        )
    )

    say = root.find("Gather/Say")
    assert say is not None and say.text is not None
    assert "<urgent> & careful" in say.text
    assert len(say.text) < call_twiml.WHISPER_REASON_MAX + 80


def test_it_dials_the_patient_with_the_practice_caller_id() -> None:
    root = _parse(call_twiml.dial_twiml(7, base_url=BASE, caller_id=RIVERSIDE, to=ANA))

    [dial] = list(root)
    assert dial.tag == "Dial"
    assert dial.attrib["callerId"] == RIVERSIDE
    assert dial.attrib["action"] == f"{BASE}/twilio/voice/bridge/dial-result?a=7"
    assert dial.attrib["method"] == "POST"
    assert dial.attrib["timeout"] == "25"
    assert dial.attrib["answerOnBridge"] == "true"
    [number] = list(dial)
    assert number.tag == "Number"
    assert number.text == ANA
    assert number.attrib["statusCallback"] == f"{BASE}/twilio/voice/bridge/patient-status?a=7"
    assert number.attrib["statusCallbackEvent"] == "initiated ringing answered completed"
    assert number.attrib["statusCallbackMethod"] == "POST"


def test_it_asks_twilio_to_detect_an_answering_machine_on_the_patients_leg() -> None:
    root = _parse(call_twiml.dial_twiml(7, base_url=BASE, caller_id=RIVERSIDE, to=ANA))

    number = root.find("Dial/Number")
    assert number is not None
    assert number.attrib["machineDetection"] == "Enable"
    assert number.attrib["machineDetectionTimeout"] == "5"
    assert number.attrib["amdStatusCallback"] == f"{BASE}/twilio/voice/bridge/amd?a=7"
    assert number.attrib["amdStatusCallbackMethod"] == "POST"


def test_it_says_a_category_it_does_not_know_readably() -> None:
    root = _parse(
        call_twiml.whisper_twiml(
            3, base_url=BASE, category="second_opinion", first_name="Ben", reason=None
        )
    )

    say = root.find("Gather/Say")
    assert say is not None and say.text is not None
    assert say.text.startswith("Second opinion for Ben.")


def test_it_closes_each_dial_result_with_a_goodbye() -> None:
    for status in ("completed", "no-answer", "busy", "failed", "canceled", "machine", "ended"):
        say, hangup = list(_parse(call_twiml.dial_result_twiml(status)))
        assert (say.tag, hangup.tag) == ("Say", "Hangup")
        assert say.text is not None and "Goodbye" in say.text


def test_it_never_dials_on_the_refusals() -> None:
    for twiml in (
        call_twiml.declined_twiml(),
        call_twiml.blocked_twiml(),
        call_twiml.goodbye_twiml(),
        call_twiml.unknown_call_twiml(),
    ):
        tags = [element.tag for element in _parse(twiml)]
        assert tags == ["Say", "Hangup"]


def test_it_tells_the_agent_a_call_with_an_unclear_result_has_ended() -> None:
    say, _ = list(_parse(call_twiml.dial_result_twiml("ended")))

    assert say.text is not None and say.text.startswith("The call has ended.")
