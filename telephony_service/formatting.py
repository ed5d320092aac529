"""How staff pages and messages to agents write times, numbers and stored codes for people.

Presentation only: the words for statuses and categories come from the domain's tables;
the rest (next actions, flags) are names nothing but a page needs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from telephony_service.domain import categories, statuses
from telephony_service.domain.phones import display_number

NEXT_ACTION_LABELS = {
    "call_back": "Call back",
    "await_reply": "Wait for a reply",
    "call_manually": "Call (texts don't reach this number)",
    "follow_up": "Follow up",
    "insurance_followup": "Insurance follow-up",
    "clinical_review": "Clinical review",
}
FLAG_LABELS = {
    "sms_undeliverable": "Texts don't reach this number",
    "wrong_number": "Wrong number",
}


def _readable(value: str | None) -> str:
    # An unknown stored code is shown readably, not hidden.
    return (value or "").replace("_", " ").capitalize()


def next_action_label(value: str | None) -> str:
    return NEXT_ACTION_LABELS.get(value or "") or _readable(value)


def flag_label(value: str | None) -> str:
    return FLAG_LABELS.get(value or "") or _readable(value)


def clock(at: datetime) -> str:
    """ "9:05 AM": the 12-hour clock US front desks read."""
    return f"{at.hour % 12 or 12}:{at:%M} {'AM' if at.hour < 12 else 'PM'}"


def local(at: datetime | None, zone: ZoneInfo) -> str:
    """ "Tue Nov 17, 10:00 AM EST" on the practice's clock."""
    if at is None:
        return ""
    shown = at.astimezone(zone)
    return f"{shown:%a %b} {shown.day}, {clock(shown)} {shown:%Z}"


def local_input(at: datetime | None, zone: ZoneInfo) -> str:
    """The value a datetime-local input shows for `at` on the practice's clock."""
    return "" if at is None else at.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def relative(at: datetime | None, now: datetime) -> str:
    """ "12 min ago", "in 3 h 5 min", "2 days ago": how far a moment is from now."""
    if at is None:
        return ""
    delta = at - now
    span = abs(delta)
    if span < timedelta(minutes=1):
        return "just now"
    minutes = int(span.total_seconds() // 60)
    if minutes < 60:
        amount = f"{minutes} min"
    elif minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        amount = f"{hours} h {rest} min" if rest and hours < 10 else f"{hours} h"
    else:
        amount = f"{minutes // (24 * 60)} days"
    return f"in {amount}" if delta > timedelta(0) else f"{amount} ago"


def helpers(zone_name: str, now: datetime) -> dict[str, Any]:
    """The functions staff templates call, bound to the practice's zone and this moment."""
    zone = ZoneInfo(zone_name)

    def local_iso(text: str) -> str:
        try:
            return local(datetime.fromisoformat(text), zone)
        except (TypeError, ValueError):
            return text

    return {
        "now": now,
        "zone_name": zone_name,
        "local": lambda at: local(at, zone),
        "local_input": lambda at: local_input(at, zone),
        "local_iso": local_iso,
        "relative": lambda at: relative(at, now),
        "status_label": statuses.label,
        "category_label": categories.label,
        "next_action_label": next_action_label,
        "flag_label": flag_label,
        "phone": display_number,
    }
