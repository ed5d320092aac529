"""The local Twilio stand-in (bench/fake_twilio.py), driven through the service's own gateway.

Multi-process tests and the benchmark point TWILIO_API_BASE_URL at it, so it has to look like
Twilio to the gateway: what the gateway sends passes Twilio's OpenAPI description, the fake
answers in Twilio's shapes, and its injected failures reach the gateway as Twilio's would.
"""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from twilio.request_validator import RequestValidator

from bench.fake_twilio import FakeTwilio
from telephony_service.gateways import GatewayError, OutboundSms, build_gateway
from telephony_service.gateways.twilio import TwilioGateway
from telephony_service.settings import Settings
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.helpers import ANA, BEN, RIVERSIDE_NUMBER
from tests.integration.test_twilio_gateway import (
    AGENT_CALL,
    CALLS_PATH,
    MESSAGES_PATH,
    OPENAPI,
    TEXT,
    _assert_accepted_by_twilio,
    _form_schema,
)

ROOT = Path(__file__).parents[2]
ANA_TEXT = OutboundSms(to=ANA, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=None)
BEN_TEXT = OutboundSms(to=BEN, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=None)


@dataclass(frozen=True)
class Callback:
    url: str
    params: dict[str, str]
    signature: str


class Receiver:
    """The service's side of status callbacks: a local server keeping what it is sent."""

    def __init__(self) -> None:
        self.received: list[Callback] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                callback = Callback(
                    receiver.url + self.path,
                    dict(parse_qsl(body, strict_parsing=True)),
                    self.headers.get("X-Twilio-Signature", ""),
                )
                with receiver.arrived:
                    receiver.received.append(callback)
                    receiver.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 2.0) -> list[Callback]:
        with self.arrived:
            arrived = self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            assert arrived, f"{len(self.received)} callbacks of {count} arrived"
            return list(self.received)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(OPENAPI.read_text())
    return spec


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, callback_delay=0.01) as serving:
        yield serving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    serving = Receiver()
    thread = threading.Thread(target=serving.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield serving
    serving.server.shutdown()
    serving.server.server_close()
    thread.join()


def _settings(base_url: str, tmp_path: Path, token: str = AUTH_TOKEN) -> Settings:
    return Settings(
        database_url="sqlite://",
        redis_url=None,
        secret_key="test-secret-key-0123456789",
        public_base_url="https://callbacks.example.test",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=token,
        twilio_api_base_url=base_url,
        instance_path=tmp_path,
    )


@pytest.fixture
def gateway(fake: FakeTwilio, tmp_path: Path) -> TwilioGateway:
    built = build_gateway(_settings(fake.url, tmp_path))
    assert isinstance(built, TwilioGateway)
    return built


def _resource_fields(spec: dict[str, Any], name: str) -> set[str]:
    return set(spec["components"]["schemas"][name]["properties"])


def _list(fake: FakeTwilio, **params: str) -> dict[str, Any]:
    answer = requests.get(
        f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        params=params,
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def _sent(fake: FakeTwilio, sid: str) -> None:
    fake.wait_for(lambda: (fake.message(sid) or {}).get("date_sent") is not None)


def test_it_accepts_a_text_as_twilio_does(
    fake: FakeTwilio, gateway: TwilioGateway, receiver: Receiver, openapi: dict[str, Any]
) -> None:
    text = OutboundSms(
        to=ANA, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=f"{receiver.url}/status"
    )
    before = time.time()

    sent = gateway.send_sms(text)

    assert re.fullmatch("SM[0-9a-f]{32}", sent.sid)
    assert sent.status == "queued"
    [record] = fake.requests
    assert (record.kind, record.sid, record.status) == ("message", sent.sid, 201)
    assert before <= record.at <= time.time()
    assert record.form == {
        "To": [ANA],
        "From": [RIVERSIDE_NUMBER],
        "Body": [TEXT],
        "StatusCallback": [f"{receiver.url}/status"],
    }
    _assert_accepted_by_twilio(record.form, _form_schema(openapi, MESSAGES_PATH))
    resource = fake.message(sent.sid)
    assert resource is not None
    assert set(resource) == _resource_fields(openapi, "api.v2010.account.message")
    assert (resource["to"], resource["from"], resource["body"]) == (ANA, RIVERSIDE_NUMBER, TEXT)


def test_it_finds_the_text_for_a_reconciliation(fake: FakeTwilio, gateway: TwilioGateway) -> None:
    started = datetime.now(UTC)
    sent = gateway.send_sms(ANA_TEXT)
    gateway.send_sms(BEN_TEXT)

    found = gateway.list_messages(to=ANA, from_=RIVERSIDE_NUMBER, sent_after=started)

    assert [(record.sid, record.to, record.body) for record in found] == [(sent.sid, ANA, TEXT)]
    assert gateway.list_messages(to=ANA, from_=BEN, sent_after=started) == []


def test_it_filters_sent_texts_by_date_sent_like_twilio(
    fake: FakeTwilio, gateway: TwilioGateway, openapi: dict[str, Any]
) -> None:
    sent = gateway.send_sms(ANA_TEXT)
    gateway.send_sms(BEN_TEXT)
    _sent(fake, sent.sid)
    today = datetime.now(UTC)
    # As the twilio library writes a datetime, and as Twilio's documentation writes a day.
    a_minute_ago = (today - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    yesterday = (today - timedelta(days=1)).date().isoformat()

    page = _list(fake, To=ANA, From=RIVERSIDE_NUMBER, **{"DateSent>": a_minute_ago})

    assert [message["sid"] for message in page["messages"]] == [sent.sid]
    listing = openapi["paths"][MESSAGES_PATH]["get"]["responses"]["200"]["content"]
    assert set(page) == set(listing["application/json"]["schema"]["properties"])
    by_day = _list(fake, To=ANA, **{"DateSent>": today.date().isoformat()})
    assert [message["sid"] for message in by_day["messages"]] == [sent.sid]
    assert _list(fake, To=ANA, **{"DateSent<": yesterday})["messages"] == []


def test_it_leaves_a_queued_text_out_of_date_sent_filters() -> None:
    # Why the gateway does not filter by DateSent: the send being reconciled may be queued.
    with FakeTwilio(auth_token=AUTH_TOKEN, callback_delay=60) as slow:
        gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, api_base_url=slow.url)
        started = datetime.now(UTC)
        sent = gateway.send_sms(ANA_TEXT)

        today = started.date().isoformat()
        assert _list(slow, To=ANA, **{"DateSent>": today})["messages"] == []
        assert [message["sid"] for message in _list(slow, To=ANA)["messages"]] == [sent.sid]
        found = gateway.list_messages(to=ANA, from_=RIVERSIDE_NUMBER, sent_after=started)
        assert [record.status for record in found] == ["queued"]


def test_it_pages_message_lists_newest_first(fake: FakeTwilio, gateway: TwilioGateway) -> None:
    sids = [gateway.send_sms(ANA_TEXT).sid for _ in range(3)]

    first = _list(fake, To=ANA, PageSize="2")
    assert first["next_page_uri"] is not None
    rest = requests.get(
        fake.url + first["next_page_uri"], auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5
    ).json()

    assert [message["sid"] for message in first["messages"] + rest["messages"]] == sids[::-1]
    assert (first["page"], first["page_size"], rest["page"]) == (0, 2, 1)
    assert rest["next_page_uri"] is None


def test_it_throttles_and_then_accepts(fake: FakeTwilio, gateway: TwilioGateway) -> None:
    fake.fail_next({"status": 429, "code": 20429})

    with pytest.raises(GatewayError) as throttled:
        gateway.send_sms(ANA_TEXT)
    sent = gateway.send_sms(ANA_TEXT)

    error = throttled.value
    assert (error.permanent, error.code, error.status, error.outcome_unknown) == (
        False,
        20429,
        429,
        False,
    )
    assert [(record.status, record.sid) for record in fake.requests] == [
        (429, None),
        (201, sent.sid),
    ]
    assert fake.counts()["messages"] == 1


def test_it_refuses_an_opted_out_patient_every_time(
    fake: FakeTwilio, gateway: TwilioGateway
) -> None:
    answer = requests.post(
        f"{fake.url}/_fake/faults",
        json={"messages_error_for": {ANA: {"status": 400, "code": 21610}}},
        timeout=5,
    )
    assert answer.status_code == 200

    for _ in range(2):
        with pytest.raises(GatewayError) as refused:
            gateway.send_sms(ANA_TEXT)
        error = refused.value
        assert (error.permanent, error.code, error.status) == (True, 21610, 400)
    gateway.send_sms(BEN_TEXT)

    counts = requests.get(f"{fake.url}/_fake/counts", timeout=5).json()
    assert (counts["messages"], counts["per_to"], counts["refused"]) == (1, {BEN: 1}, 2)


def test_it_refuses_an_invalid_number_and_wrong_credentials(
    fake: FakeTwilio, gateway: TwilioGateway, tmp_path: Path
) -> None:
    with pytest.raises(GatewayError) as invalid:
        gateway.send_sms(
            OutboundSms(to="617-555-01", from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=None)
        )
    impostor = build_gateway(_settings(fake.url, tmp_path, token="not-the-auth-token"))
    with pytest.raises(GatewayError) as unauthenticated:
        impostor.send_sms(ANA_TEXT)

    assert (invalid.value.permanent, invalid.value.code) == (True, 21211)
    assert (unauthenticated.value.code, unauthenticated.value.status) == (20003, 401)
    assert fake.counts()["messages"] == 0


def test_it_keeps_a_text_whose_answer_was_lost(fake: FakeTwilio, gateway: TwilioGateway) -> None:
    started = datetime.now(UTC)
    fake.fail_next({"drop_after_accept": True})

    with pytest.raises(GatewayError) as dropped:
        gateway.send_sms(ANA_TEXT)

    assert (dropped.value.permanent, dropped.value.outcome_unknown) == (False, True)
    [record] = fake.requests
    assert record.status is None and record.sid is not None
    found = gateway.list_messages(to=ANA, from_=RIVERSIDE_NUMBER, sent_after=started)
    assert [message.sid for message in found] == [record.sid]


def test_it_answers_too_late_for_the_gateway(fake: FakeTwilio) -> None:
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, api_base_url=fake.url, timeout=0.2)
    started = datetime.now(UTC)
    # Interrupted when the fixture stops the fake.
    fake.fail_next({"delay": 30.0})

    with pytest.raises(GatewayError) as late:
        gateway.send_sms(ANA_TEXT)

    assert (late.value.permanent, late.value.outcome_unknown) == (False, True)
    assert "ReadTimeout" in late.value.message
    found = gateway.list_messages(to=ANA, from_=RIVERSIDE_NUMBER, sent_after=started)
    assert [message.sid for message in found] == [fake.requests[0].sid]


def test_it_places_a_call(
    fake: FakeTwilio, gateway: TwilioGateway, openapi: dict[str, Any]
) -> None:
    placed = gateway.place_call(AGENT_CALL)

    assert re.fullmatch("CA[0-9a-f]{32}", placed.sid)
    assert placed.status == "queued"
    [record] = fake.requests
    assert (record.kind, record.sid, record.status) == ("call", placed.sid, 201)
    assert record.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    _assert_accepted_by_twilio(record.form, _form_schema(openapi, CALLS_PATH))
    fetched = requests.get(
        f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{placed.sid}.json",
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        timeout=5,
    ).json()
    assert set(fetched) == _resource_fields(openapi, "api.v2010.account.call")
    assert fake.counts()["calls_per_to"] == {AGENT_CALL.to: 1}


def test_it_signs_status_callbacks_like_twilio(
    fake: FakeTwilio, gateway: TwilioGateway, receiver: Receiver
) -> None:
    status_url = f"{receiver.url}/twilio/sms/status"

    sent = gateway.send_sms(
        OutboundSms(to=ANA, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=status_url)
    )

    callbacks = receiver.wait_for(2)
    validator = RequestValidator(AUTH_TOKEN)
    for callback in callbacks:
        assert callback.url == status_url
        assert validator.validate(callback.url, callback.params, callback.signature)
        assert not RequestValidator("another-token").validate(
            callback.url, callback.params, callback.signature
        )
    assert [callback.params["MessageStatus"] for callback in callbacks] == ["sent", "delivered"]
    assert callbacks[0].params == {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": RIVERSIDE_NUMBER,
        "MessageSid": sent.sid,
        "MessageStatus": "sent",
        "SmsSid": sent.sid,
        "SmsStatus": "sent",
        "To": ANA,
    }
    fake.wait_for(lambda: fake.counts()["callbacks_sent"] == 2)
    assert (fake.message(sent.sid) or {}).get("status") == "delivered"


def test_it_counts_a_callback_it_could_not_deliver(
    fake: FakeTwilio, gateway: TwilioGateway
) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}/twilio/sms/status"
    probe.close()  # nothing listens there now

    gateway.send_sms(
        OutboundSms(to=ANA, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=nowhere)
    )

    fake.wait_for(lambda: fake.counts()["callbacks_failed"] == 2)
    assert fake.counts()["callbacks_sent"] == 0
    gateway.send_sms(ANA_TEXT)  # still serving


