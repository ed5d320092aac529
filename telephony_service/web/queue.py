"""The agents' callback queue."""

from __future__ import annotations

from flask import Blueprint

from telephony_service.web import workspace

bp = Blueprint("queue", __name__)
workspace.install(bp)
