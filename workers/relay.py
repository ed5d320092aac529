"""Moves stored-but-unapplied work from PostgreSQL back onto RQ.

Redis carries work, it does not hold it: a webhook whose enqueue failed (Redis down or
hung), a job lost in a Redis flush, or a job that failed and should be tried again, all
leave a row with processed_at empty. The relay finds them and enqueues them again under
the same deterministic job id, so a job already waiting is not doubled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import utcparse

from telephony_service.services.events import STALE_PAGE, stale_event_ids
from telephony_service.wiring import Services
from telephony_service.workqueue import event_job_id

log = logging.getLogger(__name__)

# A webhook normally enqueues its own job within milliseconds; waiting a little longer
# than that before stepping in keeps the relay from racing the normal path.
GRACE = timedelta(seconds=10)
INTERVAL_SECONDS = 15.0
ABANDONED_AFTER = timedelta(minutes=10)
# A job "queued" this long is looked for on its queue. A worker takes a job off the list
# (RQ pops it outright when it listens on several queues) and only then marks it started:
# killed or cut off from Redis in between, it leaves a record that says "queued" for a
# job no worker will ever see, and that record would turn every later offer away.
QUEUED_CHECK_AFTER = timedelta(minutes=2)


def relay_once(services: Services, *, grace: timedelta = GRACE, page: int = STALE_PAGE) -> int:
    """Offer RQ every stored event not applied yet whose job it no longer holds.

    Page after page: after Redis lost its jobs, a backlog larger than a page would
    otherwise wait behind the oldest page's jobs, still queued, for pass after pass.
    """
    now = services.clock()
    enqueued = 0
    after = None
    while True:
        with services.session() as session:
            stale = stale_event_ids(session, now=now, older_than=grace, after=after, limit=page)
        job_ids = {event_id: event_job_id(event_id) for _, event_id in stale}
        waiting = waiting_jobs(services, list(job_ids.values()))
        for event_id, job_id in job_ids.items():
            if job_id in waiting:
                continue
            clear_dead_job(services, job_id)
            if services.work.enqueue_event(event_id):
                enqueued += 1
        if len(stale) < page:
            break
        after = stale[-1]
    if enqueued:
        log.info("relay re-enqueued %d stored event(s)", enqueued)
    return enqueued


# What RQ still holds to run; a "started" job counts only while not abandoned.
_WAITING = frozenset(
    status.value for status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
)


def waiting_jobs(
    services: Services, job_ids: Sequence[str], *, abandoned_after: timedelta = ABANDONED_AFTER
) -> set[str]:
    """The ids among `job_ids` whose jobs RQ still holds to run, found in one round trip.

    A pass offers work again once its lease has run out, and in a backlog (texts due faster
    than the workers send them) most of it still waits in RQ. Asking about each job on its
    own (a fetch, then the unique enqueue's script) cost two round trips a job on every such
    pass, in the worker's own process. An empty set if Redis does not answer: the enqueues
    that follow report it.
    """
    if not job_ids:
        return set()
    redis = services.work.redis
    try:
        pipeline = redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipeline.hmget(Job.key_for(job_id), "status", "started_at", "enqueued_at", "origin")
        answers = pipeline.execute()
    except RedisError:
        return set()
    waiting = set()
    to_find: list[tuple[str, bytes]] = []
    for job_id, (status, started, enqueued, origin) in zip(job_ids, answers, strict=True):
        state = status.decode() if status else None
        if (
            state == JobStatus.QUEUED.value
            and origin
            and _abandoned_since(
                utcparse(enqueued.decode()) if enqueued else None, QUEUED_CHECK_AFTER
            )
        ):
            to_find.append((job_id, origin))
        elif state in _WAITING or (
            state == JobStatus.STARTED.value
            and not _abandoned_since(
                utcparse(started.decode()) if started else None, abandoned_after
            )
        ):
            waiting.add(job_id)
    if to_find:
        try:
            found = _on_their_queues(redis, to_find)
        except RedisError:
            return waiting | {job_id for job_id, _ in to_find}
        waiting.update(
            job_id for (job_id, _), on_queue in zip(to_find, found, strict=True) if on_queue
        )
    return waiting


def _on_their_queues(redis: Redis, jobs: Sequence[tuple[str, bytes]]) -> list[bool]:
    """Whether each (job id, queue name) is still on that queue's list (one round trip)."""
    pipeline = redis.pipeline(transaction=False)
    for job_id, origin in jobs:
        pipeline.lpos(Queue.redis_queue_namespace_prefix + origin.decode(), job_id)
    return [position is not None for position in pipeline.execute()]


def clear_dead_job(
    services: Services, job_id: str, *, abandoned_after: timedelta = ABANDONED_AFTER
) -> bool:
    """Remove a failed or abandoned job, so the same id can be enqueued again. True if it
    had failed, or its worker died running it (a job lost before it ran is not a failure).

    A failed job keeps its id in RQ's failed registry; a unique enqueue would then be
    refused as a duplicate, so the old job is removed first."""
    try:
        job = Job.fetch(job_id, connection=services.work.redis)
    except NoSuchJobError:
        return False
    except Exception:  # Redis trouble: the enqueue below will report it
        return False
    status = job.get_status(refresh=False)
    failed = status == JobStatus.FAILED or (
        status == JobStatus.STARTED and _abandoned_since(job.started_at, abandoned_after)
    )
    if (
        failed
        or status in (JobStatus.STOPPED, JobStatus.CANCELED)
        or (
            status == JobStatus.QUEUED
            and _abandoned_since(job.enqueued_at, QUEUED_CHECK_AFTER)
            and not _on_their_queues(services.work.redis, [(job.id, job.origin.encode())])[0]
        )
    ):
        job.delete()
    return failed


def _abandoned_since(started: datetime | None, after: timedelta) -> bool:
    # A job is a few database statements; one "started" long ago belonged to a worker that
    # was killed mid-job (SIGKILL, out of memory) and will never finish it.
    if started is None:
        return True
    if started.tzinfo is None:  # RQ stores naive UTC
        started = started.replace(tzinfo=UTC)
    return datetime.now(UTC) - started > after


class Every(threading.Thread):
    """Runs one pass (the relay's, the scheduler's) every few seconds beside the worker,
    until stopped. A failing pass is logged and tried again at the next tick."""

    def __init__(
        self, name: str, work: Callable[[Services], object], services: Services, interval: float
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.services = services
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.work(self.services)
            except Exception:
                log.exception("%s pass failed; trying again in %.1f s", self.name, self.interval)
