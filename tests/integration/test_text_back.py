"""Text-back after a missed call, through the outbox, with Twilio faked at the HTTP layer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq.timeouts import JobTimeoutException
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from telephony_service.domain.statuses import TaskStatus
from telephony_service.models import (
    ConsentChange,
    Contact,
    FollowUp,
    Message,
    PracticeSendCount,
    Task,
    TaskEvent,
)
from telephony_service.services import consent, delivery
from telephony_service.services.tasks import change_status
from telephony_service.wiring import Services
from tests.conftest import FakeClock, flush_redis
from tests.helpers import (
    ANA,
    BEN,
    RIVERSIDE_NUMBER,
    call_ended,
    make_practice,
    new_sid,
    run_jobs,
    tasks_of,
    timeline_kinds,
)
from tests.sms_support import FakeMessages, messages, send_in, text_back_due
from workers.scheduler import schedule_once


def _send(services: Services, message_id: int) -> str:
    with services.session() as session:
        return send_in(session, services, message_id)


def test_it_texts_back_once_after_a_missed_call(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    [sent] = twilio_messages.to(ANA)
    assert sent.from_ == RIVERSIDE_NUMBER
    assert "Riverside Family Medicine" in sent.body
    assert "https://callbacks.example.test/s/" in sent.body
    assert "STOP" in sent.body
    [message] = messages(services)
    assert message.message_sid == sent.sid
    assert message.status == "queued"
    assert message.purpose == "text_back"
    assert sent.status_callback == (
        f"https://callbacks.example.test/twilio/sms/status?m={message.id}"
    )
    [task] = tasks_of(services)
    assert "text_sent" in timeline_kinds(services, task.id)
    with services.session() as session:
        [line] = session.scalars(
            select(TaskEvent).where(TaskEvent.task_id == task.id, TaskEvent.kind == "text_sent")
        ).all()
        assert line.data == {"message_id": message.id, "purpose": "text_back"}
        assert line.at == message.sent_at
        assert line.text is None


def test_it_never_texts_back_twice_for_merged_calls(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    services.clock.advance(minutes=5)  # type: ignore[attr-defined]
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    assert len(twilio_messages.to(ANA)) == 1
    [task] = tasks_of(services)
    assert task.call_count == 2
    assert task.cadence_stop_reason == "inbound_call"


def test_it_puts_the_opt_out_line_only_on_the_first_text_of_a_patients_thread(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    with services.session() as session:
        [task] = session.scalars(select(Task)).all()
        change_status(session, task, TaskStatus.CLOSED_RESOLVED, now=clock())
        session.commit()
    # A day later (one automated text a day) Ana calls again, and Ben for the first time.
    clock.advance(hours=25)
    call_ended(client, new_sid("CA"))
    call_ended(client, new_sid("CA"), caller=BEN)
    run_jobs(services, worker_redis)

    first, again = twilio_messages.to(ANA)
    assert "Reply STOP" in first.body
    # Ana's thread already has its opt-out line: a new task does not start a new thread.
    assert "STOP" not in again.body
    assert [task.status for task in tasks_of(services)].count("new") == 2
    [ben] = twilio_messages.to(BEN)
    assert "Reply STOP" in ben.body


def test_it_starts_the_thread_again_after_a_text_that_was_not_delivered(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    """The first text never reached Ana (her phone was off: 30003), so the next one is the
    first she reads, and it carries the opt-out line."""
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    with services.session() as session:
        [task] = session.scalars(select(Task)).all()
        [message] = session.scalars(select(Message)).all()
        message.status, message.error_code = "undelivered", 30003
        change_status(session, task, TaskStatus.CLOSED_RESOLVED, now=clock())
        session.commit()
    clock.advance(hours=25)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    first, again = twilio_messages.to(ANA)
    assert "Reply STOP" in first.body
    assert "Reply STOP" in again.body


def test_it_keeps_the_opt_out_line_on_a_text_written_while_the_first_still_waits(
    services: Services, client: FlaskClient, worker_redis: Redis, clock: FakeClock
) -> None:
    """Ana's text-back waits for the morning when a second text is written; the text-back
    may yet be canceled, so the second one must not count on it for the opt-out line."""
    practice = make_practice(services)
    clock.now = datetime(2026, 11, 18, 2, 30, tzinfo=UTC)  # 21:30 in New York
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    with services.session() as session:
        [task] = session.scalars(select(Task)).all()
        [waiting] = session.scalars(select(Message)).all()
        assert waiting.status == "pending"
        second = delivery.queue_text(
            session,
            practice=session.get_one(type(practice), practice.id),
            contact=session.get_one(Contact, task.contact_id),
            task=task,
            template="second_attempt",
            kind="automated",
            dedupe_key=f"task-{task.id}-second-test",
            attempt=2,
            now=clock(),
            base_url="https://callbacks.example.test",
        )
        assert second is not None
        assert "Reply STOP" in second.body
        session.rollback()


def test_it_sends_one_text_when_the_job_runs_twice(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    [message] = messages(services)

    assert _send(services, message.id) == "skipped"
    services.work.enqueue_send(message.id)
    run_jobs(services, worker_redis)
    assert twilio_messages.posts == 1


def test_it_sends_one_text_when_two_workers_race(
    services: Services, twilio_messages: FakeMessages
) -> None:
    message_id = _pending_text(services)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(_send(services, message_id))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["sent", "skipped", "skipped", "skipped"]
    assert twilio_messages.posts == 1


def test_it_retries_after_429_without_a_second_text(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("error", 429, 20429))

    assert _send(services, message_id) == "retry"
    assert _send(services, message_id) == "skipped"  # not before its back-off
    clock.advance(seconds=3)
    assert schedule_once(services) == 1
    run_jobs(services, worker_redis)

    assert twilio_messages.posts == 2
    assert len(twilio_messages.sent) == 1
    [message] = messages(services)
    assert message.status == "queued"
    assert message.message_sid == twilio_messages.sent[0].sid


def test_it_opts_the_contact_out_on_21610(
    services: Services, twilio_messages: FakeMessages
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("error", 400, 21610))

    assert _send(services, message_id) == "failed"
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.opted_out_at is not None
        [change] = session.scalars(select(ConsentChange))
        assert (change.action, change.source) == ("opt_out", "carrier_21610")
        # No more automated texts are written only for the gate to block them.
        [task] = session.scalars(select(Task))
        assert task.cadence_stopped_at is not None
        assert task.cadence_stop_reason == "opted_out"
        assert not session.scalars(select(FollowUp).where(FollowUp.state == "pending")).all()


def test_it_reads_the_window_when_the_send_goes_not_when_it_was_claimed(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    # Ben is in Chicago; the send is claimed at 19:59:58 there, and by the time the
    # patient's lock is free (another send to him was at Twilio) it is 20:00:05.
    clock.now = datetime(2026, 11, 17, 19, 59, 58, tzinfo=ZoneInfo("America/Chicago"))
    message_id = _pending_text(services)
    readings = iter([clock.now, clock.now + timedelta(seconds=7)])

    with services.session() as session:
        outcome = delivery.send_message(
            session,
            services.gateway,
            message_id,
            clock=lambda: next(readings, clock.now + timedelta(seconds=7)),
            settings=services.send_settings,
        )

    assert outcome == "deferred"
    assert twilio_messages.sent == []


def test_a_text_held_back_for_days_carries_a_link_good_for_a_week_from_its_send(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    from telephony_service.models import Link

    message_id = _pending_text(services)
    with services.session() as session:
        [written] = session.scalars(select(Link.expires_at))
    # Held back (the patient's caps, quiet hours) for six days, then sent.
    clock.advance(days=6)

    assert _send(services, message_id) == "sent"

    with services.session() as session:
        [link] = session.scalars(select(Link))
    assert written == clock.now - timedelta(days=6) + timedelta(days=7)
    assert link.expires_at == clock.now + timedelta(days=7)


def test_a_text_sent_at_once_keeps_its_links_expiry(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    from telephony_service.models import Link

    message_id = _pending_text(services)
    clock.advance(minutes=5)

    assert _send(services, message_id) == "sent"

    with services.session() as session:
        [link] = session.scalars(select(Link))
    assert link.expires_at == clock.now - timedelta(minutes=5) + timedelta(days=7)


def test_a_text_held_past_the_end_of_its_thread_opens_a_new_one_with_the_stop_line(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    practice = make_practice(services)
    assert _send(services, text_back_due(services, practice.id, BEN)) == "sent"
    # He calls again 29 days and 22 hours later: the text-back is written for the thread
    # that is still open, without the opt-out wording...
    clock.advance(days=29, hours=22)
    later = text_back_due(services, practice.id, BEN)
    with services.session() as session:
        assert "STOP" not in session.get_one(Message, later).body
    # ...and held back three hours (his window, a cap), by when that thread has ended.
    clock.advance(hours=3)

    assert _send(services, later) == "sent"

    sent = twilio_messages.to(BEN)[-1]
    assert sent.body.endswith("Reply STOP to opt out.")
    with services.session() as session:
        assert session.get_one(Message, later).body == sent.body  # the outbox shows it


def test_a_new_threads_text_whose_send_timed_out_is_found_by_its_longer_body(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    practice = make_practice(services)
    assert _send(services, text_back_due(services, practice.id, BEN)) == "sent"
    clock.advance(days=29, hours=22)
    later = text_back_due(services, practice.id, BEN)
    clock.advance(hours=3)
    twilio_messages.faults.append(("accept_then_drop",))

    assert _send(services, later) == "unknown"  # Twilio has it, with the STOP line
    clock.advance(seconds=1)
    schedule_once(services)
    run_jobs(services, worker_redis)

    assert len(twilio_messages.to(BEN)) == 2  # found, not sent again
    with services.session() as session:
        message = session.get_one(Message, later)
        assert message.message_sid == twilio_messages.sent[-1].sid
        assert message.body == twilio_messages.sent[-1].body


def test_a_text_sent_within_its_thread_keeps_its_wording(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    practice = make_practice(services)
    assert _send(services, text_back_due(services, practice.id, BEN)) == "sent"
    clock.advance(days=20)
    later = text_back_due(services, practice.id, BEN)
    clock.advance(hours=3)

    assert _send(services, later) == "sent"

    assert "STOP" not in twilio_messages.to(BEN)[-1].body


def test_it_reconciles_a_timeout_instead_of_resending(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))

    assert _send(services, message_id) == "unknown"
    clock.advance(seconds=1)
    schedule_once(services)
    run_jobs(services, worker_redis)

    assert len(twilio_messages.sent) == 1
    [message] = messages(services)
    assert message.message_sid == twilio_messages.sent[0].sid
    assert message.status == "queued"
    # Found at Twilio: it counts against the practice's day, once.
    assert _sent_today(services) == 1


def test_it_finds_an_accepted_text_at_twilio_whose_clock_is_minutes_behind_ours(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))
    assert _send(services, message_id) == "unknown"
    # Twilio stamped it by its own clock, ten minutes behind this worker's.
    twilio_messages.sent[0].at = clock() - timedelta(minutes=10)

    clock.advance(minutes=5)
    with services.session() as session:
        outcome = delivery.reconcile_message(
            session, services.gateway, message_id, clock=services.clock
        )

    assert outcome == "found"
    assert len(twilio_messages.sent) == 1
    assert messages(services)[0].message_sid == twilio_messages.sent[0].sid


def _settled_by_reconciliation_alone(services: Services, clock: FakeClock, message_id: int) -> None:
    """Left claimed, not put back for a retry (which would text the patient twice): the
    next send job skips it, and reconciliation finds it at Twilio once the lease is over."""
    assert messages(services)[0].status == "claimed"
    clock.advance(seconds=2)
    assert _send(services, message_id) == "skipped"
    clock.advance(seconds=60)
    assert _reconcile(services, message_id) == "found"


def _send_stopped_before_twilio(
    services: Services, message_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's job timeout goes off after the claim, while the gate waits (say, on a lock)."""

    def timed_out(*args: object, **kwargs: object) -> None:
        raise JobTimeoutException("Task exceeded maximum timeout value (180 seconds)")

    with monkeypatch.context() as patched:
        patched.setattr(delivery.compliance, "evaluate", timed_out)
        with pytest.raises(JobTimeoutException):
            _send(services, message_id)


