"""Moves due follow-up steps and texts from PostgreSQL onto RQ.

The schedule is rows with due times; Redis only carries the nudge to run one. Each pass
claims due rows (skipping rows another worker's scheduler holds), marks them enqueued,
and enqueues deterministic job ids, so two schedulers, a pass that races a job, or a
Redis flush never make a second send: the send itself is claimed in the database.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from telephony_service.services import delivery, followups
from telephony_service.wiring import Services
from telephony_service.workqueue import followup_job_id, reconcile_job_id, send_job_id
from workers.relay import clear_dead_job, waiting_jobs

log = logging.getLogger(__name__)

# Texts are due to the second (a rate-limited sender's next slot, a deferral's end), so
# the scheduler looks often; a pass that finds nothing is one indexed query.
INTERVAL_SECONDS = 0.5
# A send, a reconciliation or a step takes seconds (its HTTP timeout, a lock wait). A job
# of one still "started" this long after it began belongs to a worker that was killed:
# for a text, reconciliation has taken its claim back by now (CLAIM_LEASE) and offers it
# again. Left to the relay's ten minutes, a text-back killed mid-send went out that late.
# Taken for dead wrongly, a job only makes the new one find the row claimed or done.
ABANDONED_AFTER = timedelta(minutes=2)


def schedule_once(services: Services) -> int:
    now = services.clock()
    with services.session() as session:
        sends, reconciles = delivery.claim_due(session, now=now)
        steps = followups.claim_due(session, now=now)
    work = services.work
    offers = [
        *((send_job_id(message_id), work.enqueue_send, message_id) for message_id in sends),
        *(
            (reconcile_job_id(message_id), work.enqueue_reconcile, message_id)
            for message_id in reconciles
        ),
        *((followup_job_id(step_id), work.enqueue_followup, step_id) for step_id in steps),
    ]
    # Offered again after its lease, a text is often still waiting in RQ (a backlog): its
    # job is left as it is.
    waiting = waiting_jobs(
        services, [job_id for job_id, _, _ in offers], abandoned_after=ABANDONED_AFTER
    )
    enqueued = 0
    for job_id, enqueue, row_id in offers:
        if job_id in waiting:
            continue
        failed = clear_dead_job(services, job_id, abandoned_after=ABANDONED_AFTER)
        if failed and enqueue == work.enqueue_followup:
            # (A text's send and its reconciliation count their own tries.)
            with services.session() as session:
                followups.step_failed(session, row_id, now=now)
            continue  # offered again after its pause, or handed to a person
        enqueued += enqueue(row_id)
    return enqueued
