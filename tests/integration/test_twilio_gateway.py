"""The Twilio gateway, with Twilio faked at the HTTP layer (and, for timeouts, a real socket).

What the gateway sends is also checked against Twilio's own OpenAPI description.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import requests
import responses

from telephony_service.gateways import (
    ConsoleGateway,
    GatewayError,
    OutboundCall,
    OutboundSms,
    build_gateway,
)
from telephony_service.gateways.twilio import LIST_LIMIT, TwilioGateway
from telephony_service.settings import Settings
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.helpers import ANA, BEN, RIVERSIDE_NUMBER, new_sid

# A copy of ../shared/twilio-oai (Twilio's own description, MIT), so the suite runs from any clone.
OPENAPI = Path(__file__).parents[1] / "data" / "twilio-oai" / "twilio_api_v2010.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
CALLS_PATH = "/2010-04-01/Accounts/{AccountSid}/Calls.json"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
CALLBACKS = "https://callbacks.example.test"
TEXT = "Riverside Family Medicine: sorry we missed your call. Book: https://book.example.com/r"

ANA_TEXT = OutboundSms(
    to=ANA, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=f"{CALLBACKS}/twilio/sms/status"
)
AGENT_CALL = OutboundCall(
    to="+16175550142",  # Dana, the agent, rung first on click-to-call
    from_=RIVERSIDE_NUMBER,
    url=f"{CALLBACKS}/twilio/voice/bridge/7",
    status_callback=f"{CALLBACKS}/twilio/voice/status",
    machine_detection="Enable",
)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    if not OPENAPI.exists():
        pytest.fail(f"Twilio's OpenAPI description is missing: expected it at {OPENAPI}")
    spec: dict[str, Any] = json.loads(OPENAPI.read_text())
    return spec


@pytest.fixture
def gateway() -> TwilioGateway:
    return TwilioGateway(ACCOUNT_SID, AUTH_TOKEN)


def _message(
    sid: str, *, status: str = "queued", created: str = "Tue, 17 Nov 2026 15:00:31 +0000"
) -> dict[str, Any]:
    return {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": TEXT,
        "date_created": created,
        "date_sent": None if status in ("queued", "accepted") else created,
        "date_updated": created,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": RIVERSIDE_NUMBER,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json"
        },
        "to": ANA,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
    }


def _call(sid: str) -> dict[str, Any]:
    return {
        "account_sid": ACCOUNT_SID,
        "annotation": None,
        "answered_by": None,
        "api_version": "2010-04-01",
        "caller_name": None,
        "date_created": None,
        "date_updated": None,
        "direction": "outbound-api",
        "duration": None,
        "end_time": None,
        "forwarded_from": None,
        "from": RIVERSIDE_NUMBER,
        "from_formatted": "(617) 555-0100",
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": "PN" + "b2" * 16,
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "start_time": None,
        "status": "queued",
        "subresource_uris": {},
        "to": "+16175550142",
        "to_formatted": "(617) 555-0142",
        "trunk_sid": None,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json",
        "queue_time": "0",
    }


def _twilio_error(code: int, status: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _form(call: Any) -> dict[str, list[str]]:
    return parse_qs(call.request.body, strict_parsing=True)


def _form_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"][path]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]
    return schema


def _assert_accepted_by_twilio(form: dict[str, list[str]], schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    assert set(form) <= set(properties), f"not in Twilio's schema: {set(form) - set(properties)}"
    assert set(schema.get("required", [])) <= set(form)
    # Form values are strings; read them as the schema types them, then validate.
    instance: dict[str, Any] = {}
    for name, values in form.items():
        kind = properties[name].get("type")
        if kind == "array":
            instance[name] = values
        else:
            assert len(values) == 1, f"{name} sent more than once"
            instance[name] = int(values[0]) if kind == "integer" else values[0]
    jsonschema.Draft7Validator(schema).validate(instance)


def _sms_refused(gateway: TwilioGateway, status: int, payload: Any) -> GatewayError:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, status=status, body=body, content_type="application/json")
        with pytest.raises(GatewayError) as refused:
            gateway.send_sms(ANA_TEXT)
        assert len(mock.calls) == 1, "the gateway must leave retrying to its caller"
    return refused.value


def test_it_sends_a_text_to_twilio(gateway: TwilioGateway, openapi: dict[str, Any]) -> None:
    sid = new_sid("SM")
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, status=201, json=_message(sid))

        sent = gateway.send_sms(ANA_TEXT)

        [call] = mock.calls
    assert (sent.sid, sent.status) == (sid, "queued")
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert call.request.headers["Authorization"] == f"Basic {credentials}"
    assert call.request.req_kwargs["timeout"] == 10.0
    form = _form(call)
    assert form == {
        "To": [ANA],
        "From": [RIVERSIDE_NUMBER],
        "Body": [TEXT],
        "StatusCallback": [f"{CALLBACKS}/twilio/sms/status"],
    }
    _assert_accepted_by_twilio(form, _form_schema(openapi, MESSAGES_PATH))


def _as_requests_prepares_it(sent: requests.PreparedRequest, form: dict[str, Any]) -> Any:
    """`sent` as requests' own PreparedRequest.prepare would have made it from `form`."""
    own = ("content-length", "content-type", "authorization")
    headers = {name: value for name, value in sent.headers.items() if name.lower() not in own}
    return requests.Request(
        "POST", sent.url, data=form, headers=headers, auth=(ACCOUNT_SID, AUTH_TOKEN)
    ).prepare()


