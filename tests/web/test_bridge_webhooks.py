"""The click-to-call bridge's Twilio webhooks: signatures, unknown ids, duplicates, order."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from telephony_service.models import CallAttempt, Practice, Task, User
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
STATUS_ENDPOINTS = ("agent-status", "patient-status", "amd")


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


# --- answering machine detection, and dial results beyond the usual ---------------------


def _dialled(client: FlaskClient, placed: Placed) -> str:
    """The agent answers and presses 1; the patient's leg is dialled."""
    query = _query(placed)
    post_twilio(client, f"{BASE}/agent?{query}", _agent(placed, CallStatus="in-progress"))
    dial = post_twilio(
        client, f"{BASE}/accept?{query}", _agent(placed, CallStatus="in-progress", Digits="1")
    )
    assert "<Dial" in dial.text
    return query


def _amd(child: str, answered_by: str) -> dict[str, str]:
    # What Twilio posts to amdStatusCallback: the patient's leg and its verdict.
    return {
        **leg(child, ANA, RIVERSIDE_NUMBER),
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": "2400",
    }


def _dial_result(placed: Placed, child: str, status: str, duration: str) -> dict[str, str]:
    return _agent(
        placed,
        CallStatus="in-progress",
        DialCallStatus=status,
        DialCallSid=child,
        DialCallDuration=duration,
    )


def _timeline(services: Services, task_id: int) -> list[tuple[str, str | None]]:
    with services.session() as session:
        return [(entry.kind, entry.text) for entry in session.get_one(Task, task_id).timeline]


def test_it_records_a_machine_that_detection_found_during_the_call(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    query = _dialled(client, placed)
    child = "CA" + "8" * 32
    patient = f"{BASE}/patient-status?{query}"
    post_twilio(client, patient, _patient(placed, child, "in-progress"))

    detected = post_twilio(client, f"{BASE}/amd?{query}", _amd(child, "machine_start"))
    post_twilio(client, patient, _patient(placed, child, "completed", CallDuration="21"))
    post_twilio(
        client, f"{BASE}/dial-result?{query}", _dial_result(placed, child, "completed", "21")
    )

    assert detected.status_code == 204
    row = attempt(services, 1)
    assert (row.status, row.answered_by, row.patient_call_sid) == (
        "machine",
        "machine_start",
        child,
    )
    assert _timeline(services, task_id)[1:] == [("call_result", "Answering machine")]


def test_it_keeps_a_call_a_human_answered_as_completed(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    query = _dialled(client, placed)
    child = "CA" + "9" * 32

    post_twilio(client, f"{BASE}/amd?{query}", _amd(child, "human"))
    post_twilio(
        client, f"{BASE}/dial-result?{query}", _dial_result(placed, child, "completed", "64")
    )

    row = attempt(services, 1)
    assert (row.status, row.answered_by, row.duration) == ("completed", "human", 64)
    assert timeline_kinds(services, task_id) == ["call_placed", "call_result"]


def test_it_adds_a_result_when_detection_finds_a_machine_after_the_call_ended(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    play_bridge(client, placed)
    child = attempt(services, 1).patient_call_sid
    assert child is not None and attempt(services, 1).status == "completed"

    late = post_twilio(client, f"{BASE}/amd?{_query(placed)}", _amd(child, "machine_end_beep"))
    again = post_twilio(client, f"{BASE}/amd?{_query(placed)}", _amd(child, "machine_end_beep"))

    assert (late.status_code, again.status_code) == (204, 204)
    row = attempt(services, 1)
    assert (row.status, row.answered_by) == ("machine", "machine_end_beep")
    # Append-only: the first result stays, and a second entry says what it turned out to be.
    assert _timeline(services, task_id)[1:] == [
        ("call_result", "Call ended after 42 s"),
        ("call_result", "Answering machine: detected after the call ended"),
    ]


def test_it_ignores_detection_for_another_call_or_before_any_dial(
    client: FlaskClient, services: Services, placed: Placed
) -> None:
    query = _query(placed)
    post_twilio(client, f"{BASE}/agent?{query}", _agent(placed, CallStatus="in-progress"))
    before_dial = post_twilio(client, f"{BASE}/amd?{query}", _amd("CA" + "a" * 32, "machine_start"))
    assert attempt(services, 1).answered_by is None
    play_bridge(client, placed)
    stranger = post_twilio(client, f"{BASE}/amd?{query}", _amd("CA" + "b" * 32, "machine_start"))

    assert (before_dial.status_code, stranger.status_code) == (204, 204)
    row = attempt(services, 1)
    assert (row.status, row.answered_by) == ("completed", None)


def test_it_counts_a_dial_reported_answered_as_a_connected_call(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    query = _dialled(client, placed)
    child = "CA" + "c" * 32

    result = post_twilio(
        client, f"{BASE}/dial-result?{query}", _dial_result(placed, child, "answered", "75")
    )

    row = attempt(services, 1)
    assert (row.status, row.dial_status, row.duration) == ("completed", "completed", 75)
    assert "did not go through" not in result.text
    assert _timeline(services, task_id)[1:] == [("call_result", "Call ended after 1 min 15 s")]


def test_it_shows_a_dial_result_it_does_not_know_as_reported(
    client: FlaskClient, services: Services, placed: Placed, task_id: int
) -> None:
    query = _dialled(client, placed)
    child = "CA" + "d" * 32

    post_twilio(client, f"{BASE}/dial-result?{query}", _dial_result(placed, child, "rerouted", "0"))

    row = attempt(services, 1)
    assert row.status == "ended"
    assert row.error == "Twilio reported “rerouted” for the call to the patient."
    shown = client.get("/calls/1.json", headers={"X-Background": "1"}).get_json()
    assert (shown["label"], shown["ended"]) == ("Call ended", True)
    assert _timeline(services, task_id)[1:] == [
        ("call_result", "Call ended: Twilio reported “rerouted” for the call to the patient.")
    ]
