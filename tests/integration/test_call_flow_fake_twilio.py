"""Click-to-call end to end against the local Twilio stand-in (bench/fake_twilio.py).

The service runs in this process behind a real HTTP server (werkzeug's), so the fake reaches
it the way Twilio would: the REST request to create the call, then the signed bridge fetch,
the whisper's key, the patient's leg and the dial's action, and the status callbacks.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from bench.fake_twilio import FakeTwilio
from telephony_service.models import Practice, User
from telephony_service.web import create_app
from telephony_service.wiring import Services
from tests.call_support import attempts, make_task, press_call
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.helpers import ANA, RIVERSIDE_NUMBER, make_practice, timeline_kinds
from tests.workspace_support import make_user, sign_in_as

DANA = "+16175550142"
# Twilio's order for one bridged call: the agent's leg rings and answers, the bridge is
# fetched, the key goes to the Gather's action, the patient's leg runs, the dial's action
# gets its result, the agent's leg ends.
BRIDGED = [
    ("call_status", "initiated"),
    ("call_status", "ringing"),
    ("call_status", "in-progress"),
    ("call_url", "in-progress"),
    ("gather_action", "in-progress"),
    ("number_status", "initiated"),
    ("number_status", "ringing"),
    ("number_status", "in-progress"),
    ("number_status", "completed"),
    ("dial_action", "in-progress"),
    ("call_status", "completed"),
]


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, callback_delay=0.01) as serving:
        yield serving


@pytest.fixture
def live(services: Services, fake: FakeTwilio) -> Iterator[tuple[Flask, str]]:
    """The app on a real local port, with PUBLIC_BASE_URL pointing at it and the gateway at
    the fake; yields the app and its base URL."""
    apps: dict[str, Flask] = {}

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        return apps["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    services.settings = dataclasses.replace(
        services.settings, public_base_url=base, twilio_api_base_url=fake.url
    )
    app = create_app(services=services)
    app.config["TESTING"] = True
    apps["app"] = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield app, base
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def riverside(services: Services) -> Practice:
    return make_practice(services)


@pytest.fixture
def dana(services: Services, riverside: Practice) -> User:
    return make_user(services, riverside.id, email="dana@example.org", phone=DANA, name="Dana")


@pytest.fixture
def browser(live: tuple[Flask, str], services: Services, dana: User) -> FlaskClient:
    client = live[0].test_client()
    sign_in_as(client, services, dana)
    return client


def _played(fake: FakeTwilio) -> list[tuple[str, str]]:
    fake.wait_for(lambda: fake.counts()["calls_played"] == 1, timeout=15)
    # Detection's callback carries no CallStatus, as Twilio's does not.
    return [(hook.kind, hook.params.get("CallStatus", "")) for hook in fake.webhooks]


def test_it_bridges_a_call_through_twilio_end_to_end(
    live: tuple[Flask, str],
    browser: FlaskClient,
    services: Services,
    fake: FakeTwilio,
    riverside: Practice,
) -> None:
    _, base = live
    task_id = make_task(services, riverside.id)

    answer = press_call(browser, task_id)

    assert answer.status_code == 200, answer.text
    assert _played(fake) == BRIDGED
    [created] = fake.requests
    [row] = attempts(services)
    assert (created.kind, created.status, created.sid) == ("call", 201, row.agent_call_sid)
    assert created.form["To"] == [DANA]
    assert created.form["From"] == [RIVERSIDE_NUMBER]
    assert created.form["Url"] == [f"{base}/twilio/voice/bridge/agent?a={row.id}"]
    assert created.form["StatusCallback"] == [f"{base}/twilio/voice/bridge/agent-status?a={row.id}"]
    hooks = fake.webhooks
    # Every one accepted: each was signed as Twilio signs, over the URL it was sent to.
    assert {hook.status for hook in hooks} <= {200, 204}
    assert fake.counts()["webhooks_failed"] == 0
    dialled = [hook for hook in hooks if hook.kind == "number_status"]
    assert {hook.params["To"] for hook in dialled} == {ANA}
    assert {hook.params["From"] for hook in dialled} == {RIVERSIDE_NUMBER}
    assert {hook.params["ParentCallSid"] for hook in dialled} == {row.agent_call_sid}
    assert [hook.url for hook in hooks if hook.kind == "dial_action"] == [
        f"{base}/twilio/voice/bridge/dial-result?a={row.id}"
    ]
    assert (row.status, row.agent_status, row.dial_status) == (
        "completed",
        "completed",
        "completed",
    )
    assert (row.duration, row.patient_call_sid) == (42, dialled[0].params["CallSid"])
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]
    status = browser.get(f"/calls/{row.id}.json", headers={"X-Background": "1"}).get_json()
    assert (status["status"], status["ended"], status["duration"]) == ("completed", True, 42)


def test_it_never_rings_the_patient_when_the_agent_presses_nothing(
    browser: FlaskClient, services: Services, fake: FakeTwilio, riverside: Practice
) -> None:
    fake.script_calls(digits=None)
    task_id = make_task(services, riverside.id)

    press_call(browser, task_id)

    assert _played(fake) == [
        ("call_status", "initiated"),
        ("call_status", "ringing"),
        ("call_status", "in-progress"),
        ("call_url", "in-progress"),
        ("call_status", "completed"),
    ]
    [row] = attempts(services)
    assert (row.status, row.dial_status, row.patient_call_sid) == ("agent_missed", None, None)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_records_a_patient_who_does_not_answer(
    browser: FlaskClient, services: Services, fake: FakeTwilio, riverside: Practice
) -> None:
    fake.script_calls(dial_status="no-answer")
    task_id = make_task(services, riverside.id)

    press_call(browser, task_id)

    played = _played(fake)
    assert ("number_status", "no-answer") in played
    assert ("number_status", "in-progress") not in played
    [row] = attempts(services)
    assert (row.status, row.dial_status, row.duration) == ("no-answer", "no-answer", 0)


def test_it_records_the_answering_machine_twilio_detects(
    live: tuple[Flask, str],
    browser: FlaskClient,
    services: Services,
    fake: FakeTwilio,
    riverside: Practice,
) -> None:
    _, base = live
    fake.script_calls(answered_by="machine_end_beep")
    task_id = make_task(services, riverside.id)

    press_call(browser, task_id)

    played = _played(fake)
    # Asked for on the patient's <Number>, the verdict comes once the patient's leg answers.
    answered = played.index(("number_status", "in-progress"))
    assert played[answered + 1] == ("amd_status", "")
    [row] = attempts(services)
    [detection] = [hook for hook in fake.webhooks if hook.kind == "amd_status"]
    assert detection.url == f"{base}/twilio/voice/bridge/amd?a={row.id}"
    assert (detection.status, detection.params["CallSid"]) == (204, row.patient_call_sid)
    assert (row.status, row.answered_by, row.duration) == ("machine", "machine_end_beep", 42)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_takes_call_settings_over_its_control_api(fake: FakeTwilio) -> None:
    url = f"{fake.url}/_fake/calls"

    ok = requests.post(url, json={"digits": "2", "answered_by": "machine_start"}, timeout=5)
    wrong_status = requests.post(url, json={"dial_status": "ringing"}, timeout=5)
    unknown = requests.post(url, json={"digit": "1"}, timeout=5)

    assert ok.status_code == 200
    assert ok.json() == {
        "digits": "2",
        "dial_status": "completed",
        "duration": 42,
        "answered_by": "machine_start",
    }
    assert (wrong_status.status_code, unknown.status_code) == (400, 400)
    assert "digit" in unknown.json()["error"]
    assert fake.call_script.dial_status == "completed"
    assert requests.get(f"{fake.url}/_fake/webhooks", timeout=5).json() == {"webhooks": []}
