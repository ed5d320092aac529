"""Redis carries work, it does not hold it: webhooks survive Redis trouble, nothing is lost."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from telephony_service.web import create_app
from telephony_service.wiring import Services, build_services
from tests.conftest import FakeClock, flush_redis
from tests.helpers import (
    call_ended,
    call_params,
    events,
    make_practice,
    new_sid,
    run_jobs,
    tasks_of,
)
from workers.relay import relay_once


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A server that accepts connections and never answers: a wedged Redis."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                accepted.append(connection)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def _closed_port() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"redis://127.0.0.1:{port}/0"


def _services_with_redis(services: Services, url: str, clock: FakeClock) -> Services:
    return build_services(dataclasses.replace(services.settings, redis_url=url), clock=clock)


@pytest.mark.parametrize("broken", ["closed port", "hung"])
def test_it_answers_webhooks_quickly_while_redis_is_down_and_catches_up_later(
    services, clock: FakeClock, hung_redis: str, broken: str
):
    make_practice(services)
    url = _closed_port() if broken == "closed port" else hung_redis
    degraded = _services_with_redis(services, url, clock)
    client = create_app(services=degraded).test_client()

    timings = []
    for _ in range(5):
        started = time.monotonic()
        response = call_ended(client, new_sid("CA"))
        timings.append(time.monotonic() - started)
        assert response.status_code == 200
    # One short enqueue timeout at most (0.25 s), then the queue is skipped for a while;
    # Twilio allows 15 s. Generous bounds: this machine is shared.
    assert max(timings) < 2.0
    assert sum(timings) < 3.0
    assert len(events(services)) == 5  # stored before answering
    degraded.dispatcher.close()
    degraded.engine.dispose()

    # Redis is back: the relay finds the stored events and the worker applies them.
    clock.advance(minutes=1)
    assert relay_once(services) == 5
    run_jobs(services, services.redis)
    assert len(tasks_of(services)) == 1  # five calls from Ana: one task
    assert tasks_of(services)[0].call_count == 5
    assert all(event.processed_at is not None for event in events(services))


def test_it_rebuilds_lost_jobs_after_a_redis_flush(client, services, clock: FakeClock):
    make_practice(services)
    call_ended(client, new_sid("CA"))
    services.dispatcher.flush()
    flush_redis(services.redis)
    run_jobs(services, services.redis)
    assert tasks_of(services) == []

    assert relay_once(services) == 0  # within the grace period the webhook's own job counts
    clock.advance(seconds=30)
    assert relay_once(services) == 1
    run_jobs(services, services.redis)
    assert len(tasks_of(services)) == 1


def test_it_offers_a_backlog_larger_than_a_page_in_one_pass(services, clock: FakeClock):
    """Events stored while Redis was away: every one is offered again at once, not a page
    per pass behind the jobs of the oldest page, still waiting."""
    from sqlalchemy import insert

    from telephony_service.models import WebhookEvent

    stored_at = clock() - timedelta(minutes=1)
    with services.session() as session:
        session.execute(
            insert(WebhookEvent),
            [
                {
                    "kind": "voice.status",
                    "sid": f"CA{i:032x}",
                    "params": {},
                    "received_at": stored_at + timedelta(milliseconds=20 * (i // 2)),
                    "attempts": 0,
                }
                for i in range(25)
            ],
        )
        session.commit()

    assert relay_once(services, page=11) == 25  # a page ends between two of one instant
    assert services.work.queue.count == 25
    assert relay_once(services, page=11) == 0  # all still waiting: nothing doubled


def test_it_does_not_double_a_job_that_is_still_waiting(client, services, clock: FakeClock):
    make_practice(services)
    call_ended(client, new_sid("CA"))
    services.dispatcher.flush()
    clock.advance(seconds=30)
    relay_once(services)
    relay_once(services)
    assert services.work.queue.count == 1


def test_it_applies_an_event_once_when_its_job_runs_twice(client, services):
    from workers import runtime
    from workers.jobs import process_webhook_event

    make_practice(services)
    call_ended(client, new_sid("CA"))
    [event] = events(services)
    runtime.install(services)
    process_webhook_event(event.id)
    process_webhook_event(event.id)
    process_webhook_event(987654321)  # unknown id: a quiet no-op
    [task] = tasks_of(services)
    assert task.call_count == 1
    assert events(services)[0].attempts == 1


def test_it_makes_one_task_when_two_workers_race_on_calls_from_one_number(
    client, services, clock: FakeClock
):
    from workers import runtime
    from workers.jobs import process_webhook_event

    make_practice(services)
    for _ in range(6):
        call_ended(client, new_sid("CA"))
    services.dispatcher.flush()
    flush_redis(services.redis)
    ids = [event.id for event in events(services)]
    runtime.install(services)

    barrier = threading.Barrier(2)

    def work(batch: list[int]) -> None:
        barrier.wait()
        for event_id in batch:
            try:
                process_webhook_event(event_id)
            except Exception:  # noqa: S112 - SQLite refuses a concurrent writer; retried below
                continue

    threads = [threading.Thread(target=work, args=(ids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Whatever lost a race is stored and unprocessed: the relay hands it back.
    clock.advance(minutes=1)
    relay_once(services)
    run_jobs(services, services.redis)

    [task] = tasks_of(services)
    assert task.call_count == 6
    assert all(event.processed_at is not None for event in events(services))


def test_it_records_a_failing_event_and_retries_it_a_bounded_number_of_times(
    client, services, clock: FakeClock, monkeypatch
):
    from telephony_service.services import intake
    from telephony_service.services.events import MAX_ATTEMPTS

    make_practice(services)
    call_ended(client, new_sid("CA"))

    def broken(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(intake._HANDLERS, "voice.status", broken)
    run_jobs(services, services.redis)
    assert events(services)[0].attempts == 1
    # Backing off: a second try 20 s after arrival, a third 40 s, then 80 s ...
    clock.advance(seconds=15)
    assert relay_once(services) == 0
    clock.advance(seconds=10)
    assert relay_once(services) == 1
    for _ in range(12):
        run_jobs(services, services.redis)
        clock.advance(hours=1)
        relay_once(services)
    [event] = events(services)
    assert event.processed_at is None
    assert event.attempts == MAX_ATTEMPTS
    assert event.error == "RuntimeError: boom"

    monkeypatch.undo()
    assert relay_once(services) == 0  # given up: it waits for a person, not a busy loop


def test_it_carries_events_that_arrive_together_in_one_job(services, clock: FakeClock):
    from telephony_service.services.events import record_event

    make_practice(services)
    stored = []
    with services.dispatcher._cond:  # hold the dispatcher back while a burst arrives
        for caller in ("+12025550143", "+13125550188", "+14155550177"):
            call_sid = new_sid("CA")
            event_id = record_event(
                services.engine,
                kind="voice.status",
                sid=call_sid,
                params=call_params(call_sid, caller, CallStatus="completed"),
                now=clock(),
            )
            assert event_id is not None
            stored.append(event_id)
            services.dispatcher._pending.append(event_id)
    services.dispatcher.submit(stored.pop())  # the last one wakes the thread
    assert services.dispatcher.flush()
    assert services.work.queue.count == 1
    [job] = services.work.queue.get_jobs()
    assert job.func_name == "workers.jobs.process_webhook_events"
    run_jobs(services, services.redis)
    assert len(tasks_of(services)) == 3


def test_it_applies_the_rest_of_a_batch_when_one_event_fails(
    client, services, clock: FakeClock, monkeypatch
):
    from telephony_service.services import intake
    from workers import runtime
    from workers.jobs import process_webhook_events

    make_practice(services)
    call_ended(client, new_sid("CA"), caller="+12025550143")
    call_ended(client, new_sid("CA"), caller="+13125550188")
    services.dispatcher.flush()
    flush_redis(services.redis)
    first, second = (event.id for event in events(services))
    real = intake._HANDLERS["voice.status"]

    def flaky(session, params, at, base_url):  # type: ignore[no-untyped-def]
        if params["From"] == "+12025550143":
            raise RuntimeError("boom")
        real(session, params, at, base_url)

    monkeypatch.setitem(intake._HANDLERS, "voice.status", flaky)
    runtime.install(services)
    with pytest.raises(RuntimeError, match=f"webhook events \\[{first}\\] failed"):
        process_webhook_events([first, second])
    assert len(tasks_of(services)) == 1
    monkeypatch.undo()
    clock.advance(minutes=1)
    assert relay_once(services) == 1
    run_jobs(services, services.redis)
    assert len(tasks_of(services)) == 2


def test_it_stores_an_event_after_the_database_dropped_its_connections(services, clock):
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from telephony_service.services.events import record_event

    def store() -> int | None:
        call_sid = new_sid("CA")
        return record_event(
            services.engine,
            kind="voice.status",
            sid=call_sid,
            params=call_params(call_sid, CallStatus="completed"),
            now=clock(),
        )

    assert store() is not None  # a pooled connection now exists
    if services.engine.dialect.name == "postgresql":
        # A restart, as the pooled connections see it: the server ends their sessions.
        outsider = create_engine(services.settings.database_url, poolclass=NullPool)
        with outsider.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        outsider.dispose()
        assert ended
    assert store() is not None
    assert store() is not None
    assert len(events(services)) == 3


def test_it_retries_an_event_whose_worker_died_mid_job(client, services, clock: FakeClock):
    from datetime import UTC, datetime, timedelta

    from rq.job import JobStatus

    from telephony_service.workqueue import event_job_id

    make_practice(services)
    call_ended(client, new_sid("CA"))
    services.dispatcher.flush()
    flush_redis(services.redis)
    [event] = events(services)
    # What a SIGKILLed worker leaves behind: the job marked started, never finished.
    job = services.work.queue.enqueue_call(
        "workers.jobs.process_webhook_event", args=(event.id,), job_id=event_job_id(event.id)
    )
    services.work.queue.remove(job)
    job.set_status(JobStatus.STARTED)
    job.started_at = datetime.now(UTC) - timedelta(minutes=1)
    job.save()

    clock.advance(minutes=1)
    assert relay_once(services) == 0  # a job started a minute ago may still be running

    job.started_at = datetime.now(UTC) - timedelta(minutes=30)
    job.save()
    assert relay_once(services) == 1
    run_jobs(services, services.redis)
    assert len(tasks_of(services)) == 1
    assert events(services)[0].processed_at is not None