def _reconcile(services: Services, message_id: int) -> str:
    with services.session() as session:
        return delivery.reconcile_message(
            session, services.gateway, message_id, clock=services.clock
        )


@pytest.mark.parametrize(
    "failure",
    [
        JobTimeoutException("Task exceeded maximum timeout value (180 seconds)"),
        OperationalError("UPDATE messages", {}, Exception("server closed the connection")),
    ],
    ids=["rq_job_timeout", "connection_lost"],
)
def test_a_text_twilio_accepted_is_never_resent_when_its_answer_could_not_be_stored(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    message_id = _pending_text(services)

    def store_fails(*args: object) -> str:
        raise failure

    with monkeypatch.context() as patched:
        patched.setattr(delivery, "_forward", store_fails)  # just after Twilio answered
        with pytest.raises(type(failure)):
            _send(services, message_id)

    _settled_by_reconciliation_alone(services, clock, message_id)
    [message] = messages(services)
    assert message.message_sid == twilio_messages.sent[0].sid
    assert len(twilio_messages.sent) == 1
    assert _sent_today(services) == 1


def test_an_unknown_outcome_that_could_not_be_stored_is_looked_up_not_resent(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))

    def store_fails(*args: object) -> str:
        raise OperationalError("UPDATE messages", {}, Exception("server closed the connection"))

    with monkeypatch.context() as patched:
        patched.setattr(delivery, "_failed_send", store_fails)
        with pytest.raises(OperationalError):
            _send(services, message_id)

    _settled_by_reconciliation_alone(services, clock, message_id)
    assert len(twilio_messages.sent) == 1


