"""The hand-off from a request to the workers.

PostgreSQL holds the work; Redis only carries a nudge to process it. An enqueue therefore
has a short timeout and its failure is logged and forgotten: the relay in the worker finds
the stored, unprocessed row and enqueues it again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError

log = logging.getLogger(__name__)

QUEUE_NAME = "telephony"
# Delivery receipts (two per text) wait behind everything else: a burst of them must
# never hold up the text-back of a patient who just called. Workers take from
# QUEUE_NAME first.
RECEIPTS_QUEUE_NAME = "telephony-receipts"
QUEUE_NAMES = (QUEUE_NAME, RECEIPTS_QUEUE_NAME)
EVENT_JOB = "workers.jobs.process_webhook_event"
EVENTS_JOB = "workers.jobs.process_webhook_events"
SEND_JOB = "workers.jobs.send_message"
RECONCILE_JOB = "workers.jobs.reconcile_message"
FOLLOWUP_JOB = "workers.jobs.run_followup"


def event_job_id(event_id: int) -> str:
    return f"webhook-event-{event_id}"


def events_job_id(event_ids: Sequence[int]) -> str:
    return f"webhook-events-{event_ids[0]}-{event_ids[-1]}-{len(event_ids)}"


def send_job_id(message_id: int) -> str:
    return f"sms-{message_id}"


def reconcile_job_id(message_id: int) -> str:
    return f"sms-reconcile-{message_id}"


def followup_job_id(followup_id: int) -> str:
    return f"followup-{followup_id}"


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
        self.receipts = Queue(RECEIPTS_QUEUE_NAME, connection=redis)
        self.backoff = backoff
        self._down_until = 0.0
        self._lock = threading.Lock()

    def enqueue_event(self, event_id: int, *, receipt: bool = False) -> bool:
        """True if a job was added; False if Redis failed or the job already exists."""
        return self._enqueue(EVENT_JOB, event_id, event_job_id(event_id), receipt=receipt)

    def enqueue_send(self, message_id: int) -> bool:
        return self._enqueue(SEND_JOB, message_id, send_job_id(message_id))

    def enqueue_reconcile(self, message_id: int) -> bool:
        return self._enqueue(RECONCILE_JOB, message_id, reconcile_job_id(message_id))

    def enqueue_followup(self, followup_id: int) -> bool:
        return self._enqueue(FOLLOWUP_JOB, followup_id, followup_job_id(followup_id))

    def enqueue_events(self, event_ids: Sequence[int], *, receipt: bool = False) -> bool:
        """One job for events that arrived together (the dispatcher's hand-off).

        Not checked for uniqueness: the dispatcher hands each event over once, so its job
        id never repeats, and the check (a Lua script and a round trip of its own) costs a
        third of an enqueue. The relay's re-enqueue of an event is checked, and finds a
        single event's job still waiting under the same id.
        """
        if len(event_ids) == 1:
            [event_id] = event_ids
            return self._enqueue(
                EVENT_JOB, event_id, event_job_id(event_id), unique=False, receipt=receipt
            )
        return self._enqueue(
            EVENTS_JOB, list(event_ids), events_job_id(event_ids), unique=False, receipt=receipt
        )

    def _enqueue(
        self,
        func: str,
        arg: int | list[int],
        job_id: str,
        *,
        unique: bool = True,
        receipt: bool = False,
    ) -> bool:
        if time.monotonic() < self._down_until:
            return False
        try:
            # One round trip: RQ otherwise makes its own pipeline and a second call.
            pipeline = None if unique else self.redis.pipeline()
            queue = self.receipts if receipt else self.queue
            queue.enqueue_call(
                func,
                args=(arg,),
                job_id=job_id,
                description=job_id,
                # The relay may offer a job that is still waiting; one copy is enough.
                unique=unique,
                result_ttl=0,
                failure_ttl=7 * 24 * 3600,
                pipeline=pipeline,
            )
            if pipeline is not None:
                pipeline.execute()
        except RedisError as exc:
            with self._lock:
                self._down_until = time.monotonic() + self.backoff
            log.warning("enqueue of %s failed (%s); the relay will retry it", job_id, exc)
            return False
        except DuplicateJobError:
            return False  # the job is still there (waiting or running): nothing to add
        return True


class Dispatcher:
    """Hands stored event ids to RQ from a thread of its own, several to a job under load.

    The request thread only appends an id and returns, so a slow or hung Redis never holds
    up Twilio; and an RQ enqueue costs more CPU than the whole database insert, so under
    load one job carries every event that arrived while the previous enqueue ran. An id
    still in memory when the process dies is not lost: its row is in the database, and
    the relay enqueues it.
    """

    MAX_BATCH = 50
    # Under load (the previous hand-off ended moments ago), wait this long for more events
    # before enqueueing: a job carries more of them, and each enqueue (about 150 us of CPU
    # in the web process) serves more webhooks. An event arriving after a quiet moment is
    # handed over at once, so a lone missed call's text-back never waits for this.
    LINGER = 0.002

    def __init__(self, work: WorkQueue, *, linger: float = LINGER) -> None:
        self.work = work
        self.linger = linger
        self._last_handoff = 0.0
        self._pending: deque[int] = deque()
        self._receipts: deque[int] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False

    def submit(self, event_id: int, *, receipt: bool = False) -> None:
        with self._cond:
            (self._receipts if receipt else self._pending).append(event_id)
            if self._thread is None or self._pid != os.getpid():
                # Started on first use in each process: a thread does not survive the
                # fork from gunicorn's preloading master.
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted has been handed to Redis (or given up on)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._receipts or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Hand over what is pending, then stop the thread (tests; a process that simply
        exits leaves its pending ids to the relay)."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._receipts):
                    if self._closed:
                        self._thread = None
                        return
                    self._cond.wait()
                if time.monotonic() - self._last_handoff < self.linger and not self._closed:
                    deadline = time.monotonic() + self.linger
                    while len(self._pending) < self.MAX_BATCH and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                receipt = not self._pending
                lane = self._receipts if receipt else self._pending
                count = min(len(lane), self.MAX_BATCH)
                batch = [lane.popleft() for _ in range(count)]
                self._busy = True
            try:
                self.work.enqueue_events(batch, receipt=receipt)
            except Exception:
                log.exception("could not enqueue %d event(s); the relay will", len(batch))
            finally:
                with self._cond:
                    self._busy = False
                    self._last_handoff = time.monotonic()
                    self._cond.notify_all()
