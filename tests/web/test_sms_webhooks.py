"""/twilio/sms/incoming and /twilio/sms/status: keywords, replies, delivery statuses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from telephony_service.models import ConsentChange, Contact, FollowUp, Message, Task, WebhookEvent
from telephony_service.wiring import Services
from tests.conftest import ACCOUNT_SID, FakeClock
from tests.helpers import (
    ANA,
    RIVERSIDE_NUMBER,
    call_ended,
    make_api_key,
    make_practice,
    new_sid,
    post_twilio,
    run_jobs,
    tasks_of,
    timeline_kinds,
)
from tests.sms_support import FakeMessages, messages
from workers.scheduler import schedule_once


def _text_in(client: FlaskClient, body: str, sid: str | None = None, caller: str = ANA) -> str:
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": sid or new_sid("SM"),
        "SmsSid": sid or new_sid("SM"),
        "From": caller,
        "To": RIVERSIDE_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    response = post_twilio(client, "/twilio/sms/incoming", params)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _reply_of(twiml: str) -> str | None:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    message = root.find("Message")
    return None if message is None else message.text


def _status(client: FlaskClient, message: Message, status: str, code: str | None = None) -> None:
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": message.message_sid or "",
        "SmsSid": message.message_sid or "",
        "MessageStatus": status,
        "SmsStatus": status,
        "From": RIVERSIDE_NUMBER,
        "To": message.to_number,
        "ApiVersion": "2010-04-01",
    }
    if code is not None:
        params["ErrorCode"] = code
    response = post_twilio(client, f"/twilio/sms/status?m={message.id}", params)
    assert response.status_code == 200


def _missed_call_with_text(services: Services, client: FlaskClient, worker_redis: Redis) -> Message:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    [message] = messages(services)
    return message


def _contact(services: Services) -> Contact:
    with services.session() as session:
        return session.scalars(select(Contact)).one()


def test_it_opts_out_on_stop_and_confirms_once(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    _missed_call_with_text(services, client, worker_redis)

    reply = _reply_of(_text_in(client, "  Stop. "))
    assert reply is not None and "Riverside Family Medicine" in reply
    assert "START" in reply
    assert _contact(services).opted_out_at is not None
    assert _reply_of(_text_in(client, "STOP")) is None  # one confirmation at most
    with services.session() as session:
        changes = list(session.scalars(select(ConsentChange)))
        assert [(c.action, c.source) for c in changes] == [("opt_out", "keyword")]
        pending = session.scalars(select(FollowUp).where(FollowUp.state == "pending")).all()
        assert pending == []


def test_it_answers_a_retried_stop_with_the_same_reply(
    services: Services, client: FlaskClient
) -> None:
    make_practice(services)
    sid = new_sid("SM")
    first = _text_in(client, "STOP", sid)
    second = _text_in(client, "STOP", sid)
    assert _reply_of(first) == _reply_of(second)
    assert _reply_of(first) is not None
    with services.session() as session:
        assert len(session.scalars(select(ConsentChange)).all()) == 1
        assert len(session.scalars(select(Message)).all()) == 1


def test_it_cancels_pending_texts_at_once_on_stop(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:

    make_practice(services)
    clock.now = datetime(2026, 11, 18, 2, 30, tzinfo=UTC)  # quiet hours: the text waits
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    assert messages(services)[0].status == "pending"

    _text_in(client, "unsubscribe")
    assert [m.status for m in messages(services) if m.kind == "automated"] == ["canceled"]
    clock.now = datetime(2026, 11, 18, 14, 0, tzinfo=UTC)
    schedule_once(services)
    run_jobs(services, worker_redis)
    assert twilio_messages.sent == []


def test_it_opts_back_in_on_start(services: Services, client: FlaskClient) -> None:
    make_practice(services)
    _text_in(client, "STOP")
    reply = _reply_of(_text_in(client, "start"))
    assert reply is not None
    assert _contact(services).opted_out_at is None
    with services.session() as session:
        actions = [c.action for c in session.scalars(select(ConsentChange).order_by("id"))]
        assert actions == ["opt_out", "opt_in"]


def test_it_answers_help_with_the_practice_name_and_number(
    services: Services, client: FlaskClient
) -> None:
    make_practice(services)
    reply = _reply_of(_text_in(client, "help"))
    assert reply is not None
    assert "Riverside Family Medicine" in reply
    assert "(617) 555-0100" in reply
    assert _contact(services).opted_out_at is None


def test_it_treats_a_free_text_revocation_as_opt_out_and_flags_the_task(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    _missed_call_with_text(services, client, worker_redis)
    _text_in(client, "please stop texting me")

    assert _contact(services).opted_out_at is not None
    [task] = tasks_of(services)
    assert task.flag == "revoked_consent"
    assert task.cadence_stopped_at is not None
    with services.session() as session:
        [change] = session.scalars(select(ConsentChange))
        assert change.source == "free_text"


def test_a_late_undelivered_receipt_keeps_the_revocation_flag(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    message = _missed_call_with_text(services, client, worker_redis)
    _text_in(client, "please stop texting me")

    _status(client, message, "undelivered", "30003")
    run_jobs(services, worker_redis)

    [task] = tasks_of(services)
    assert task.flag == "revoked_consent"  # the patient's words, for staff to read first
    assert task.next_action == "call_manually"
    _status(client, message, "failed", "30003")
    run_jobs(services, worker_redis)
    assert timeline_kinds(services, task.id).count("call_manually") == 1


def test_a_stop_counts_when_its_confirmation_no_longer_fits_two_segments(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    from telephony_service.models import Practice
    from telephony_service.services.practices import _clear_practice_caches

    message = _missed_call_with_text(services, client, worker_redis)
    with services.session() as session:
        # Renamed behind the service's back: accents make the confirmation UCS-2, and it
        # no longer fits.
        session.get_one(
            Practice, message.practice_id
        ).name = "Clínica Médica Familiar de São Paulo e Região Metropolitana"
        session.commit()
    _clear_practice_caches()

    reply = _reply_of(_text_in(client, "STOP"))  # answers 200

    assert reply is None
    assert _contact(services).opted_out_at is not None


def drop_pooled_connections(services: Services) -> None:
    """What a database restart does to a pool that does not ping before use: every idle
    connection in it is dead, and the next request to take one finds out."""
    pool = services.engine.pool
    for record in list(pool._pool.queue):  # type: ignore[attr-defined]
        record.dbapi_connection.close()


def test_a_stop_survives_a_connection_the_database_dropped(
    services: Services, client: FlaskClient
) -> None:
    make_practice(services)
    _text_in(client, "hello")  # the pool now holds an idle connection

    drop_pooled_connections(services)
    reply = _reply_of(_text_in(client, "STOP"))  # answers 200

    assert reply is not None and "unsubscribed" in reply
    assert _contact(services).opted_out_at is not None


def test_a_nul_in_a_text_loses_nothing_and_logs_no_text(
    services: Services, client: FlaskClient, caplog
) -> None:
    make_practice(services)

    reply = _reply_of(_text_in(client, "STOP\x00"))
    _text_in(client, "my knee is worse\x00 please call")

    assert reply is not None and "unsubscribed" in reply
    assert _contact(services).opted_out_at is not None
    with services.session() as session:
        bodies = [event.params["Body"] for event in session.scalars(select(WebhookEvent))]
    assert bodies == ["STOP", "my knee is worse please call"]
    assert not [record for record in caplog.records if "knee" in record.getMessage()]


def test_it_attaches_a_reply_to_the_open_task_and_stops_the_cadence(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    _missed_call_with_text(services, client, worker_redis)
    assert _reply_of(_text_in(client, "Yes please call me after 3")) is None
    run_jobs(services, worker_redis)

    [task] = tasks_of(services)
    assert task.cadence_stop_reason == "reply"
    assert "sms_reply" in timeline_kinds(services, task.id)
    with services.session() as session:
        entry = session.scalars(select(Task).where(Task.id == task.id)).one()
        texts = [e.text for e in entry.timeline if e.kind == "sms_reply"]
        assert texts == ["Yes please call me after 3"]


def test_it_stops_the_automated_texts_of_every_open_task_of_a_patient_who_replies(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    """Ana's missed call has its cadence; a referral for her arrives later, and she answers
    a text. The reply goes on the newest task, and neither task texts her again."""
    _missed_call_with_text(services, client, worker_redis)
    [missed] = tasks_of(services)
    key = make_api_key(services, missed.practice_id)
    response = client.post(
        "/api/v1/inquiries",
        json={"category": "referral", "phone": ANA, "name": "Ana Lima", "source": "ehr"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201
    referral_id = response.get_json()["id"]
    run_jobs(services, worker_redis)
    texts_before = len(twilio_messages.sent)

    _text_in(client, "yes, call me after 3")
    run_jobs(services, worker_redis)

    by_id = {task.id: task for task in tasks_of(services)}
    assert by_id[referral_id].cadence_stop_reason == "reply"
    assert by_id[missed.id].cadence_stop_reason == "reply"
    with services.session() as session:
        pending = session.scalars(
            select(FollowUp).where(FollowUp.task_id == missed.id, FollowUp.state == "pending")
        ).all()
        assert pending == []
        [stopped] = [
            e for e in session.get_one(Task, missed.id).timeline if e.kind == "cadence_stopped"
        ]
        assert stopped.data == {"reason": "reply", "task_id": referral_id}
    for day in (18, 19, 20, 23, 24, 25):
        clock.now = datetime(2026, 11, day, 15, 0, tzinfo=UTC)
        schedule_once(services)
        run_jobs(services, worker_redis)
    assert len(twilio_messages.sent) == texts_before
    # Both stay open for staff, with a call to make.
    assert by_id[missed.id].next_action == "call_back"
    assert {by_id[referral_id].status, by_id[missed.id].status} <= {"new", "first_attempted"}


def test_it_opens_an_sms_inquiry_for_a_text_with_no_open_task(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)
    _text_in(client, "Do you take new patients?")
    _text_in(client, "Do you take new patients?", sid=None)  # a second text, same task
    run_jobs(services, worker_redis)

    [task] = tasks_of(services)
    assert task.category == "sms_inquiry"
    # The patient wrote to us: a call back is due, but no automated text, ever.
    assert task.next_action == "call_back"
    with services.session() as session:
        # The schedule the new task got was stopped in the same transaction.
        states = session.scalars(select(FollowUp.state).where(FollowUp.task_id == task.id))
        assert set(states) == {"canceled"}
    for day in (18, 19, 20, 23, 24, 25):
        clock.now = datetime(2026, 11, day, 15, 0, tzinfo=UTC)
        schedule_once(services)
        run_jobs(services, worker_redis)
    assert twilio_messages.sent == []
    assert messages(services) == []


def test_it_dedupes_an_inbound_text_on_message_sid(
    services: Services, client: FlaskClient, worker_redis: Redis
) -> None:
    make_practice(services)
    sid = new_sid("SM")
    _text_in(client, "Hello?", sid)
    _text_in(client, "Hello?", sid)
    run_jobs(services, worker_redis)
    [task] = tasks_of(services)
    assert timeline_kinds(services, task.id).count("sms_reply") == 1


def test_it_keeps_delivered_when_a_late_sent_arrives(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    message = _missed_call_with_text(services, client, worker_redis)
    _status(client, message, "delivered")
    _status(client, message, "sent")
    run_jobs(services, worker_redis)
    assert messages(services)[0].status == "delivered"


def test_it_moves_the_task_to_call_manually_on_a_landline(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    message = _missed_call_with_text(services, client, worker_redis)
    _status(client, message, "undelivered", code="30006")
    run_jobs(services, worker_redis)

    [task] = tasks_of(services)
    assert task.next_action == "call_manually"
    assert task.flag == "sms_undeliverable"
    assert _contact(services).sms_undeliverable_at is not None
    assert messages(services)[0].status == "undelivered"


def test_it_opts_the_patient_out_on_a_21610_status_callback(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    """Twilio may report 21610 after the send (a Messaging Service does): the carrier
    knows the patient said STOP, as when the send itself is refused with it."""
    message = _missed_call_with_text(services, client, worker_redis)
    _status(client, message, "failed", code="21610")
    run_jobs(services, worker_redis)

    assert _contact(services).opted_out_at is not None
    [task] = tasks_of(services)
    assert task.cadence_stopped_at is not None
    with services.session() as session:
        [change] = session.scalars(select(ConsentChange)).all()
        assert (change.source, change.task_id) == ("carrier_21610", task.id)
    assert (messages(services)[0].status, messages(services)[0].error_code) == ("failed", 21610)


def test_it_takes_every_status_twilio_reports(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    message = _missed_call_with_text(services, client, worker_redis)
    _status(client, message, "partially_delivered")
    _status(client, message, "sent")
    run_jobs(services, worker_redis)
    assert messages(services)[0].status == "delivered"
    _status(client, message, "read")
    run_jobs(services, worker_redis)
    assert messages(services)[0].status == "read"


def test_it_rejects_an_unsigned_sms_webhook(services: Services, client: FlaskClient) -> None:
    make_practice(services)
    response = client.post(
        "/twilio/sms/incoming",
        data={"MessageSid": new_sid("SM"), "From": ANA, "To": RIVERSIDE_NUMBER, "Body": "STOP"},
    )
    assert response.status_code == 403
    with services.session() as session:
        assert session.scalars(select(ConsentChange)).all() == []


def test_it_rejects_a_malformed_message_sid(services: Services, client: FlaskClient) -> None:
    params = {"MessageSid": "nope", "MessageStatus": "sent"}
    assert post_twilio(client, "/twilio/sms/status", params).status_code == 400


def test_it_queues_delivery_receipts_behind_missed_calls(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    from rq import Queue

    from telephony_service.workqueue import QUEUE_NAME, RECEIPTS_QUEUE_NAME

    message = _missed_call_with_text(services, client, worker_redis)
    _status(client, message, "delivered")
    call_ended(client, new_sid("CA"), caller="+13125550199")
    services.dispatcher.flush()

    assert Queue(RECEIPTS_QUEUE_NAME, connection=worker_redis).count == 1
    assert Queue(QUEUE_NAME, connection=worker_redis).count == 1
    run_jobs(services, worker_redis)
    assert messages(services)[0].status == "delivered"
    assert len(twilio_messages.sent) == 2