def test_it_posts_what_requests_would_prepare_for_the_same_form(gateway: TwilioGateway) -> None:
    # The gateway prepares a post once per URL and copies it (see _form_request).
    odd = "José's café & co — 50% off? a+b=c; 100% sure\n"
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, status=201, json=_message(new_sid("SM")))
        mock.post(CALLS_URL, status=201, json=_call(new_sid("CA")))

        gateway.send_sms(ANA_TEXT)
        gateway.send_sms(dataclasses.replace(ANA_TEXT, to=BEN, body=odd))
        gateway.place_call(dataclasses.replace(AGENT_CALL, timeout_seconds=30))

        sent = [call.request for call in mock.calls]
    callback = ANA_TEXT.status_callback
    expected_forms = [
        {"To": [ANA], "From": [RIVERSIDE_NUMBER], "Body": [TEXT], "StatusCallback": [callback]},
        {"To": [BEN], "From": [RIVERSIDE_NUMBER], "Body": [odd], "StatusCallback": [callback]},
        None,
    ]
    for request, expected_form in zip(sent, expected_forms, strict=True):
        # In the order twilio gave the fields, as requests would have encoded them.
        form = parse_qs(request.body, keep_blank_values=True)
        if expected_form is not None:
            assert form == expected_form
        data = {key: values if len(values) > 1 else values[0] for key, values in form.items()}
        expected = _as_requests_prepares_it(request, data)
        assert (request.method, request.url, request.body) == (
            expected.method,
            expected.url,
            expected.body,
        )
        assert request.headers == expected.headers
    assert parse_qs(sent[2].body)["StatusCallbackEvent"] == list(AGENT_CALL.status_callback_events)
    assert parse_qs(sent[2].body)["Timeout"] == ["30"]


def test_it_leaves_out_a_missing_status_callback(gateway: TwilioGateway) -> None:
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, status=201, json=_message(new_sid("SM")))

        gateway.send_sms(
            OutboundSms(to=ANA, from_=RIVERSIDE_NUMBER, body=TEXT, status_callback=None)
        )

        assert "StatusCallback" not in _form(mock.calls[0])


def test_it_sends_to_the_configured_base_url() -> None:
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, api_base_url="http://127.0.0.1:4010")
    local = f"http://127.0.0.1:4010/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    with responses.RequestsMock() as mock:
        mock.post(local, status=201, json=_message("SM" + "c3" * 16))

        sent = gateway.send_sms(ANA_TEXT)

        assert [call.request.url for call in mock.calls] == [local]
    assert sent.sid == "SM" + "c3" * 16


def test_it_reaches_a_regional_edge_through_the_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # twilio would otherwise rebuild the host from these and ignore the base URL.
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    gateway = TwilioGateway(
        ACCOUNT_SID, AUTH_TOKEN, api_base_url="https://api.dublin.ie1.twilio.com"
    )
    edge = f"https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    with responses.RequestsMock() as mock:
        mock.post(edge, status=201, json=_message(new_sid("SM")))

        gateway.send_sms(ANA_TEXT)

        assert [call.request.url for call in mock.calls] == [edge]


