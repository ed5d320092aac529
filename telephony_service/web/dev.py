"""Development pages, registered only while no Twilio credentials are set.

With the console gateway nothing leaves the machine, so the outbox is where a developer
reads the texts the service would have sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.domain.phones import mask_phone
from telephony_service.models import Message, Practice
from telephony_service.wiring import Services

bp = Blueprint("dev", __name__, url_prefix="/dev", template_folder="../templates")

OUTBOX_LIMIT = 100
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


@bp.before_request
def _local_only() -> None:
    # The bodies carry live scheduling links: a server run without Twilio credentials but
    # reachable from elsewhere (a staging box) must not show them to the network.
    if request.remote_addr not in _LOOPBACK:
        abort(404)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    # Both in the practice's own zone: written to the outbox, and not to be sent before.
    created_at: datetime
    not_before: datetime
    practice: str
    to: str
    purpose: str
    kind: str
    status: str
    defer_reason: str | None
    error: str | None
    segments: int
    body: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "not_before": self.not_before.isoformat(),
            "practice": self.practice,
            "to": self.to,
            "purpose": self.purpose,
            "kind": self.kind,
            "status": self.status,
            "defer_reason": self.defer_reason,
            "error": self.error,
            "segments": self.segments,
            "body": self.body,
        }


def latest_texts(session: Session, limit: int = OUTBOX_LIMIT) -> list[OutboxEntry]:
    rows = session.execute(
        select(Message, Practice.name, Practice.timezone)
        .join(Practice, Practice.id == Message.practice_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    entries = []
    for message, practice_name, timezone in rows:
        zone = ZoneInfo(timezone)
        error = message.error
        if message.error_code is not None:
            error = f"{message.error_code} {error}" if error else str(message.error_code)
        entries.append(
            OutboxEntry(
                id=message.id,
                created_at=message.created_at.astimezone(zone),
                not_before=message.not_before.astimezone(zone),
                practice=practice_name,
                to=mask_phone(message.to_number),
                purpose=message.purpose,
                kind=message.kind,
                status=message.status,
                defer_reason=message.defer_reason,
                error=error,
                segments=message.segments,
                body=message.body,
            )
        )
    return entries


@bp.get("/outbox")
def outbox() -> Response | str:
    services: Services = current_app.extensions["telephony"]
    with services.session() as session:
        entries = latest_texts(session)
    if request.args.get("format") == "json":
        return jsonify(messages=[entry.as_json() for entry in entries])
    return render_template("dev/outbox.html", entries=entries, limit=OUTBOX_LIMIT)
