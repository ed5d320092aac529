"""A missed call worked on the default cadence until it closes, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from telephony_service.models import FollowUp
from telephony_service.wiring import Services
from tests.conftest import FakeClock
from tests.helpers import ANA, call_ended, make_practice, new_sid, run_jobs, tasks_of
from tests.sms_support import FakeMessages, messages
from workers.scheduler import schedule_once


def _tick(services: Services, clock: FakeClock, worker_redis: Redis, at: datetime) -> None:
    clock.now = at
    schedule_once(services)
    run_jobs(services, worker_redis)


def _steps(services: Services) -> list[tuple[int, str, str, datetime]]:
    with services.session() as session:
        return [
            (f.step, f.action, f.state, f.due_at)
            for f in session.scalars(select(FollowUp).order_by(FollowUp.step))
        ]


def test_it_works_a_missed_call_through_the_default_cadence(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)  # Boston, Mon-Fri 08:00-17:00
    call_ended(client, new_sid("CA"))  # Tuesday 10:00
    run_jobs(services, worker_redis)
    assert [m.purpose for m in messages(services)] == ["text_back"]
    # The first attempt is due by the SLA: one business hour.
    assert _steps(services)[1] == (1, "call", "pending", datetime(2026, 11, 17, 16, 0, tzinfo=UTC))

    _tick(services, clock, worker_redis, datetime(2026, 11, 17, 16, 0, tzinfo=UTC))
    [task] = tasks_of(services)
    assert task.next_action == "call_back"
    # Attempt 2: the next business morning, with a text.
    assert _steps(services)[2][3] == datetime(2026, 11, 18, 14, 0, tzinfo=UTC)  # Wed 09:00

    _tick(services, clock, worker_redis, datetime(2026, 11, 18, 14, 0, tzinfo=UTC))
    [_, second] = messages(services)
    assert second.purpose == "second_attempt"
    # One automated text per 24 h: the Tuesday 10:00 text-back holds this one until then.
    assert second.status == "pending"
    assert second.not_before == datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
    _tick(services, clock, worker_redis, datetime(2026, 11, 18, 15, 0, 30, tzinfo=UTC))
    assert messages(services)[1].status == "queued"

    # Final message two business days later at 10:00 (Friday), then closed at its close.
    assert _steps(services)[3][3] == datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    _tick(services, clock, worker_redis, datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    assert [m.purpose for m in messages(services)][-1] == "final_message"
    assert _steps(services)[4][3] == datetime(2026, 11, 20, 22, 0, tzinfo=UTC)  # 17:00
    _tick(services, clock, worker_redis, datetime(2026, 11, 20, 22, 0, tzinfo=UTC))

    [task] = tasks_of(services)
    assert task.status == "closed_no_response"
    assert [s[2] for s in _steps(services)] == ["done"] * 5
    assert len(twilio_messages.to(ANA)) == 3
    # Only the first text of the thread carries the opt-out wording.
    first, *later = twilio_messages.to(ANA)
    assert "STOP" in first.body
    assert all("Reply STOP" not in text.body for text in later)


def test_it_runs_a_step_once_when_its_job_runs_twice(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    clock.now = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
    with services.session() as session:
        due = session.scalars(select(FollowUp.id).where(FollowUp.state == "pending")).all()
    for followup_id in due:
        services.work.enqueue_followup(followup_id)
        worker_redis.delete(f"rq:job:followup-{followup_id}")  # let a second copy in
        services.work.enqueue_followup(followup_id)
    run_jobs(services, worker_redis)
    with services.session() as session:
        steps = session.execute(select(FollowUp.step, FollowUp.state)).all()
    # The attempt-1 step ran once and scheduled attempt 2 once; no text was written twice.
    assert sorted(steps) == [(0, "done"), (1, "done"), (2, "pending")]
    assert [m.purpose for m in messages(services)] == ["text_back"]


def test_it_stops_the_cadence_when_the_patient_calls_again(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    clock.advance(minutes=20)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)

    _tick(services, clock, worker_redis, datetime(2026, 11, 19, 15, 0, tzinfo=UTC))
    assert len(twilio_messages.sent) == 1  # the text-back only
    [task] = tasks_of(services)
    assert task.status == "new"  # still the agents' to call
    assert all(state != "pending" for _, _, state, _ in _steps(services))


def test_it_stops_the_cadence_when_an_agent_reaches_the_patient(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    from telephony_service.domain.statuses import TaskStatus
    from telephony_service.models import Task
    from telephony_service.services.tasks import change_status

    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    with services.session() as session:
        task = session.scalars(select(Task)).one()
        change_status(session, task, TaskStatus.REACHED, now=clock())
        session.commit()

    _tick(services, clock, worker_redis, datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    assert len(twilio_messages.sent) == 1
    [task] = tasks_of(services)
    assert task.status == "reached"
    assert task.cadence_stop_reason == "reached"
    assert all(state == "canceled" for step, _, state, _ in _steps(services) if step > 0)


def test_it_closes_only_after_a_deferred_final_message_went_out(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    from telephony_service.services.practices import set_texting_hours

    practice = make_practice(services)
    with services.session() as session:
        weekdays = {day: ("08:00", "20:00") for day in ("mon", "tue", "wed", "thu")}
        set_texting_hours(
            session, practice.id, {**weekdays, "fri": None, "sat": ("10:00", "14:00"), "sun": None}
        )
        session.commit()
    call_ended(client, new_sid("CA"))  # Tuesday 10:00
    run_jobs(services, worker_redis)
    for at in (
        datetime(2026, 11, 17, 16, 0, tzinfo=UTC),
        datetime(2026, 11, 18, 15, 1, tzinfo=UTC),
        datetime(2026, 11, 20, 15, 0, tzinfo=UTC),  # Friday 10:00: the final text must wait
        datetime(2026, 11, 20, 22, 0, tzinfo=UTC),  # Friday's close: not yet
    ):
        _tick(services, clock, worker_redis, at)
    [task] = tasks_of(services)
    assert task.status == "new"
    assert messages(services)[-1].status == "pending"

    _tick(services, clock, worker_redis, datetime(2026, 11, 21, 15, 0, tzinfo=UTC))  # Sat 10:00
    assert messages(services)[-1].purpose == "final_message"
    assert messages(services)[-1].status == "queued"
    _tick(services, clock, worker_redis, datetime(2026, 11, 23, 22, 0, tzinfo=UTC))  # Mon close
    [task] = tasks_of(services)
    assert task.status == "closed_no_response"


def test_it_follows_the_practices_own_cadence(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    from telephony_service.domain.cadence import Action, Step, When
    from telephony_service.domain.categories import Category
    from telephony_service.services.followups import set_cadence

    practice = make_practice(services)
    # A practice that never texts back: one call attempt by the SLA, then close that day.
    with services.session() as session:
        steps = (Step(Action.CALL, When.SLA), Step(Action.CLOSE, When.CLOSE_OF_DAY))
        set_cadence(session, practice.id, Category.MISSED_CALL, steps, clock())
        session.commit()
    call_ended(client, new_sid("CA"))
    run_jobs(services, worker_redis)
    assert messages(services) == []

    _tick(services, clock, worker_redis, datetime(2026, 11, 17, 16, 0, tzinfo=UTC))
    _tick(services, clock, worker_redis, datetime(2026, 11, 17, 22, 0, tzinfo=UTC))
    [task] = tasks_of(services)
    assert task.status == "closed_no_response"
    assert twilio_messages.sent == []


def test_a_cadence_shortened_mid_way_still_closes_the_task(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    from telephony_service.domain.cadence import Action, Step, When
    from telephony_service.domain.categories import Category
    from telephony_service.services.followups import set_cadence

    practice = make_practice(services)
    call_ended(client, new_sid("CA"))  # Tuesday 10:00, on the default cadence
    run_jobs(services, worker_redis)
    _tick(services, clock, worker_redis, datetime(2026, 11, 17, 16, 0, tzinfo=UTC))  # attempt 1
    # The manager cuts it to one call by the SLA, then close that day.
    with services.session() as session:
        steps = (Step(Action.CALL, When.SLA), Step(Action.CLOSE, When.CLOSE_OF_DAY))
        set_cadence(session, practice.id, Category.MISSED_CALL, steps, clock())
        session.commit()

    # The step already scheduled runs as it was written (Wednesday 09:00, with its text);
    # the new cadence's end follows it.
    _tick(services, clock, worker_redis, datetime(2026, 11, 18, 14, 0, tzinfo=UTC))
    assert _steps(services)[3] == (3, "close", "pending", datetime(2026, 11, 18, 22, 0, tzinfo=UTC))
    _tick(services, clock, worker_redis, datetime(2026, 11, 18, 22, 0, tzinfo=UTC))

    [task] = tasks_of(services)
    assert task.status == "closed_no_response"
    assert [s[2] for s in _steps(services)] == ["done"] * 4
