"""Patient callback service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The Flask app factory (imported lazily so `telephony_service.domain` stays light)."""
    from telephony_service.web import create_app as _create_app

    return _create_app(*args, **kwargs)
