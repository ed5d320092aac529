"""A missed call worked on the default cadence until it closes, with an injected clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
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


def _failing_step(services: Services, clock: FakeClock) -> tuple[int, int]:
    from tests.queue_support import make_task

    practice = make_practice(services)
    task_id = make_task(services, practice.id, due_in=timedelta(minutes=-1))
    with services.session() as session:
        step = FollowUp(task_id=task_id, step=1, action="call", due_at=clock(), state="pending")
        session.add(step)
        session.commit()
        return task_id, step.id


def test_it_hands_a_task_to_a_person_when_a_step_keeps_failing(
    services: Services, clock: FakeClock, worker_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug or bad data: the step's job fails every time. It is tried again after growing
    pauses, then the cadence stops and a person calls; it is not offered forever."""
    from telephony_service.models import Task, TaskEvent
    from telephony_service.services import followups

    task_id, step_id = _failing_step(services, clock)
    runs: list[datetime] = []

    def broken(*args: object, **kwargs: object) -> None:
        runs.append(clock())
        raise RuntimeError("a bug in the step")

    monkeypatch.setattr(followups, "_run", broken)
    for _ in range(6 * 60 * 2):  # six hours of passes, one every 30 s
        schedule_once(services)
        run_jobs(services, worker_redis)
        clock.advance(seconds=30)

    assert len(runs) == followups.MAX_STEP_FAILURES
    gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
    # Each pause, from when the scheduler finds the failure: its lease (30 s) after the run.
    for gap, pause in zip(gaps, followups.STEP_RETRY_PAUSES, strict=True):
        assert pause < gap <= pause + timedelta(minutes=2), (gap, pause)
    with services.session() as session:
        step = session.get_one(FollowUp, step_id)
        task = session.get_one(Task, task_id)
        line = session.scalars(
            select(TaskEvent).where(
                TaskEvent.task_id == task_id, TaskEvent.kind == "cadence_failed"
            )
        ).one()
    assert (step.state, step.failures) == ("failed", followups.MAX_STEP_FAILURES)
    assert task.cadence_stop_reason == "step_failed"
    # At the pass that finds the last failure (the step's lease runs out a pass later).
    assert task.next_action == "call_back"
    assert runs[-1] < task.next_action_at <= runs[-1] + timedelta(minutes=1)
    assert line.text == "an automated follow-up kept failing: call the patient"


def test_it_runs_a_step_whose_job_failed_once_after_a_pause(
    services: Services, clock: FakeClock, worker_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telephony_service.services import followups

    _, step_id = _failing_step(services, clock)
    real_run = followups._run
    calls: list[datetime] = []

    def fails_once(*args: object, **kwargs: object) -> object:
        calls.append(clock())
        if len(calls) == 1:
            raise RuntimeError("the database went away mid-step")
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(followups, "_run", fails_once)
    for _ in range(10):
        schedule_once(services)
        run_jobs(services, worker_redis)
        clock.advance(seconds=30)

    assert len(calls) == 2
    with services.session() as session:
        step = session.get_one(FollowUp, step_id)
    assert (step.state, step.failures) == ("done", 1)
