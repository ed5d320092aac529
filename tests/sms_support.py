"""Twilio's Messages API faked at the HTTP layer (`responses`), for the SMS tests.

It keeps what was sent, answers like Twilio (201 with a new sid), lists messages the way
the gateway asks for them, and can be told to fail the next sends.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.models import Message
from telephony_service.wiring import Services
from tests.conftest import ACCOUNT_SID, FakeClock

MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@dataclass
class Sent:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    at: datetime


@dataclass
class FakeMessages:
    clock: FakeClock
    sent: list[Sent] = field(default_factory=list)
    # Each entry answers one send: ("error", status, code), ("timeout",), ("accept_then_drop",).
    faults: deque[tuple[Any, ...]] = field(default_factory=deque)
    posts: int = 0
    # Called as a send arrives, before it is answered (to hold a send in flight).
    on_create: Callable[[], None] | None = None
    # The sid the next accepted text gets (so a test can post its callback early).
    next_sid: str | None = None

    def to(self, number: str) -> list[Sent]:
        return [item for item in self.sent if item.to == number]

    def _resource(self, item: Sent) -> dict[str, Any]:
        return {
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": item.body,
            "date_created": format_datetime(item.at),
            "date_sent": None,
            "date_updated": format_datetime(item.at),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": item.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": item.sid,
            "status": "queued",
            "subresource_uris": {},
            "to": item.to,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{item.sid}.json",
        }

    def create(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.posts += 1
        if self.on_create is not None:
            self.on_create()
        form = {k: v[0] for k, v in parse_qs(str(request.body)).items()}
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault[0] == "error":
            body = {"code": fault[2], "message": f"error {fault[2]}", "status": fault[1]}
            return fault[1], {}, json.dumps(body)
        if fault is not None and fault[0] == "timeout":
            raise requests.exceptions.ReadTimeout("read timed out")
        sid, self.next_sid = self.next_sid or "SM" + uuid.uuid4().hex, None
        item = Sent(
            sid=sid,
            to=form["To"],
            from_=form["From"],
            body=form["Body"],
            status_callback=form.get("StatusCallback"),
            at=self.clock(),
        )
        self.sent.append(item)
        if fault is not None and fault[0] == "accept_then_drop":
            raise requests.exceptions.ConnectionError("connection reset after sending")
        return 201, {}, json.dumps(self._resource(item))

    def list(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        found = [
            self._resource(item)
            for item in self.sent
            if item.to == query.get("To") and item.from_ == query.get("From")
        ]
        after = query.get("DateSent>")
        if after:
            since = parsedate_to_datetime(after) if "," in after else None
            if since is not None:
                found = [r for r in found if parsedate_to_datetime(r["date_created"]) >= since]
        page = {
            "messages": found,
            "end": len(found),
            "first_page_uri": "",
            "next_page_uri": None,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": None,
            "start": 0,
            "uri": "",
        }
        return 200, {}, json.dumps(page)


@pytest.fixture
def twilio_messages(clock: FakeClock) -> Iterator[FakeMessages]:
    fake = FakeMessages(clock)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_callback(responses.POST, MESSAGES_URL, callback=fake.create)
        mocked.add_callback(responses.GET, MESSAGES_URL, callback=fake.list)
        yield fake


def messages(services: Services) -> list[Message]:
    with services.session() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def text_back_due(services: Services, practice_id: int, caller: str) -> int:
    """A text-back due now for a new missed-call task from `caller`, not yet sent."""
    from telephony_service.models import Practice
    from telephony_service.services import followups, intake

    with services.session() as session:
        practice = session.get_one(Practice, practice_id)
        contact = intake._lock_contact(session, practice.id, caller, services.clock())
        task = intake._new_task(
            session,
            practice,
            contact,
            category=intake.Category.MISSED_CALL,
            source="phone",
            at=services.clock(),
        )
        outcome = followups.start(
            session,
            practice,
            task,
            contact,
            now=services.clock(),
            base_url=services.settings.public_base_url,
        )
        session.commit()
        [message_id] = outcome.messages
        return message_id


def send_in(session: Session, services: Services, message_id: int) -> str:
    """A send job's work, in a session the test holds."""
    from telephony_service.services import delivery

    return delivery.send_message(
        session,
        services.gateway,
        message_id,
        clock=services.clock,
        settings=services.send_settings,
    )
