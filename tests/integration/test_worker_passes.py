"""The worker's relay and scheduler passes run beside its jobs without slowing them down."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, text

from telephony_service.models import Practice
from telephony_service.settings import Settings
from telephony_service.wiring import Services
from workers import runtime
from workers.main import run_worker
from workers.relay import relay_once
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
