"""Reading loosely typed values (Twilio's form fields, stored JSON) without raising."""

from __future__ import annotations

from typing import Any


def int_or_none(value: Any) -> int | None:
    """The integer a field holds, or None for a missing or garbled one (Twilio sends
    durations and error codes as text, and sometimes leaves them empty)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