def test_it_hands_the_task_to_a_person_when_the_last_try_ends_in_an_internal_error(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.extend([("error", 429, 20429)] * len(delivery.RETRY_DELAYS))
    for delay in delivery.RETRY_DELAYS:
        assert _send(services, message_id) == "retry"
        clock.advance(seconds=delay.total_seconds())

    _send_stopped_before_twilio(services, message_id, monkeypatch)

    [message] = messages(services)
    assert (message.status, message.tries) == ("failed", delivery.MAX_TRIES)
    assert twilio_messages.sent == []
    with services.session() as session:
        task = session.get_one(Task, message.task_id)
        assert (task.flag, task.next_action) == ("sms_undeliverable", "call_manually")
        kinds = session.scalars(select(TaskEvent.kind).where(TaskEvent.task_id == task.id))
        assert {"call_manually", "text_failed"} <= set(kinds)


class _Interrupted:
    """RQ's job timeout going off while the request to Twilio is on the wire."""

    def send_sms(self, sms: object) -> None:
        raise JobTimeoutException("Task exceeded maximum timeout value (180 seconds)")


def test_a_send_interrupted_mid_request_is_reconciled_not_lost(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)

    with services.session() as session, pytest.raises(JobTimeoutException):
        delivery.send_message(
            session,
            _Interrupted(),  # type: ignore[arg-type]
            message_id,
            clock=services.clock,
            settings=services.send_settings,
        )

    [message] = messages(services)
    assert message.status == "unknown"  # Twilio may have it: looked up before any resend
    clock.advance(seconds=65)
    schedule_once(services)
    run_jobs(services, worker_redis)  # reconcile: not at Twilio, so back to pending
    clock.advance(seconds=2)  # the pause after a first try
    schedule_once(services)
    run_jobs(services, worker_redis)
    assert len(twilio_messages.sent) == 1
    assert messages(services)[0].status == "queued"


def test_a_send_stopped_before_twilio_is_retried_not_failed(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    worker_redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message_id = _pending_text(services)

    _send_stopped_before_twilio(services, message_id, monkeypatch)

    [message] = messages(services)
    assert (message.status, message.not_before) == ("pending", clock.now + timedelta(seconds=2))
    clock.advance(seconds=2)
    assert _send(services, message_id) == "sent"
    assert len(twilio_messages.sent) == 1


def test_it_waits_out_the_grace_from_the_end_of_a_slow_request_not_from_the_claim(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("timeout",))
    claimed_at = clock()
    assert _send(services, message_id) == "unknown"
    with services.session() as session:
        # The request hung for 25 s before it timed out.
        session.get_one(Message, message_id).updated_at = claimed_at + timedelta(seconds=25)
        session.commit()

    def reconcile_at(seconds: int) -> str:
        clock.now = claimed_at + timedelta(seconds=seconds)
        with services.session() as session:
            return delivery.reconcile_message(
                session, services.gateway, message_id, clock=services.clock
            )

    # 35 s after the claim but 10 s after the request ended: Twilio's list may lag.
    assert reconcile_at(35) == "waiting"
    assert reconcile_at(56) == "resend"
    assert twilio_messages.sent == []


def _opt_out(services: Services, at: datetime) -> None:
    with services.session() as session:
        contact = consent.lock_contact(session, session.scalars(select(Contact.id)).one())
        assert consent.opt_out(session, contact, at=at, source="sms_keyword")
        session.commit()


def test_it_leaves_an_unknown_send_to_reconciliation_when_the_patient_opts_out(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    """Twilio took the text but its answer was lost; the patient got it and wrote STOP.
    The text is not canceled: it reached the patient, so it shows as sent and counts."""
    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))
    assert _send(services, message_id) == "unknown"

    _opt_out(services, clock())
    assert messages(services)[0].status == "unknown"
    clock.advance(seconds=1)
    schedule_once(services)
    run_jobs(services, worker_redis)

    [message] = messages(services)
    assert message.message_sid == twilio_messages.sent[0].sid
    assert message.status == "queued"
    assert _sent_today(services) == 1
    assert len(twilio_messages.sent) == 1


def test_it_sends_nothing_for_an_unknown_text_twilio_never_took_after_an_opt_out(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("timeout",))
    assert _send(services, message_id) == "unknown"

    _opt_out(services, clock())
    clock.advance(seconds=65)
    schedule_once(services)
    run_jobs(services, worker_redis)  # reconcile: not at Twilio, so back to pending
    clock.advance(seconds=2)
    schedule_once(services)
    run_jobs(services, worker_redis)  # the send's own check: the opt-out stopped its cadence

    assert twilio_messages.sent == []
    [message] = messages(services)
    assert (message.status, message.defer_reason) == (
        "canceled",
        "the automated follow-ups stopped",
    )
    assert message.message_sid is None


def _sent_today(services: Services) -> int:
    with services.session() as session:
        return sum(session.scalars(select(PracticeSendCount.sent)))


def test_it_resends_a_timeout_twilio_never_accepted(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    twilio_messages.faults.append(("timeout",))

    assert _send(services, message_id) == "unknown"
    clock.advance(seconds=5)
    schedule_once(services)
    run_jobs(services, worker_redis)
    assert twilio_messages.sent == []  # still inside the grace period: nothing resent
    clock.advance(seconds=60)
    schedule_once(services)
    run_jobs(services, worker_redis)  # reconcile: not found → pending again
    assert twilio_messages.sent == []  # after the pause a first failed try calls for
    clock.advance(seconds=2)
    schedule_once(services)
    run_jobs(services, worker_redis)

    assert len(twilio_messages.sent) == 1
    [message] = messages(services)
    assert message.message_sid == twilio_messages.sent[0].sid


def test_it_settles_a_worker_killed_after_twilio_accepted(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    # The worker claimed the row, Twilio accepted the text, then the worker died before
    # it could store the sid.
    with services.session() as session:
        assert delivery._claim(session, message_id, clock())
        message = session.get_one(Message, message_id)
        services.gateway.send_sms(
            delivery.OutboundSms(message.to_number, message.from_number, message.body, None)
        )
    clock.advance(seconds=90)
    schedule_once(services)
    run_jobs(services, worker_redis)

    assert len(twilio_messages.sent) == 1
    [message] = messages(services)
    assert message.message_sid == twilio_messages.sent[0].sid


def test_it_resends_for_a_worker_killed_before_twilio_accepted(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    with services.session() as session:
        assert delivery._claim(session, message_id, clock())
    clock.advance(seconds=90)
    schedule_once(services)
    run_jobs(services, worker_redis)  # reconcile: not at Twilio, past the grace period
    clock.advance(seconds=2)
    schedule_once(services)
    run_jobs(services, worker_redis)

    assert len(twilio_messages.sent) == 1
    assert messages(services)[0].message_sid == twilio_messages.sent[0].sid


def test_it_rebuilds_due_work_after_redis_is_flushed(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock, worker_redis: Redis
) -> None:
    message_id = _pending_text(services)
    services.work.enqueue_send(message_id)
    # Everything of this run's Redis is lost, but for the run's claim on its db index: a
    # bare FLUSHDB would let another test run on this machine take the index too.
    flush_redis(worker_redis)

    run_jobs(services, worker_redis)
    assert twilio_messages.sent == []
    clock.advance(seconds=31)
    assert schedule_once(services) == 1
    run_jobs(services, worker_redis)
    assert len(twilio_messages.sent) == 1


def test_it_defers_a_text_back_in_the_patients_quiet_hours(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)
    clock.now = datetime(2026, 11, 18, 2, 30, tzinfo=UTC)  # 21:30 in Washington DC
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    assert twilio_messages.sent == []
    [message] = messages(services)
    assert message.status == "pending"
    assert message.not_before == datetime(2026, 11, 18, 13, 0, tzinfo=UTC)  # 08:00 local
    assert message.defer_reason
    clock.now = datetime(2026, 11, 18, 13, 0, 30, tzinfo=UTC)
    schedule_once(services)
    run_jobs(services, worker_redis)
    assert len(twilio_messages.to(ANA)) == 1


def test_it_rechecks_the_gate_after_a_long_deferral(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)
    clock.now = datetime(2026, 11, 18, 2, 30, tzinfo=UTC)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    with services.session() as session:
        contact = session.scalars(select(Contact)).one()
        contact.opted_out_at = clock()  # opted out overnight by another path
        session.commit()
    clock.now = datetime(2026, 11, 18, 13, 1, tzinfo=UTC)
    schedule_once(services)
    run_jobs(services, worker_redis)

    assert twilio_messages.sent == []
    assert messages(services)[0].status == "blocked"


def _pending_text(services: Services, caller: str = BEN) -> int:
    """A text-back due now for a new missed-call task, not yet sent."""
    practice = make_practice(services)
    with services.session() as session:
        assert session.scalar(select(Message.practice_id)) is None  # none yet
    return text_back_due(services, practice.id, caller)


def test_it_lists_the_text_back_on_the_task_resource(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    from tests.helpers import api_get, make_api_key

    practice = make_practice(services)
    key = make_api_key(services, practice.id)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    [task] = tasks_of(services)

    resource = api_get(client, key, f"/api/v1/tasks/{task.id}").get_json()
    assert resource["messages"] == [
        {
            "sid": twilio_messages.sent[0].sid,
            "purpose": "text_back",
            "status": "queued",
            "sent_at": "2026-11-17T10:00:00-05:00",
        }
    ]


def test_it_never_sends_after_a_stop_that_lands_mid_send(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    """STOP arriving while a send is in flight waits for it; nothing is sent after it."""
    from telephony_service.services import consent

    message_id = _pending_text(services)
    in_flight = threading.Event()
    release = threading.Event()

    def hold_the_send() -> None:
        in_flight.set()
        release.wait(5)

    twilio_messages.on_create = hold_the_send
    contact_id = messages(services)[0].contact_id
    sender = threading.Thread(target=_send, args=(services, message_id))
    sender.start()
    assert in_flight.wait(5)
    stopped = threading.Event()

    def opt_out() -> None:
        with services.session() as session:
            contact = consent.lock_contact(session, contact_id)
            consent.opt_out(session, contact, at=clock(), source="keyword")
            session.commit()
        stopped.set()

    stopper = threading.Thread(target=opt_out)
    stopper.start()
    # The opt-out waits for the send in flight (PostgreSQL: the contact's row lock;
    # SQLite: its one write lock, taken up front).
    assert not stopped.wait(0.3)
    release.set()
    sender.join(5)
    stopper.join(5)
    assert stopped.is_set()
    [message] = messages(services)
    assert message.status == "queued"  # the send finished before the opt-out took hold
    with services.session() as session:
        contact = session.get_one(Contact, message.contact_id)
        assert contact.opted_out_at is not None
    later = _queue_another(services, message.contact_id)
    assert _send(services, later) == "blocked"
    assert len(twilio_messages.sent) == 1


def _queue_another(services: Services, contact_id: int) -> int:
    from telephony_service.models import Practice, Task

    with services.session() as session:
        contact = session.get_one(Contact, contact_id)
        practice = session.scalars(select(Practice)).one()
        task = session.scalars(select(Task)).one()
        message = delivery.queue_text(
            session,
            practice=practice,
            contact=contact,
            task=task,
            template="second_attempt",
            kind="manual",
            dedupe_key="test:another",
            attempt=1,
            now=services.clock(),
            base_url=services.settings.public_base_url,
        )
        session.commit()
        assert message is not None
        return message.id


def test_it_refuses_a_practice_name_too_long_for_a_text(services: Services) -> None:
    import pytest

    from telephony_service.services.practices import InvalidInput

    with pytest.raises(InvalidInput, match="two SMS segments"):
        make_practice(services, name="Riverside " * 15 + "Family Medicine")


def test_it_still_makes_the_task_when_a_text_cannot_be_written(
    services: Services, client: FlaskClient, worker_redis: Redis, twilio_messages: FakeMessages
) -> None:
    from telephony_service.models import Practice

    practice = make_practice(services)
    with services.session() as session:
        # Renamed behind the service's back (the name is checked when it is set).
        session.get_one(Practice, practice.id).name = "Riverside " * 18
        session.commit()
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    [task] = tasks_of(services)
    assert "text_blocked" in timeline_kinds(services, task.id)
    assert twilio_messages.sent == []


def test_it_does_not_send_when_reconciliation_took_a_stalled_claim_back(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    message_id = _pending_text(services)
    stalled_claim = clock()
    with services.session() as session:
        claim = delivery._claim(session, message_id, stalled_claim)
    assert claim is not None
    # The worker stalls past the lease; reconciliation finds nothing at Twilio and puts the
    # text back, and another worker sends it.
    clock.advance(seconds=95)
    with services.session() as session:
        assert (
            delivery.reconcile_message(session, services.gateway, message_id, clock=clock)
            == "resend"
        )
    clock.advance(seconds=2)
    assert _send(services, message_id) == "sent"
    # The stalled worker wakes up (its claim was committed on its own: SQLite, or a sender
    # rate between claim and send): its claim is gone, so it reads nothing to send.
    with services.session() as session:
        assert delivery._read_claimed(session, message_id, claim, stalled_claim, clock()) is None
    assert len(twilio_messages.sent) == 1


def test_it_keeps_a_delivery_callback_that_races_the_sends_own_commit(
    services: Services, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    message_id = _pending_text(services)
    sid = new_sid("SM")
    twilio_messages.next_sid = sid
    applied = threading.Event()

    def callback_during_send() -> None:
        # Twilio's "delivered" arrives while the send is still waiting for its answer.
        def apply() -> None:
            with services.session() as session:
                params = {"MessageSid": sid, "MessageStatus": "delivered", "m": str(message_id)}
                delivery.apply_status(session, params, clock())
                session.commit()
            applied.set()

        threading.Thread(target=apply).start()
        assert not applied.wait(0.3)  # it waits for the send to store its answer

    twilio_messages.on_create = callback_during_send
    assert _send(services, message_id) == "sent"
    assert applied.wait(5)
    [message] = messages(services)
    assert (message.message_sid, message.status) == (sid, "delivered")


def test_a_callback_for_an_earlier_send_of_a_text_leaves_its_resend_alone(
    services: Services,
    twilio_messages: FakeMessages,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twilio's list lagged, so reconciliation sent the text again; the first send's
    "undelivered" arrives while the second is on the wire, and waits for its lock."""
    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))
    assert _send(services, message_id) == "unknown"
    first = twilio_messages.sent[0].sid
    clock.advance(seconds=31)
    with monkeypatch.context() as patched:
        patched.setattr(services.gateway, "list_messages", lambda **kwargs: [])
        assert _reconcile(services, message_id) == "resend"
    applied = threading.Event()

    def first_sends_callback_during_the_resend() -> None:
        def apply() -> None:
            params = {
                "MessageSid": first,
                "MessageStatus": "undelivered",
                "ErrorCode": "30003",
                "m": str(message_id),
            }
            with services.session() as session:
                delivery.apply_status(session, params, clock())
                session.commit()
            applied.set()

        threading.Thread(target=apply).start()
        assert not applied.wait(0.3)  # it waits on the contact's lock

    twilio_messages.on_create = first_sends_callback_during_the_resend
    clock.advance(seconds=2)
    assert _send(services, message_id) == "sent"
    assert applied.wait(5)

    [message] = messages(services)
    second = twilio_messages.sent[1].sid
    assert (message.message_sid, message.status, message.error_code) == (second, "queued", None)
    with services.session() as session:
        assert session.get_one(Task, message.task_id).next_action != "call_manually"


def test_it_settles_an_unknown_send_from_an_early_status_callback(
    services: Services, client: FlaskClient, twilio_messages: FakeMessages, clock: FakeClock
) -> None:
    from tests.conftest import ACCOUNT_SID
    from tests.helpers import post_twilio

    message_id = _pending_text(services)
    twilio_messages.faults.append(("accept_then_drop",))
    assert _send(services, message_id) == "unknown"
    sid = twilio_messages.sent[0].sid
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": sid,
        "MessageStatus": "sent",
        "From": RIVERSIDE_NUMBER,
        "To": BEN,
    }
    assert post_twilio(client, f"/twilio/sms/status?m={message_id}", params).status_code == 200
    run_jobs(services, services.redis)

    [message] = messages(services)
    assert (message.message_sid, message.status) == (sid, "sent")
    assert _sent_today(services) == 1
    params["MessageStatus"] = "delivered"
    assert post_twilio(client, f"/twilio/sms/status?m={message_id}", params).status_code == 200
    run_jobs(services, services.redis)
    assert _sent_today(services) == 1


def test_it_waits_for_the_disk_for_the_claim_but_not_for_the_answer(
    services: Services, twilio_messages: FakeMessages
) -> None:
    """The claim must survive a crash (it stops a second send); storing Twilio's answer
    need not (a claimed text is reconciled from Twilio's list)."""
    message_id = _pending_text(services)
    # SQLite (development) has no such setting: only the claim's visibility is checked.
    postgres = services.engine.dialect.name == "postgresql"
    seen: dict[str, str] = {}
    with services.session() as session:

        def look() -> None:
            # During the send: the claim is committed, and the send's own transaction
            # (which stores the answer) holds the contact's lock.
            with services.engine.connect() as other:
                # A plain read (SQLite: no BEGIN IMMEDIATE, which would wait for the send).
                other = other.execution_options(isolation_level="AUTOCOMMIT")
                seen["claim"] = other.execute(
                    select(Message.status).where(Message.id == message_id)
                ).scalar_one()
            if postgres:
                seen["send"] = session.execute(text("SHOW synchronous_commit")).scalar_one()

        twilio_messages.on_create = look
        assert send_in(session, services, message_id) == "sent"
        if not postgres:
            assert seen == {"claim": "claimed"}
            return
        assert seen == {"claim": "claimed", "send": "off"}
        # Outside the send's transaction the server's default holds again.
        assert session.execute(text("SHOW synchronous_commit")).scalar_one() == "on"


def test_it_refreshes_a_copy_of_the_text_the_session_already_held(
    services: Services, twilio_messages: FakeMessages
) -> None:
    message_id = _pending_text(services)
    with services.session() as session:
        before = session.get_one(Message, message_id)
        assert before.status == "pending"
        session.commit()  # the copy stays in the session (expire_on_commit is off)
        assert send_in(session, services, message_id) == "sent"
        assert before.status == "queued"
        assert before.message_sid == twilio_messages.sent[0].sid


def test_it_puts_a_call_back_on_a_task_waiting_for_a_reply_when_the_patient_calls(
    services: Services, client: FlaskClient, worker_redis: Redis, clock: FakeClock
) -> None:
    """After the final text a task waits for a reply until it closes; the patient calls
    instead. The closing step goes with the cadence, so staff are asked to call back."""
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    with services.session() as session:
        [task] = session.scalars(select(Task)).all()
        task.next_action = "await_reply"
        session.commit()

    clock.advance(hours=1)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    [task] = tasks_of(services)
    assert task.cadence_stop_reason == "inbound_call"
    assert (task.next_action, task.next_action_at) == ("call_back", clock())
