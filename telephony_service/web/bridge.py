"""Twilio's webhooks for click-to-call: the agent's leg, the whisper, the dial result."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("bridge", __name__, url_prefix="/twilio/voice/bridge")
