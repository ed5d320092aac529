"""Missed calls and voicemails reaching the practice number become one task each."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree

from telephony_service.domain.categories import BASE_PRIORITY, Category
from tests.conftest import FakeClock
from tests.helpers import (
    ANA,
    BEN,
    RIVERSIDE_NUMBER,
    call_ended,
    call_params,
    events,
    make_practice,
    new_sid,
    post_twilio,
    recording_ready,
    run_jobs,
    tasks_of,
    timeline_kinds,
    transcription_ready,
)


def test_it_answers_a_call_with_the_practice_greeting_and_a_voicemail_record(client, services):
    make_practice(services)
    response = post_twilio(
        client, "/twilio/voice/incoming", call_params(new_sid("CA"), CallStatus="ringing")
    )
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    root = ElementTree.fromstring(response.data)
    assert root.tag == "Response"
    say, record = root[0], root[1]
    assert say.tag == "Say" and "Riverside Family Medicine" in (say.text or "")
    assert record.tag == "Record"
    assert record.get("action") == "https://callbacks.example.test/twilio/voice/recorded"
    assert record.get("recordingStatusCallback") == (
        "https://callbacks.example.test/twilio/voice/recording"
    )
    assert record.get("transcribeCallback") == (
        "https://callbacks.example.test/twilio/voice/transcription"
    )
    assert 30 <= int(record.get("maxLength", "0")) <= 300
    assert events(services) == []  # answering writes nothing


def test_it_answers_a_call_to_an_unknown_number_politely_and_makes_no_task(client, services):
    make_practice(services)
    params = call_params(new_sid("CA"), to="+16175550199", CallStatus="ringing")
    response = post_twilio(client, "/twilio/voice/incoming", params)
    assert response.status_code == 200
    root = ElementTree.fromstring(response.data)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert "Record" not in response.text

    call_ended(client, params["CallSid"], to="+16175550199")
    run_jobs(services, services.redis)
    assert tasks_of(services) == []


def test_it_answers_for_a_practice_added_since_a_call_to_its_number(client, services):
    params = call_params(new_sid("CA"), CallStatus="ringing")
    before = post_twilio(client, "/twilio/voice/incoming", params)
    assert "Record" not in before.text  # nobody owns the number yet
    make_practice(services)
    params = call_params(new_sid("CA"), CallStatus="ringing")
    after = post_twilio(client, "/twilio/voice/incoming", params)
    assert "Riverside Family Medicine" in after.text and "Record" in after.text


def test_it_says_goodbye_after_the_message_is_recorded(client, services):
    response = post_twilio(
        client, "/twilio/voice/recorded", call_params(new_sid("CA"), RecordingSid=new_sid("RE"))
    )
    root = ElementTree.fromstring(response.data)
    assert [child.tag for child in root] == ["Say", "Hangup"]


def test_it_turns_an_ended_call_into_a_missed_call_task(client, services, clock: FakeClock):
    practice = make_practice(services)
    response = call_ended(client, new_sid("CA"))
    assert response.status_code == 200
    run_jobs(services, services.redis)

    [task] = tasks_of(services)
    assert task.practice_id == practice.id
    assert task.category == "missed_call"
    assert task.status == "new"
    assert task.call_count == 1
    assert not task.has_voicemail
    # Tuesday 10:00 New York + 60 business minutes.
    assert task.due_at == datetime(2026, 11, 17, 16, 0, tzinfo=UTC)
    assert timeline_kinds(services, task.id) == ["created"]


def test_it_stores_a_retried_status_callback_once(client, services):
    make_practice(services)
    call_sid = new_sid("CA")
    assert call_ended(client, call_sid).status_code == 200
    assert call_ended(client, call_sid).status_code == 200
    run_jobs(services, services.redis)
    assert len(events(services)) == 1
    assert len(tasks_of(services)) == 1


def test_it_ignores_progress_updates_that_are_not_the_end_of_a_call(client, services):
    make_practice(services)
    params = call_params(new_sid("CA"), CallStatus="ringing")
    assert post_twilio(client, "/twilio/voice/status", params).status_code == 200
    assert events(services) == []


def test_it_merges_a_repeat_call_into_the_open_task(client, services, clock: FakeClock):
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, services.redis)
    [first] = tasks_of(services)

    clock.advance(minutes=20)
    call_ended(client, new_sid("CA"))
    run_jobs(services, services.redis)

    [task] = tasks_of(services)
    assert task.id == first.id
    assert task.call_count == 2
    assert task.priority > first.priority
    # The patient calling again is real contact: the automated texts stop.
    assert timeline_kinds(services, task.id) == ["created", "call_merged", "cadence_stopped"]


def test_it_keeps_callers_apart(client, services):
    make_practice(services)
    call_ended(client, new_sid("CA"), caller=ANA)
    call_ended(client, new_sid("CA"), caller=BEN)
    run_jobs(services, services.redis)
    assert len(tasks_of(services)) == 2


def test_it_makes_one_voicemail_task_when_the_recording_arrives_after_the_call_ends(
    client, services
):
    make_practice(services)
    call_sid, recording_sid = new_sid("CA"), new_sid("RE")
    call_ended(client, call_sid)
    run_jobs(services, services.redis)
    recording_ready(client, call_sid, recording_sid)
    run_jobs(services, services.redis)
    transcription_ready(client, call_sid, recording_sid, "Hi, it's Ana, about my referral.")
    run_jobs(services, services.redis)

    [task] = tasks_of(services)
    assert task.category == "voicemail"
    assert task.has_voicemail
    assert task.call_count == 1
    assert task.priority == BASE_PRIORITY[Category.VOICEMAIL]
    assert timeline_kinds(services, task.id) == ["created", "voicemail", "transcription"]


def test_it_makes_one_voicemail_task_when_the_recording_arrives_first(client, services):
    make_practice(services)
    call_sid, recording_sid = new_sid("CA"), new_sid("RE")
    recording_ready(client, call_sid, recording_sid)
    transcription_ready(client, call_sid, recording_sid, "Please call me back.")
    run_jobs(services, services.redis)
    assert tasks_of(services) == []  # no caller number yet: the task waits for the call's end

    call_ended(client, call_sid)
    run_jobs(services, services.redis)

    [task] = tasks_of(services)
    assert task.category == "voicemail"
    assert task.has_voicemail
    assert task.priority == BASE_PRIORITY[Category.VOICEMAIL]
    assert timeline_kinds(services, task.id) == ["created", "voicemail", "transcription"]


def test_it_does_not_count_a_hang_up_at_the_beep_as_a_voicemail(client, services):
    make_practice(services)
    call_sid = new_sid("CA")
    call_ended(client, call_sid)
    recording_ready(client, call_sid, new_sid("RE"), duration="0")
    run_jobs(services, services.redis)
    [task] = tasks_of(services)
    assert task.category == "missed_call"
    assert not task.has_voicemail


def test_it_stores_a_retried_recording_callback_once(client, services):
    make_practice(services)
    call_sid, recording_sid = new_sid("CA"), new_sid("RE")
    call_ended(client, call_sid)
    recording_ready(client, call_sid, recording_sid)
    recording_ready(client, call_sid, recording_sid)
    run_jobs(services, services.redis)
    [task] = tasks_of(services)
    assert timeline_kinds(services, task.id) == ["created", "voicemail"]
    assert len(events(services)) == 2


def test_it_keeps_a_call_without_a_usable_caller_id_as_a_task_without_a_callback_number(
    client, services
):
    make_practice(services)
    for caller in ("anonymous", "+266696687", ""):
        call_ended(client, new_sid("CA"), caller=caller)
    run_jobs(services, services.redis)
    tasks = tasks_of(services)
    assert len(tasks) == 3  # nothing to merge on: each call is its own task
    for task in tasks:
        assert task.no_callback_number
        assert task.contact_id is None
        assert task.next_action == "identify_caller"


def test_it_finds_the_practice_from_the_called_number_in_any_format(client, services):
    practice = make_practice(services)
    call_ended(client, new_sid("CA"), to="16175550100")
    run_jobs(services, services.redis)
    [task] = tasks_of(services)
    assert task.practice_id == practice.id
    assert RIVERSIDE_NUMBER.endswith("6175550100")
