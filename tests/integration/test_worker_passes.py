"""The worker's relay and scheduler passes run beside its jobs without slowing them down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rq.job import Job, JobStatus
from sqlalchemy import Engine, select, text

from telephony_service.models import Practice
from telephony_service.services.delivery import ENQUEUE_LEASE
from telephony_service.settings import Settings
from telephony_service.wiring import Services
from telephony_service.workqueue import send_job_id
from tests.conftest import FakeClock
from tests.helpers import ANA, BEN, make_practice
from tests.sms_support import text_back_due
from workers import runtime
from workers.main import run_worker
from workers.relay import ABANDONED_AFTER as RELAY_ABANDONED_AFTER
from workers.relay import QUEUED_CHECK_AFTER, relay_once
from workers.scheduler import ABANDONED_AFTER as SCHEDULER_ABANDONED_AFTER
from workers.scheduler import schedule_once


def _run_a_job_query(services: Services, times: int) -> None:
    for _ in range(times):
        with services.session() as session:
            session.execute(select(Practice.id).where(Practice.id == 1))
            session.commit()


def _prepared(engine: Engine) -> list[str]:
    """The statements PostgreSQL holds prepared on the engine's (one) pooled connection."""
    with engine.connect() as connection:
        found = connection.exec_driver_sql("SELECT statement FROM pg_prepared_statements")
        statements = list(found.scalars())
        # Committed, not rolled back on the way into the pool: a ROLLBACK is what makes
        # psycopg forget the connection's prepared statements.
        connection.commit()
        return statements


def test_it_keeps_the_jobs_prepared_statements_through_the_passes(services: Services) -> None:
    passes = services.with_own_pool()
    try:
        assert passes.engine is not services.engine
        assert passes.settings is services.settings and passes.work is services.work
        if services.engine.dialect.name != "postgresql":
            # Nothing is prepared on SQLite; the passes still run on their own pool.
            schedule_once(passes)
            relay_once(passes)
            assert passes.engine.pool.checkedin() >= 1
            return
        # psycopg prepares a statement the sixth time a connection runs it.
        _run_a_job_query(services, 6)
        before = _prepared(services.engine)
        assert any("practices" in statement for statement in before)

        # Nothing is due, so each pass ends its transaction with a ROLLBACK.
        schedule_once(passes)
        relay_once(passes)
        assert _prepared(services.engine) == before

        # On the jobs' own pool the same passes would have cost them every statement.
        schedule_once(services)
        assert _prepared(services.engine) == []
    finally:
        passes.engine.dispose()


def test_it_runs_the_worker_passes_off_the_jobs_pool(
    settings: Settings, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_services", None)
    # A burst worker with nothing queued: only its relay pass (run once at the start) and
    # perhaps a scheduler pass touch the database.
    run_worker(settings, burst=True)
    jobs = runtime.services()
    try:
        assert jobs.engine is not services.engine
        assert jobs.engine.pool.checkedin() == 0, "a pass used the jobs' connections"
        with jobs.session() as session:
            assert session.execute(text("SELECT 1")).scalar_one() == 1
        assert jobs.engine.pool.checkedin() == 1
    finally:
        jobs.engine.dispose()


def test_it_leaves_texts_waiting_in_rq_alone_and_requeues_the_one_rq_lost(
    services: Services, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    practice = make_practice(services)
    # A backlog: three texts due, each with its send job still waiting in RQ.
    texts = [text_back_due(services, practice.id, caller) for caller in (ANA, BEN, "+13125550199")]
    for message_id in texts:
        assert services.work.enqueue_send(message_id)
    offered: list[int] = []
    enqueue_send = services.work.enqueue_send

    def recording(message_id: int) -> bool:
        offered.append(message_id)
        return enqueue_send(message_id)

    monkeypatch.setattr(services.work, "enqueue_send", recording)

    # Their leases run out while they wait: the pass asks RQ once and enqueues nothing.
    clock.advance(seconds=ENQUEUE_LEASE.total_seconds() + 1)
    assert schedule_once(services) == 0
    assert offered == []
    assert services.work.queue.count == 3

    # RQ loses one (a flush, an eviction): the next pass after its lease puts it back.
    Job.fetch(send_job_id(texts[1]), connection=services.redis).delete()
    clock.advance(seconds=ENQUEUE_LEASE.total_seconds() + 1)
    assert schedule_once(services) == 1
    assert offered == [texts[1]]
    assert sorted(services.work.queue.job_ids) == sorted(send_job_id(m) for m in texts)


@pytest.mark.parametrize(
    ("queued_ago", "offered_again"),
    [(QUEUED_CHECK_AFTER + timedelta(seconds=10), True), (timedelta(seconds=30), False)],
)
def test_it_requeues_a_send_whose_job_a_worker_took_off_the_queue_and_lost(
    services: Services, clock: FakeClock, queued_ago: timedelta, offered_again: bool
) -> None:
    practice = make_practice(services)
    message_id = text_back_due(services, practice.id, ANA)
    # A worker popped the job off the queue and died before marking it started: its
    # record still says "queued".
    assert services.work.enqueue_send(message_id)
    job = Job.fetch(send_job_id(message_id), connection=services.redis)
    services.work.queue.remove(job)
    job.enqueued_at = datetime.now(UTC) - queued_ago  # RQ's clock, not the test's
    job.save()

    clock.advance(seconds=ENQUEUE_LEASE.total_seconds() + 1)

    assert schedule_once(services) == int(offered_again)
    assert services.work.queue.job_ids == ([send_job_id(message_id)] if offered_again else [])


def test_it_leaves_a_queued_job_that_waits_in_a_long_backlog(
    services: Services, clock: FakeClock
) -> None:
    practice = make_practice(services)
    message_id = text_back_due(services, practice.id, ANA)
    assert services.work.enqueue_send(message_id)
    job = Job.fetch(send_job_id(message_id), connection=services.redis)
    job.enqueued_at = datetime.now(UTC) - QUEUED_CHECK_AFTER * 3  # still on the queue
    job.save()

    clock.advance(seconds=ENQUEUE_LEASE.total_seconds() + 1)

    assert schedule_once(services) == 0
    assert services.work.queue.job_ids == [send_job_id(message_id)]


@pytest.mark.parametrize(
    "started_ago",
    [
        # The relay's limit: long past any job.
        RELAY_ABANDONED_AFTER + timedelta(minutes=1),
        # A text-back whose worker was killed mid-send: reconciliation took the claim back
        # after a minute and offers the text again; it must not wait out the relay's ten.
        SCHEDULER_ABANDONED_AFTER + timedelta(seconds=10),
    ],
)
def test_it_requeues_a_send_a_killed_worker_left_started_but_not_one_still_running(
    services: Services, clock: FakeClock, started_ago: timedelta
) -> None:
    practice = make_practice(services)
    running, abandoned = (text_back_due(services, practice.id, caller) for caller in (ANA, BEN))
    # A worker took both jobs; it started one of them a while ago, and died.
    now = datetime.now(UTC)  # RQ's clock, not the test's
    for message_id, started in (
        (running, now - timedelta(seconds=30)),
        (abandoned, now - started_ago),
    ):
        assert services.work.enqueue_send(message_id)
        job = Job.fetch(send_job_id(message_id), connection=services.redis)
        services.work.queue.remove(job)
        job.set_status(JobStatus.STARTED)
        job.started_at = started
        job.save()

    clock.advance(seconds=ENQUEUE_LEASE.total_seconds() + 1)
    assert schedule_once(services) == 1
    assert services.work.queue.job_ids == [send_job_id(abandoned)]
