"""Twilio's webhooks for click-to-call: the agent's leg, the whisper, the dial result, and
answering machine detection on the patient's leg.

Unlike the inbound-call webhooks these are applied at once, not queued: Twilio is waiting
for the TwiML that decides whether the patient's phone rings, and the status callbacks
are one small row update each. Every one is signature-checked (403, nothing written); an
attempt id we do not know gets polite TwiML or an empty 204, never an error page.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from telephony_service.services import bridging
from telephony_service.web import workspace
from telephony_service.web.security import twilio_params, twilio_signed

# A Twilio webhook blueprint: no staff session, no CSRF (workspace.install is not called);
# only the app's wiring is shared with the staff pages.
bp = Blueprint("bridge", __name__, url_prefix="/twilio/voice/bridge")


def _attempt_id() -> int | None:
    value = request.args.get("a", "")
    return int(value) if value.isdigit() and len(value) < 19 else None


def _params() -> dict[str, str]:
    return dict(twilio_params().items())


def _twiml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


@bp.post("/agent")
@twilio_signed
def agent() -> Response:
    services = workspace.services()
    with services.session() as session:
        twiml = bridging.agent_answered(
            session,
            _attempt_id(),
            _params(),
            base_url=services.settings.public_base_url,
            now=services.clock(),
        )
    return _twiml(twiml)


@bp.post("/accept")
@twilio_signed
def accept() -> Response:
    services = workspace.services()
    with services.session() as session:
        twiml = bridging.agent_pressed(
            session,
            _attempt_id(),
            _params(),
            base_url=services.settings.public_base_url,
            now=services.clock(),
        )
    return _twiml(twiml)


@bp.post("/dial-result")
@twilio_signed
def dial_result() -> Response:
    services = workspace.services()
    with services.session() as session:
        twiml = bridging.dial_finished(session, _attempt_id(), _params(), now=services.clock())
    return _twiml(twiml)


@bp.post("/agent-status")
@twilio_signed
def agent_status() -> Response:
    services = workspace.services()
    with services.session() as session:
        bridging.agent_leg_status(session, _attempt_id(), _params(), now=services.clock())
    return Response(status=204)


@bp.post("/patient-status")
@twilio_signed
def patient_status() -> Response:
    services = workspace.services()
    with services.session() as session:
        bridging.patient_leg_status(session, _attempt_id(), _params(), now=services.clock())
    return Response(status=204)


@bp.post("/amd")
@twilio_signed
def amd() -> Response:
    services = workspace.services()
    with services.session() as session:
        bridging.machine_detected(session, _attempt_id(), _params(), now=services.clock())
    return Response(status=204)
