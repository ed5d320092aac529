"""The console gateway records what would be sent and never writes a number or a text to logs."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from telephony_service.gateways import ConsoleGateway, OutboundCall, OutboundSms
from tests.conftest import FakeClock

ANA = "+12025550143"  # a patient
RIVERSIDE = "+16175550100"  # the practice's Twilio number
TEXT = "Riverside Family Medicine: sorry we missed your call, Ana. Reply STOP to opt out."


def _sms(body: str = TEXT, to: str = ANA) -> OutboundSms:
    return OutboundSms(
        to=to,
        from_=RIVERSIDE,
        body=body,
        status_callback="https://callbacks.example.test/twilio/sms/status",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 17, 15, 0, 30, 250_000, tzinfo=UTC))


def test_it_records_a_text_with_a_twilio_shaped_sid(clock: FakeClock) -> None:
    gateway = ConsoleGateway(clock=clock)

    sent = gateway.send_sms(_sms())

    assert re.fullmatch(r"SM[0-9a-f]{32}", sent.sid)
    assert sent.status == "queued"
    [item] = gateway.outbox()
    assert (item.kind, item.sid, item.at, item.to, item.from_, item.body) == (
        "sms",
        sent.sid,
        clock.now,
        ANA,
        RIVERSIDE,
        TEXT,
    )


def test_it_records_a_call_with_its_url(clock: FakeClock) -> None:
    gateway = ConsoleGateway(clock=clock)

    placed = gateway.place_call(
        OutboundCall(
            to=ANA,
            from_=RIVERSIDE,
            url="https://callbacks.example.test/twilio/voice/bridge/7",
            status_callback=None,
        )
    )

    assert re.fullmatch(r"CA[0-9a-f]{32}", placed.sid)
    [item] = gateway.outbox()
    assert (item.kind, item.sid, item.url, item.body) == (
        "call",
        placed.sid,
        "https://callbacks.example.test/twilio/voice/bridge/7",
        None,
    )


def test_it_logs_masked_numbers_and_the_length_but_never_the_text(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = ConsoleGateway(clock=clock)

    with caplog.at_level(logging.DEBUG):
        gateway.send_sms(_sms())
        gateway.place_call(
            OutboundCall(to=ANA, from_=RIVERSIDE, url="https://x.test/a", status_callback=None)
        )

    assert len(caplog.records) == 2
    logged = caplog.text
    assert "+*******0143" in logged
    assert f"{len(TEXT)} characters" in logged
    assert ANA not in logged
    assert ANA.removeprefix("+1") not in logged
    assert RIVERSIDE not in logged
    assert "missed your call" not in logged


def test_it_keeps_only_the_latest_sends(clock: FakeClock) -> None:
    gateway = ConsoleGateway(clock=clock)

    sids = [gateway.send_sms(_sms(body=f"text {n}")).sid for n in range(205)]

    outbox = gateway.outbox()
    assert len(outbox) == 200
    assert [item.sid for item in outbox] == sids[5:]


def test_it_lists_its_own_texts_for_a_reconciliation(clock: FakeClock) -> None:
    gateway = ConsoleGateway(clock=clock)
    gateway.send_sms(_sms(body="yesterday"))
    clock.advance(days=1)
    attempt = clock.now
    first = gateway.send_sms(_sms(body="today"))
    gateway.send_sms(_sms(body="to Ben", to="+13125550188"))
    clock.advance(seconds=5)
    second = gateway.send_sms(_sms(body="later"))

    # Sub-second parts of the attempt time must not hide a text stored to the second.
    found = gateway.list_messages(
        to=ANA, from_=RIVERSIDE, sent_after=attempt + timedelta(microseconds=500_000)
    )

    assert [(record.sid, record.body, record.status) for record in found] == [
        (second.sid, "later", "sent"),
        (first.sid, "today", "sent"),
    ]