def test_it_forgets_everything_on_reset(fake: FakeTwilio, gateway: TwilioGateway) -> None:
    gateway.send_sms(ANA_TEXT)
    fake.fail_next({"status": 500})
    fake.fail_for(BEN, status=400, code=21610)

    assert requests.post(f"{fake.url}/_fake/reset", timeout=5).status_code == 200

    assert fake.requests == []
    gateway.send_sms(BEN_TEXT)
    assert fake.counts()["per_to"] == {BEN: 1}


def test_it_rejects_a_fault_it_does_not_know(fake: FakeTwilio) -> None:
    answer = requests.post(
        f"{fake.url}/_fake/faults", json={"messages": [{"stauts": 500}]}, timeout=5
    )

    assert answer.status_code == 400
    assert "stauts" in answer.json()["error"]


@pytest.mark.slow
def test_it_runs_as_a_script(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.fake_twilio", "--port", "0", "--auth-token", AUTH_TOKEN]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 10)
            assert ready, "the fake did not say where it listens"
            url = json.loads(process.stdout.readline())["url"]
            gateway = build_gateway(_settings(url, tmp_path))

            sent = gateway.send_sms(ANA_TEXT)

            recorded = requests.get(f"{url}/_fake/requests", timeout=5).json()["requests"]
            assert [(r["kind"], r["sid"], r["status"]) for r in recorded] == [
                ("message", sent.sid, 201)
            ]
            assert recorded[0]["form"]["To"] == [ANA]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
        finally:
            process.kill()  # a no-op once it has exited
