"""`telephony worker`: an RQ worker with the relay beside it.

The worker class is RQ's SimpleWorker: it runs jobs in its own process instead of forking
one per job. Our jobs are short database transactions; a fork per job re-imports nothing
but still costs a process start and a fresh connection pool each time (single-digit jobs
per second), and the connection pool is the expensive part of a job here.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested

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
        _work(queues, connection, burst=burst)
    finally:
        relay.stopped.set()
        scheduler.stopped.set()
        for thread in (relay, scheduler):
            thread.join(timeout=5)
        passes.engine.dispose()


# Pauses before starting RQ's loop again after it quit on an error.
RESTART_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)


def _work(queues: list[Queue], connection: Redis, *, burst: bool) -> None:
    """RQ's work loop, started again whenever it quits on an error rather than on request.

    RQ survives a lost Redis only while it waits for a job: Redis going away while a job
    runs (a restart, a failover) ends its loop, and would end this process with the relay
    and scheduler in it. The job it was running is picked up again by the scheduler's rule
    for abandoned jobs; here the loop waits for Redis and goes on.
    """
    stop = threading.Event()
    failures = 0
    while True:
        worker: SimpleWorker | None = None
        started = time.monotonic()
        try:
            # (Its constructor names the connection in Redis already.)
            worker = SimpleWorker(queues, connection=connection)
            worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
        except RedisError as exc:
            # Its teardown (registering its death, then unsubscribing) needs Redis too.
            log.warning("the RQ loop lost Redis (%s)", type(exc).__name__)
            _close_pubsub(worker)
        except StopRequested:
            return
        finally:
            # RQ's handlers belong to the loop that ended; between loops SIGTERM is ours.
            _handle_stop_signals(stop)
        # (Set by RQ's handler of SIGTERM/SIGINT, whether or not a job was running.)
        if burst or stop.is_set():
            return
        if worker is not None and worker._shutdown_requested_date is not None:
            return
        if time.monotonic() - started > RESTART_PAUSES[-1]:
            failures = 0  # it had been working: this is a new outage
        pause = RESTART_PAUSES[min(failures, len(RESTART_PAUSES) - 1)]
        failures += 1
        log.warning("the RQ loop quit on an error; starting it again in %.0f s", pause)
        if stop.wait(pause):
            return


def _handle_stop_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # (signals reach the main thread only; a test may run the loop elsewhere)

    def request_stop(signum: int, frame: object) -> None:
        log.info("stopping on signal %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def _close_pubsub(worker: SimpleWorker | None) -> None:
    """What RQ's teardown did not reach: the dead loop's subscription and its thread,
    which would otherwise reconnect and stay, one more per outage."""
    thread = getattr(worker, "pubsub_thread", None)
    pubsub = getattr(worker, "pubsub", None)
    try:
        if thread is not None:
            thread.stop()
            thread.join(timeout=1)
        if pubsub is not None:
            pubsub.close()
    except (RedisError, OSError, RuntimeError) as exc:
        log.debug("closing the old worker's subscription: %s", exc)
