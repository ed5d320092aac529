"""TwiML for the practice number. Built with Twilio's builder, never by string formatting."""

from __future__ import annotations

import functools

from twilio.twiml.voice_response import VoiceResponse

from telephony_service.services.practices import PracticeCard
from telephony_service.wording import render

# Long enough for a name, a number and a reason; short enough that a pocket-dial does not
# leave five minutes of road noise for an agent to sit through.
VOICEMAIL_MAX_SECONDS = 120
VOICE = "Polly.Joanna"


@functools.cache
def greeting(card: PracticeCard, base_url: str) -> str:
    response = VoiceResponse()
    response.say(render("voice/greeting.txt", practice=card.name), voice=VOICE)
    response.record(
        max_length=VOICEMAIL_MAX_SECONDS,
        timeout=5,
        play_beep=True,
        finish_on_key="#",
        trim="trim-silence",
        action=f"{base_url}/twilio/voice/recorded",
        method="POST",
        recording_status_callback=f"{base_url}/twilio/voice/recording",
        recording_status_callback_method="POST",
        recording_status_callback_event="completed",
        transcribe=True,
        transcribe_callback=f"{base_url}/twilio/voice/transcription",
    )
    # Reached only if <Record> ends without calling its action (it always should).
    response.say(render("voice/goodbye.txt"), voice=VOICE)
    response.hangup()
    return str(response)


@functools.cache
def goodbye() -> str:
    response = VoiceResponse()
    response.say(render("voice/goodbye.txt"), voice=VOICE)
    response.hangup()
    return str(response)


@functools.cache
def unknown_number() -> str:
    response = VoiceResponse()
    response.say(render("voice/unknown_number.txt"), voice=VOICE)
    response.hangup()
    return str(response)


@functools.cache
def empty() -> str:
    return str(VoiceResponse())
