"""The hand-off from a request to the workers.

PostgreSQL holds the work; Redis only carries a nudge to process it. An enqueue therefore
has a short timeout and its failure is logged and forgotten: the relay in the worker finds
the stored, unprocessed row and enqueues it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError

log = logging.getLogger(__name__)

QUEUE_NAME = "telephony"
EVENT_JOB = "workers.jobs.process_webhook_event"


def event_job_id(event_id: int) -> str:
    return f"webhook-event-{event_id}"


def connect_redis(url: str, timeout: float) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # A hung Redis must cost one short timeout, not a retry loop.
        retry_on_timeout=False,
        health_check_interval=0,
    )


class WorkQueue:
    """Enqueues jobs by id, never blocking a request for longer than the Redis timeout.

    After a failure it stops trying for `backoff` seconds: with Redis hung, each webhook
    would otherwise pay the full timeout, and Twilio's callbacks would pile up behind it.
    """

    def __init__(self, redis: Redis, *, backoff: float = 5.0) -> None:
        self.redis = redis
        self.queue = Queue(QUEUE_NAME, connection=redis)
        self.backoff = backoff
        self._down_until = 0.0
        self._lock = threading.Lock()

    def enqueue_event(self, event_id: int) -> bool:
        return self._enqueue(EVENT_JOB, event_id, event_job_id(event_id))

    def enqueue_events(self, event_ids: Iterable[int]) -> int:
        return sum(self.enqueue_event(event_id) for event_id in event_ids)

    def _enqueue(self, func: str, arg: int, job_id: str) -> bool:
        if time.monotonic() < self._down_until:
            return False
        try:
            self.queue.enqueue_call(
                func,
                args=(arg,),
                job_id=job_id,
                # The relay may offer a job that is still waiting; one copy is enough.
                unique=True,
                result_ttl=0,
                failure_ttl=7 * 24 * 3600,
            )
        except RedisError as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.backoff
            log.warning("enqueue of %s failed (%s); the relay will retry it", job_id, exc)
            return False
        except DuplicateJobError:
            return True
        return True
