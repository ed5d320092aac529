"""Many missed calls under a mix of faults: no (task, attempt) sent twice, no due step lost."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import select

from telephony_service.models import FollowUp, Message
from telephony_service.wiring import Services
from tests.conftest import FakeClock, flush_redis
from tests.helpers import call_ended, make_practice, new_sid, run_jobs, tasks_of
from tests.sms_support import FakeMessages, messages
from workers.relay import relay_once
from workers.scheduler import schedule_once

PATIENTS = [f"+1202555{n:04d}" for n in range(100, 130)]


def test_it_sends_each_text_once_and_loses_no_step_under_faults(
    services: Services,
    client: FlaskClient,
    worker_redis: Redis,
    twilio_messages: FakeMessages,
    clock: FakeClock,
) -> None:
    chaos = random.Random(20261127)
    faults = [("error", 429, 20429), ("error", 500, 20500), ("accept_then_drop",), ("timeout",)]
    make_practice(services)
    for caller in PATIENTS:
        if chaos.random() < 0.4:
            twilio_messages.faults.append(chaos.choice(faults))
        call_ended(client, new_sid("CA"), caller=caller)
        if chaos.random() < 0.2:
            flush_redis(worker_redis)  # Redis loses whatever was queued
        elif chaos.random() < 0.3:
            run_jobs(services, worker_redis)
    run_jobs(services, worker_redis)

    # Drive the clock through the whole cadence, with duplicate jobs and flushes on the way.
    end = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    while clock.now < end:
        clock.advance(minutes=chaos.choice([1, 7, 30, 90]))
        if chaos.random() < 0.3:
            twilio_messages.faults.append(chaos.choice(faults))
        # What `telephony worker` runs beside its jobs.
        relay_once(services)
        schedule_once(services)
        if chaos.random() < 0.1:
            flush_redis(worker_redis)
        with services.session() as session:
            pending = session.scalars(select(Message.id).where(Message.status == "pending"))
            for message_id in list(pending)[:3]:
                services.work.enqueue_send(message_id)  # a stray duplicate job
        run_jobs(services, worker_redis)

    sent_keys = Counter(
        (m.task_id, m.attempt, m.purpose) for m in messages(services) if m.message_sid
    )
    assert all(count == 1 for count in sent_keys.values())
    per_patient = Counter(item.to for item in twilio_messages.sent)
    # Text-back, second attempt and final message: three texts each, never a fourth.
    assert per_patient == Counter({caller: 3 for caller in PATIENTS})
    assert len({item.sid for item in twilio_messages.sent}) == len(twilio_messages.sent)
    with services.session() as session:
        overdue = session.scalars(
            select(FollowUp).where(FollowUp.state == "pending", FollowUp.due_at <= clock())
        ).all()
        assert overdue == []
    assert {task.status for task in tasks_of(services)} == {"closed_no_response"}
