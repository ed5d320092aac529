"""Twilio webhooks. Each one: check the signature, store the raw event, answer fast.

The work itself (tasks, merges) happens in a worker; see services/intake.py.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, abort, current_app, request

from telephony_service.domain.phones import mask_phone
from telephony_service.services import inbound, messaging, voice
from telephony_service.services.events import record_event
from telephony_service.services.intake import TERMINAL_CALL_STATUSES
from telephony_service.services.practices import PracticeDirectory
from telephony_service.web.security import twilio_params, twilio_signed
from telephony_service.wiring import Services

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

# Twilio SIDs: two letters and 32 hex digits. Anything else is not from Twilio.
SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")


def _services() -> Services:
    services: Services = current_app.extensions["telephony"]
    return services


def _directory() -> PracticeDirectory:
    directory: PracticeDirectory | None = current_app.extensions.get("practice_directory")
    if directory is None:
        directory = PracticeDirectory(_services().session_factory)
        current_app.extensions["practice_directory"] = directory
    return directory


def _twiml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


def _sid(name: str) -> str:
    value = twilio_params().get(name, "")
    if not SID.match(value):
        abort(400, f"{name} is missing or malformed")
    return value


def _store(kind: str, sid: str, extra: dict[str, str] | None = None) -> None:
    """Commit the raw event, then hand its id to the dispatcher (never waits on Redis)."""
    services = _services()
    params = dict(twilio_params().items())
    if extra:
        params.update(extra)
    event_id = record_event(
        services.engine,
        kind=kind,
        sid=sid,
        params=params,
        now=services.clock(),
    )
    if event_id is None:
        log.info("duplicate %s %s ignored", kind, sid)
        return
    services.dispatcher.submit(event_id, receipt=kind == "sms.status")


@bp.post("/voice/incoming")
@twilio_signed
def voice_incoming() -> Response:
    called = twilio_params().get("To")
    card = _directory().by_number(called)
    if card is None:
        log.warning("incoming call to %s, which no practice owns", mask_phone(called))
        return _twiml(voice.unknown_number())
    return _twiml(voice.greeting(card, _services().settings.public_base_url))


@bp.post("/voice/recorded")
@twilio_signed
def voice_recorded() -> Response:
    # <Record>'s action: the message is taken; the recording itself arrives on
    # /voice/recording when Twilio has stored it.
    return _twiml(voice.goodbye())


@bp.post("/voice/status")
@twilio_signed
def voice_status() -> Response:
    sid = _sid("CallSid")
    # Only the end of a call makes a task; ringing/in-progress updates carry nothing new.
    if twilio_params().get("CallStatus") in TERMINAL_CALL_STATUSES:
        _store("voice.status", sid)
    return _twiml(voice.empty())


@bp.post("/voice/recording")
@twilio_signed
def voice_recording() -> Response:
    _sid("CallSid")
    _store("voice.recording", _sid("RecordingSid"))
    return _twiml(voice.empty())


@bp.post("/voice/transcription")
@twilio_signed
def voice_transcription() -> Response:
    _sid("CallSid")
    _store("voice.transcription", _sid("TranscriptionSid"))
    return _twiml(voice.empty())


# Twilio posts one status callback per step (queued, sent, delivered …), all with the
# same MessageSid; the status is part of what makes a callback a duplicate.
MESSAGE_STATUS = re.compile(r"^[a-z_-]{1,32}$")  # "partially_delivered"


@bp.post("/sms/status")
@twilio_signed
def sms_status() -> Response:
    sid = _sid("MessageSid")
    status = twilio_params().get("MessageStatus", "")
    if not MESSAGE_STATUS.match(status):
        abort(400, "MessageStatus is missing or malformed")
    # The outbox id we put in the callback URL (signed with it): it finds the text even
    # before its send has stored the MessageSid, and for replies sent in TwiML.
    outbox_id = request.args.get("m", "")
    _store("sms.status", f"{sid}:{status}", {"m": outbox_id} if outbox_id.isdigit() else None)
    return _twiml(messaging.empty())


@bp.post("/sms/incoming")
@twilio_signed
def sms_incoming() -> Response:
    sid = _sid("MessageSid")
    params = twilio_params()
    if not inbound.is_keyword(params.get("Body")):
        _store(inbound.KIND, sid)
        return _twiml(messaging.empty())
    services = _services()
    with services.session() as session:
        answer = inbound.receive_keyword(
            session,
            dict(params.items()),
            now=services.clock(),
            base_url=services.settings.public_base_url,
        )
    return _twiml(messaging.reply(answer, services.settings.public_base_url))
