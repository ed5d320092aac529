"""The per-sender rate limit (SMS_SENDER_RATE): texts from one number go out a slot apart.

With a rate the claim is committed on its own, a slot is taken, and the send reads its
text after that (PostgreSQL without a rate does all three in one round trip).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from telephony_service.models import Message
from telephony_service.services import delivery
from telephony_service.wiring import Services
from tests.conftest import FakeClock
from tests.helpers import ANA, BEN, make_practice
from tests.sms_support import FakeMessages, text_back_due


def _send(services: Services, message_id: int, rate: float | None) -> str:
    settings = dataclasses.replace(services.send_settings, sender_rate=rate)
    with services.session() as session:
        return delivery.send_message(
            session, services.gateway, message_id, clock=services.clock, settings=settings
        )


def test_it_defers_a_second_text_from_one_number_to_its_next_slot(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    practice = make_practice(services)
    first = text_back_due(services, practice.id, ANA)
    second = text_back_due(services, practice.id, BEN)

    assert _send(services, first, rate=1.0) == "sent"
    assert _send(services, second, rate=1.0) == "deferred"
    with services.session() as session:
        waiting = session.get_one(Message, second)
        assert waiting.status == "pending"
        assert waiting.defer_reason == "sender rate limit"
        assert waiting.not_before == clock() + timedelta(seconds=1)
        assert waiting.claimed_at is None
    assert [sms.to for sms in twilio_messages.sent] == [ANA]

    clock.advance(seconds=1)
    # Its slot was kept for it: it goes now, and the number's next slot is a second on.
    assert _send(services, second, rate=1.0) == "sent"
    assert [sms.to for sms in twilio_messages.sent] == [ANA, BEN]
    with services.session() as session:
        sent = session.get_one(Message, second)
        assert sent.status == "queued"
        assert sent.message_sid == twilio_messages.sent[1].sid


def test_it_sends_nothing_for_a_text_another_job_has_claimed(
    services: Services, twilio_messages: FakeMessages
) -> None:
    practice = make_practice(services)
    message_id = text_back_due(services, practice.id, ANA)
    assert _send(services, message_id, rate=5.0) == "sent"
    assert _send(services, message_id, rate=5.0) == "skipped"
    assert _send(services, message_id, rate=None) == "skipped"
    assert len(twilio_messages.sent) == 1
