"""A gateway for development without Twilio credentials: nothing leaves the machine."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from telephony_service.clock import Clock, system_clock
from telephony_service.domain.phones import mask_phone
from telephony_service.gateways.base import (
    MessageRecord,
    OutboundCall,
    OutboundSms,
    PlacedCall,
    SentMessage,
)

log = logging.getLogger(__name__)

OUTBOX_SIZE = 200


@dataclass(frozen=True)
class OutboxItem:
    kind: Literal["sms", "call"]
    sid: str
    at: datetime
    to: str
    from_: str
    body: str | None
    url: str | None
    status_callback: str | None


class ConsoleGateway:
    """Records what would have been sent, in this process's memory only.

    A send answers "queued", as Twilio does; listed afterwards, a text shows as "sent".
    """

    def __init__(self, *, clock: Clock = system_clock, size: int = OUTBOX_SIZE) -> None:
        self._clock = clock
        # Bounded: a long-running development server must not grow without end.
        self._sent: deque[OutboxItem] = deque(maxlen=size)
        # The web server and the worker's threads may send and read at the same time, and a
        # deque cannot be iterated while another thread appends.
        self._lock = threading.Lock()

    def send_sms(self, sms: OutboundSms) -> SentMessage:
        item = OutboxItem(
            kind="sms",
            sid=_sid("SM"),
            at=self._clock(),
            to=sms.to,
            from_=sms.from_,
            body=sms.body,
            url=None,
            status_callback=sms.status_callback,
        )
        self._record(item)
        log.info(
            "console sms %s from %s to %s, %d characters (not sent)",
            item.sid,
            mask_phone(sms.from_),
            mask_phone(sms.to),
            len(sms.body),
        )
        return SentMessage(sid=item.sid, status="queued")

    def place_call(self, call: OutboundCall) -> PlacedCall:
        item = OutboxItem(
            kind="call",
            sid=_sid("CA"),
            at=self._clock(),
            to=call.to,
            from_=call.from_,
            body=None,
            url=call.url,
            status_callback=call.status_callback,
        )
        self._record(item)
        log.info(
            "console call %s from %s to %s (not placed)",
            item.sid,
            mask_phone(call.from_),
            mask_phone(call.to),
        )
        return PlacedCall(sid=item.sid, status="queued")

    def list_messages(self, *, to: str, from_: str, sent_after: datetime) -> list[MessageRecord]:
        since = sent_after.replace(microsecond=0)
        return [
            MessageRecord(
                sid=item.sid,
                to=item.to,
                from_=item.from_,
                body=item.body or "",
                status="sent",
                date_created=item.at,
            )
            for item in reversed(self.outbox())
            if item.kind == "sms" and item.to == to and item.from_ == from_ and item.at >= since
        ]

    def outbox(self) -> list[OutboxItem]:
        """What was recorded, oldest first."""
        with self._lock:
            return list(self._sent)

    def _record(self, item: OutboxItem) -> None:
        with self._lock:
            self._sent.append(item)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)
