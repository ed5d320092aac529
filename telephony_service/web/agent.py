"""The task page: context, script, outcome, texts and the Call button."""

from __future__ import annotations

from flask import Blueprint

from telephony_service.web import workspace

bp = Blueprint("agent", __name__)
workspace.install(bp)
