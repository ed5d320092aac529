"""`telephony worker`: an RQ worker with the relay beside it.

The worker class is RQ's SimpleWorker: it runs jobs in its own process instead of forking
one per job. Our jobs are short database transactions; a fork per job re-imports nothing
but still costs a process start and a fresh connection pool each time (single-digit jobs
per second), and the connection pool is the expensive part of a job here.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue, SimpleWorker

from telephony_service.settings import Settings
from telephony_service.wiring import build_services
from telephony_service.workqueue import QUEUE_NAMES
from workers import relay as relay_pass
from workers import runtime
from workers import scheduler as scheduler_pass
from workers.relay import Every

log = logging.getLogger(__name__)


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    services = build_services(settings)
    runtime.install(services)
    assert settings.redis_url is not None
    # The worker blocks on Redis for work: it needs its own connection without the
    # webhook's short socket timeout.
    connection = Redis.from_url(settings.redis_url)
    # In order: a worker takes delivery receipts only when nothing else waits.
    queues = [Queue(name, connection=connection) for name in QUEUE_NAMES]
    worker = SimpleWorker(queues, connection=connection)
    # The passes run beside the jobs on connections of their own (see with_own_pool).
    passes = services.with_own_pool()
    relay = Every("relay", relay_pass.relay_once, passes, relay_pass.INTERVAL_SECONDS)
    relay_pass.relay_once(passes)
    relay.start()
    scheduler = Every(
        "scheduler", scheduler_pass.schedule_once, passes, scheduler_pass.INTERVAL_SECONDS
    )
    scheduler.start()
    log.info("worker listening on queues %s", ", ".join(QUEUE_NAMES))
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        relay.stopped.set()
        scheduler.stopped.set()
        for thread in (relay, scheduler):
            thread.join(timeout=5)
        passes.engine.dispose()
