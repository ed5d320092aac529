"""The click-to-call bridge's Twilio webhooks: signatures, unknown ids, duplicates, order."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from telephony_service.models import CallAttempt, Practice, User
from telephony_service.wiring import Services
from tests.call_support import (
    FakeCalls,
    Placed,
    attempt,
    attempts,
    faked_calls,
    leg,
    make_task,
    play_bridge,
    press_call,
)
from tests.conftest import twilio_signature
from tests.helpers import ANA, RIVERSIDE_NUMBER, make_practice, post_twilio, timeline_kinds
from tests.workspace_support import make_user, sign_in_as

DANA = "+16175550142"
BASE = "/twilio/voice/bridge"
TWIML_ENDPOINTS = ("agent", "accept", "dial-result")
STATUS_ENDPOINTS = ("agent-status", "patient-status")


@pytest.fixture
def calls() -> Iterator[FakeCalls]:
    with faked_calls() as fake:
        yield fake


@pytest.fixture
def riverside(services: Services) -> Practice:
    return make_practice(services)


@pytest.fixture
def dana(services: Services, riverside: Practice) -> User:
    return make_user(
        services, riverside.id, email="dana@riverside.example", phone=DANA, name="Dana"
    )


@pytest.fixture
def browser(client: FlaskClient, services: Services, dana: User) -> FlaskClient:
    sign_in_as(client, services, dana)
    return client


@pytest.fixture
def task_id(services: Services, riverside: Practice) -> int:
    return make_task(services, riverside.id)


@pytest.fixture
def placed(browser: FlaskClient, calls: FakeCalls, task_id: int) -> Placed:
    assert press_call(browser, task_id).status_code == 200
    return calls.placed[0]


def _query(placed: Placed) -> str:
    return urlsplit(placed.url).query


def _agent(placed: Placed, **extra: str) -> dict[str, str]:
    return leg(placed.sid, DANA, RIVERSIDE_NUMBER, **extra)


def _patient(placed: Placed, child: str, status: str, **extra: str) -> dict[str, str]:
    return {
        **leg(child, ANA, RIVERSIDE_NUMBER, CallStatus=status, **extra),
        "ParentCallSid": placed.sid,
    }


def _snapshot(services: Services) -> list[tuple[object, ...]]:
    return [
        (row.status, row.agent_call_sid, row.agent_status, row.dial_status, row.updated_at)
        for row in attempts(services)
    ]


@pytest.mark.parametrize("endpoint", TWIML_ENDPOINTS + STATUS_ENDPOINTS)
def test_it_refuses_a_forged_or_missing_signature_and_writes_nothing(
    client: FlaskClient, services: Services, placed: Placed, endpoint: str
) -> None:
    path = f"{BASE}/{endpoint}?{_query(placed)}"
    params = _agent(placed, CallStatus="completed", Digits="1", DialCallStatus="completed")
    before = _snapshot(services)
    forged = twilio_signature(path, params, token="not-the-auth-token")
    # Signed for another attempt: the query is part of what Twilio signs.
    other = twilio_signature(f"{BASE}/{endpoint}?a=999", params)

    answers = [
        post_twilio(client, path, params, signature=forged),
        post_twilio(client, path, params, signature=""),
        post_twilio(client, path, params, signature=other),
    ]

    assert [answer.status_code for answer in answers] == [403, 403, 403]
    assert _snapshot(services) == before


@pytest.mark.parametrize("query", ["a=999", "a=", "a=abc", ""])
def test_it_answers_unknown_attempts_politely(
    client: FlaskClient, services: Services, riverside: Practice, query: str
) -> None:
    for endpoint in TWIML_ENDPOINTS:
        answer = post_twilio(
            client, f"{BASE}/{endpoint}?{query}".rstrip("?"), leg("CA" + "1" * 32, DANA, ANA)
        )
        assert answer.status_code == 200
        assert answer.mimetype == "text/xml"
        assert "<Say" in answer.text and "<Hangup" in answer.text
        assert "<Dial" not in answer.text
    for endpoint in STATUS_ENDPOINTS:
        answer = post_twilio(
            client,
            f"{BASE}/{endpoint}?{query}".rstrip("?"),
            leg("CA" + "1" * 32, DANA, ANA, CallStatus="completed"),
        )
        assert answer.status_code == 204


def test_it_ignores_another_calls_sid_for_an_attempt(
    client: FlaskClient, services: Services, placed: Placed
) -> None:
    stranger = "CA" + "2" * 32
    before = _snapshot(services)

    whisper = post_twilio(
        client,
        f"{BASE}/agent?{_query(placed)}",
        leg(stranger, DANA, RIVERSIDE_NUMBER, CallStatus="in-progress"),
    )
    status = post_twilio(
        client,
        f"{BASE}/agent-status?{_query(placed)}",
        leg(stranger, DANA, RIVERSIDE_NUMBER, CallStatus="completed"),
    )

    assert "<Gather" not in whisper.text and "<Hangup" in whisper.text
    assert status.status_code == 204
    assert _snapshot(services) == before


def test_it_records_a_result_once_however_often_twilio_sends_it(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    answers = play_bridge(client, placed)
    params = _agent(
        placed,
        CallStatus="in-progress",
        DialCallStatus="no-answer",
        DialCallSid="CA" + "3" * 32,
        DialCallDuration="0",
    )

    again = post_twilio(client, f"{BASE}/dial-result?{_query(placed)}", params)

    assert "<Hangup" in answers["dial_result"].text
    assert "<Hangup" in again.text
    [row] = attempts(services)
    assert (row.status, row.duration) == ("completed", 42)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_keeps_statuses_moving_forward_when_callbacks_come_out_of_order(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    query = _query(placed)
    child = "CA" + "4" * 32
    post_twilio(client, f"{BASE}/agent?{query}", _agent(placed, CallStatus="in-progress"))
    # A late "ringing" for the agent's leg, after it was answered.
    post_twilio(client, f"{BASE}/agent-status?{query}", _agent(placed, CallStatus="ringing"))
    assert attempt(services, 1).status == "agent_answered"
    assert attempt(services, 1).agent_status == "in-progress"
    dial = post_twilio(
        client, f"{BASE}/accept?{query}", _agent(placed, CallStatus="in-progress", Digits="1")
    )
    assert "<Dial" in dial.text
    # The patient's leg: "completed" overtakes "in-progress" and "ringing".
    patient = f"{BASE}/patient-status?{query}"
    post_twilio(client, patient, _patient(placed, child, "completed", CallDuration="30"))
    post_twilio(client, patient, _patient(placed, child, "in-progress"))
    post_twilio(client, patient, _patient(placed, child, "ringing"))
    # The agent's leg ends before the dial's action arrives.
    post_twilio(client, f"{BASE}/agent-status?{query}", _agent(placed, CallStatus="completed"))
    post_twilio(
        client,
        f"{BASE}/dial-result?{query}",
        _agent(
            placed,
            CallStatus="completed",
            DialCallStatus="completed",
            DialCallSid=child,
            DialCallDuration="30",
        ),
    )

    row = attempt(services, 1)
    assert (row.status, row.dial_status, row.agent_status) == (
        "completed",
        "completed",
        "completed",
    )
    assert (row.patient_call_sid, row.duration) == (child, 30)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_gives_the_same_dial_when_twilio_retries_the_key_press(
    client: FlaskClient, services: Services, placed: Placed
) -> None:
    query = _query(placed)
    post_twilio(client, f"{BASE}/agent?{query}", _agent(placed, CallStatus="in-progress"))
    press = _agent(placed, CallStatus="in-progress", Digits="1")

    first = post_twilio(client, f"{BASE}/accept?{query}", press)
    second = post_twilio(client, f"{BASE}/accept?{query}", press)

    assert "<Dial" in first.text
    assert first.text == second.text
    assert attempt(services, 1).status == "patient_ringing"


def test_it_records_an_answering_machine(
    client: FlaskClient, services: Services, placed: Placed
) -> None:
    query = _query(placed)
    post_twilio(client, f"{BASE}/agent?{query}", _agent(placed, CallStatus="in-progress"))
    post_twilio(
        client, f"{BASE}/accept?{query}", _agent(placed, CallStatus="in-progress", Digits="1")
    )

    post_twilio(
        client,
        f"{BASE}/dial-result?{query}",
        _agent(
            placed,
            CallStatus="in-progress",
            DialCallStatus="completed",
            DialCallSid="CA" + "6" * 32,
            DialCallDuration="18",
            AnsweredBy="machine_end_beep",
        ),
    )

    row = attempt(services, 1)
    assert (row.status, row.answered_by, row.duration) == ("machine", "machine_end_beep", 18)


def test_it_ignores_patient_callbacks_for_an_attempt_that_never_dialled(
    client: FlaskClient, services: Services, placed: Placed
) -> None:
    query = _query(placed)
    before = _snapshot(services)

    post_twilio(
        client,
        f"{BASE}/patient-status?{query}",
        _patient(placed, "CA" + "7" * 32, "completed", CallDuration="5"),
    )
    result = post_twilio(
        client,
        f"{BASE}/dial-result?{query}",
        _agent(placed, CallStatus="in-progress", DialCallStatus="completed"),
    )

    assert "<Hangup" in result.text
    assert _snapshot(services) == before
    row: CallAttempt = attempts(services)[0]
    assert row.dial_status is None


def test_it_hangs_up_on_a_whisper_fetch_for_an_ended_attempt(
    client: FlaskClient, services: Services, placed: Placed
) -> None:
    query = _query(placed)
    post_twilio(client, f"{BASE}/agent-status?{query}", _agent(placed, CallStatus="busy"))

    late = post_twilio(client, f"{BASE}/agent?{query}", _agent(placed, CallStatus="in-progress"))

    assert "<Gather" not in late.text and "<Hangup" in late.text
    assert attempt(services, 1).status == "agent_missed"