def test_it_ignores_twilio_edge_variables_with_the_default_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, status=201, json=_message(new_sid("SM")))

        TwilioGateway(ACCOUNT_SID, AUTH_TOKEN).send_sms(ANA_TEXT)

        assert [call.request.url for call in mock.calls] == [MESSAGES_URL]


def test_it_treats_an_opted_out_patient_as_permanent(gateway: TwilioGateway) -> None:
    error = _sms_refused(
        gateway, 400, _twilio_error(21610, 400, "Attempt to send to unsubscribed recipient")
    )

    assert (error.permanent, error.code, error.status, error.outcome_unknown) == (
        True,
        21610,
        400,
        False,
    )


def test_it_treats_an_invalid_number_as_permanent_without_repeating_it(
    gateway: TwilioGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        error = _sms_refused(
            gateway,
            400,
            _twilio_error(21211, 400, f"The 'To' number {ANA} is not a valid phone number."),
        )

    assert (error.permanent, error.code) == (True, 21211)
    assert "+*******0143" in error.message
    assert ANA not in error.message
    assert error.__cause__ is None and error.__suppress_context__
    assert caplog.records and ANA not in caplog.text and TEXT not in caplog.text


@pytest.mark.parametrize(
    "code", [21614, 21408, 21608, 21606, 21212], ids=lambda code: f"code {code}"
)
def test_it_treats_numbers_twilio_will_never_accept_as_permanent(
    gateway: TwilioGateway, code: int
) -> None:
    error = _sms_refused(gateway, 400, _twilio_error(code, 400, "refused"))

    assert (error.permanent, error.code) == (True, code)


def test_it_treats_an_unknown_refusal_as_permanent(gateway: TwilioGateway) -> None:
    error = _sms_refused(gateway, 400, _twilio_error(21620, 400, "Invalid media URL"))

    assert (error.permanent, error.code, error.status) == (True, 21620, 400)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, 20003),  # credentials refused while the auth token is rotated
        (400, 21611),  # the sending number's queue is full
        (429, 20429),
    ],
)
def test_it_treats_refusals_that_pass_later_as_retryable(
    gateway: TwilioGateway, status: int, code: int
) -> None:
    error = _sms_refused(gateway, status, _twilio_error(code, status, "try later"))

    assert (error.permanent, error.code, error.outcome_unknown) == (False, code, False)


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (429, _twilio_error(20429, 429, "Too Many Requests"), 20429),
        (429, "Too Many Requests", None),
        (
            429,
            {
                "type": "https://www.twilio.com/docs/errors/20429",
                "title": "Too Many Requests",
                "status": 429,
                "code": 20429,
            },
            20429,
        ),
        (500, _twilio_error(20500, 500, "Internal Server Error"), 20500),
        (503, "<html><body>Service Unavailable</body></html>", None),
    ],
    ids=["20429", "429 without a body", "429 as problem details", "500", "503"],
)
def test_it_treats_throttling_and_server_errors_as_retryable(
    gateway: TwilioGateway, status: int, payload: Any, code: int | None
) -> None:
    error = _sms_refused(gateway, status, payload)

    # A 500 may come after Twilio created the message: it is looked up before a resend.
    # 429 and 503 turn the request away at the door.
    assert (error.permanent, error.code, error.status, error.outcome_unknown) == (
        False,
        code,
        status,
        status == 500,
    )


def test_it_reports_a_read_timeout_as_retryable_with_an_unknown_outcome(
    gateway: TwilioGateway,
) -> None:
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, body=requests.exceptions.ReadTimeout("read timed out"))
        with pytest.raises(GatewayError) as failed:
            gateway.send_sms(ANA_TEXT)

        assert len(mock.calls) == 1

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, True)


def test_it_reports_a_dropped_connection_as_an_unknown_outcome(gateway: TwilioGateway) -> None:
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, body=requests.exceptions.ConnectionError("Connection aborted."))
        with pytest.raises(GatewayError) as failed:
            gateway.send_sms(ANA_TEXT)

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, True)


def test_it_reports_a_connect_timeout_as_retryable_and_not_sent(gateway: TwilioGateway) -> None:
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, body=requests.exceptions.ConnectTimeout("connect timed out"))
        with pytest.raises(GatewayError) as failed:
            gateway.send_sms(ANA_TEXT)

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, False)


