"""Sign-in and sign-out for staff."""

from __future__ import annotations

from flask import Blueprint

from telephony_service.web import workspace

bp = Blueprint("auth", __name__)
workspace.install(bp)
