"""The TwiML of a click-to-call: the whisper, the dial, and the ways the agent's call ends.

Built with twilio's TwiML builder only; the words come from voice_templates/voice/.
"""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

from telephony_service.domain import categories
from telephony_service.services.voice import VOICE
from telephony_service.wording import render

BRIDGE_PATH = "/twilio/voice/bridge"

# How long the whisper waits for a key, and how long the patient's phone rings.
ACCEPT_SECONDS = 8
PATIENT_RING_SECONDS = 25
# Twilio listens to the greeting before it bridges the patient, and the agent waits through
# that in silence: keep it short. The verdict comes by the AMD callback.
MACHINE_DETECTION_SECONDS = 5

# A reason read aloud is for recognising the task, not for reading the whole note.
WHISPER_REASON_MAX = 160


def whisper_twiml(
    attempt_id: int, *, base_url: str, category: str, first_name: str | None, reason: str | None
) -> str:
    spoken_reason = " ".join((reason or "").split())[:WHISPER_REASON_MAX].rstrip(" .!?,;:")
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        action=f"{base_url}{BRIDGE_PATH}/accept?a={attempt_id}",
        method="POST",
        timeout=ACCEPT_SECONDS,
        action_on_empty_result=False,
    )
    gather.say(
        render(
            "voice/whisper.txt",
            category=categories.label(category),
            first_name=first_name,
            reason=spoken_reason,
        ),
        voice=VOICE,
    )
    # No key: an agent's voicemail (or an agent who walked off) never dials the patient.
    response.say(render("voice/whisper_no_key.txt"), voice=VOICE)
    response.hangup()
    return str(response)


def dial_twiml(attempt_id: int, *, base_url: str, caller_id: str, to: str) -> str:
    response = VoiceResponse()
    dial = response.dial(
        caller_id=caller_id,
        action=f"{base_url}{BRIDGE_PATH}/dial-result?a={attempt_id}",
        method="POST",
        timeout=PATIENT_RING_SECONDS,
        # The agent hears the patient's phone ring, and the patient's leg is not answered
        # (nor billed) before the patient picks up.
        answer_on_bridge=True,
    )
    dial.number(
        to,
        status_callback=f"{base_url}{BRIDGE_PATH}/patient-status?a={attempt_id}",
        status_callback_event="initiated ringing answered completed",
        status_callback_method="POST",
        # Twilio says who answered (AnsweredBy) only when asked to detect it. The agent is
        # already on the line and hears a machine for themselves: detection changes nothing
        # in the call, it only records "answering machine" as the attempt's outcome.
        machine_detection="Enable",
        machine_detection_timeout=MACHINE_DETECTION_SECONDS,
        amd_status_callback=f"{base_url}{BRIDGE_PATH}/amd?a={attempt_id}",
        amd_status_callback_method="POST",
    )
    return str(response)


def dial_result_twiml(status: str) -> str:
    response = VoiceResponse()
    response.say(render("voice/dial_result.txt", status=status), voice=VOICE)
    response.hangup()
    return str(response)


def declined_twiml() -> str:
    return _say_and_hang_up("voice/whisper_declined.txt")


def blocked_twiml() -> str:
    return _say_and_hang_up("voice/bridge_blocked.txt")


def goodbye_twiml() -> str:
    return _say_and_hang_up("voice/bridge_over.txt")


def unknown_call_twiml() -> str:
    return _say_and_hang_up("voice/bridge_unknown.txt")


def _say_and_hang_up(template: str) -> str:
    response = VoiceResponse()
    response.say(render(template), voice=VOICE)
    response.hangup()
    return str(response)