def test_it_reports_an_unreadable_success_as_an_unknown_outcome(gateway: TwilioGateway) -> None:
    with responses.RequestsMock() as mock:
        mock.post(MESSAGES_URL, status=201, body="<html>proxy says hi</html>")
        with pytest.raises(GatewayError) as failed:
            gateway.send_sms(ANA_TEXT)

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, True)


def test_it_places_a_call(gateway: TwilioGateway, openapi: dict[str, Any]) -> None:
    sid = new_sid("CA")
    with responses.RequestsMock() as mock:
        mock.post(CALLS_URL, status=201, json=_call(sid))

        placed = gateway.place_call(AGENT_CALL)

        [call] = mock.calls
    assert (placed.sid, placed.status) == (sid, "queued")
    form = _form(call)
    assert form == {
        "To": ["+16175550142"],
        "From": [RIVERSIDE_NUMBER],
        "Url": [f"{CALLBACKS}/twilio/voice/bridge/7"],
        "StatusCallback": [f"{CALLBACKS}/twilio/voice/status"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "Timeout": ["25"],
        "MachineDetection": ["Enable"],
    }
    _assert_accepted_by_twilio(form, _form_schema(openapi, CALLS_PATH))


def test_it_maps_a_refused_call_like_a_refused_text(gateway: TwilioGateway) -> None:
    with responses.RequestsMock() as mock:
        mock.post(
            CALLS_URL,
            status=400,
            json=_twilio_error(21215, 400, "Geo Permission configuration is not permitting call"),
        )
        with pytest.raises(GatewayError) as refused:
            gateway.place_call(AGENT_CALL)

    assert (refused.value.permanent, refused.value.code) == (True, 21215)


def test_it_lists_messages_for_a_reconciliation(
    gateway: TwilioGateway, openapi: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    queued, delivered, older = new_sid("SM"), new_sid("SM"), new_sid("SM")
    page = {
        "end": 2,
        "first_page_uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?PageSize=200&Page=0",
        "messages": [
            _message(queued, status="queued", created="Tue, 17 Nov 2026 15:00:31 +0000"),
            _message(delivered, status="delivered", created="Tue, 17 Nov 2026 15:00:30 +0000"),
            _message(older, status="delivered", created="Tue, 17 Nov 2026 14:59:59 +0000"),
        ],
        "next_page_uri": None,
        "page": 0,
        "page_size": LIST_LIMIT,
        "previous_page_uri": None,
        "start": 0,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?PageSize=200&Page=0",
    }
    with responses.RequestsMock() as mock:
        mock.get(MESSAGES_URL, json=page)

        # The attempt began mid-second; Twilio keeps whole seconds.
        with caplog.at_level(logging.INFO):
            found = gateway.list_messages(
                to=ANA,
                from_=RIVERSIDE_NUMBER,
                sent_after=datetime(2026, 11, 17, 15, 0, 30, 600_000, tzinfo=UTC),
            )

        [call] = mock.calls
    query = parse_qs(urlsplit(call.request.url).query, strict_parsing=True)
    assert query == {"To": [ANA], "From": [RIVERSIDE_NUMBER], "PageSize": [str(LIST_LIMIT)]}
    parameters = openapi["paths"][MESSAGES_PATH]["get"]["parameters"]
    declared = {parameter["name"] for parameter in parameters}
    assert set(query) <= declared
    assert [(record.sid, record.status) for record in found] == [
        (queued, "queued"),
        (delivered, "delivered"),
    ]
    assert found[0].to == ANA
    assert found[0].from_ == RIVERSIDE_NUMBER
    assert found[0].body == TEXT
    assert found[0].date_created == datetime(2026, 11, 17, 15, 0, 31, tzinfo=UTC)
    # twilio's own client logs list queries, phone numbers included, at INFO.
    assert "2025550143" not in caplog.text


def test_it_maps_a_failed_list_page(gateway: TwilioGateway) -> None:
    with responses.RequestsMock() as mock:
        mock.get(MESSAGES_URL, status=429, json=_twilio_error(20429, 429, "Too Many Requests"))
        with pytest.raises(GatewayError) as failed:
            gateway.list_messages(
                to=BEN, from_=RIVERSIDE_NUMBER, sent_after=datetime(2026, 11, 17, tzinfo=UTC)
            )

    assert (failed.value.permanent, failed.value.code, failed.value.status) == (
        False,
        20429,
        429,
    )
    assert failed.value.outcome_unknown is False


def test_it_refuses_a_naive_reconciliation_time(gateway: TwilioGateway) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        gateway.list_messages(to=ANA, from_=RIVERSIDE_NUMBER, sent_after=datetime(2026, 11, 17))


def test_it_builds_twilio_only_with_credentials(tmp_path: Path) -> None:
    settings = Settings(
        database_url="sqlite://",
        redis_url=None,
        secret_key="test-secret-key-0123456789",
        public_base_url=CALLBACKS,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url="https://api.twilio.com",
        instance_path=tmp_path,
    )
    unset = dataclasses.replace(settings, twilio_account_sid=None, twilio_auth_token=None)

    assert isinstance(build_gateway(settings), TwilioGateway)
    assert isinstance(build_gateway(unset), ConsoleGateway)


class _Server:
    """A local server that reads a request and then hangs or hangs up, counting connections."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self.release.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                connection.recv(65536)
                if self.behaviour == "hang":
                    self.release.wait()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    serving = _Server(request.param)
    serving.thread.start()
    yield serving
    serving.release.set()
    serving.thread.join()
    serving.listener.close()


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_it_gives_up_on_a_silent_twilio_after_its_timeout(server: _Server) -> None:
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, api_base_url=server.url, timeout=0.3)

    with pytest.raises(GatewayError) as failed:
        gateway.send_sms(ANA_TEXT)

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, True)
    assert "ReadTimeout" in failed.value.message
    assert server.connections == 1


@pytest.mark.parametrize("server", ["hang up"], indirect=True)
def test_it_does_not_resend_when_twilio_hangs_up(server: _Server) -> None:
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, api_base_url=server.url, timeout=2)

    with pytest.raises(GatewayError) as failed:
        gateway.send_sms(ANA_TEXT)

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, True)
    assert server.connections == 1


def test_it_knows_nothing_was_sent_when_the_connection_is_refused() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN, api_base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(GatewayError) as failed:
        gateway.send_sms(ANA_TEXT)

    assert (failed.value.permanent, failed.value.outcome_unknown) == (False, False)


@pytest.mark.parametrize(
    ("no_proxy", "expected"),
    [("", "http://proxy.example.test:3128"), ("api.twilio.com", None)],
)
def test_it_honours_the_proxy_settings_of_its_environment(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, expected: str | None
) -> None:
    # Read once, when the gateway is built (see _RebasedHttpClient), not on every request.
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://proxy.example.test:3128")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, no_proxy)
    proxies: list[dict[str, str]] = []

    def send(self: requests.adapters.HTTPAdapter, request: Any, **kwargs: Any) -> Any:
        proxies.append(kwargs["proxies"])
        raise requests.exceptions.ConnectionError("stopped before the network")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    gateway = TwilioGateway(ACCOUNT_SID, AUTH_TOKEN)

    with pytest.raises(GatewayError):
        gateway.send_sms(ANA_TEXT)

    assert [p.get("https") for p in proxies] == [expected]


# Run in a fresh interpreter: the test process may have imported all of twilio already.
_LOADED_RESOURCES = """
import sys
from telephony_service.gateways.twilio import TwilioGateway
TwilioGateway("AC" + "0" * 32, "token", api_base_url="http://127.0.0.1:9")
account = "twilio.rest.api.v2010.account"
print(sorted(name for name in sys.modules if name == account or name.startswith(account + ".")))
# Whatever imports the whole package later gets the same classes.
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageList
client = Client("AC" + "0" * 32, "token")
print(type(client.messages) is MessageList, type(client.calls).__module__)
"""


def test_it_loads_only_the_message_and_call_resources_of_twilios_account() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED_RESOURCES],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    loaded, later = result.stdout.splitlines()
    names = set(ast.literal_eval(loaded))
    assert "twilio.rest.api.v2010.account.message" in names
    assert "twilio.rest.api.v2010.account.call" in names
    # Not the package, nor its other resources (conferences, SIP, usage ...).
    assert "twilio.rest.api.v2010.account" not in names
    account = "twilio.rest.api.v2010.account."
    assert {name.removeprefix(account).split(".")[0] for name in names} == {"message", "call"}
    assert later == "True twilio.rest.api.v2010.account.call"
