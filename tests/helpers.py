"""Factories and helpers shared by the integration and web tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import event, select
from werkzeug.test import TestResponse

from telephony_service.models import Practice, Task, WebhookEvent
from telephony_service.services.practices import add_api_key, add_practice
from telephony_service.wiring import Services
from telephony_service.workqueue import QUEUE_NAMES
from tests.conftest import ACCOUNT_SID, twilio_signature
from workers import runtime

RIVERSIDE_NUMBER = "+16175550100"  # Riverside Family Medicine, Boston
HARBOR_NUMBER = "+14155550111"  # Harbor Pediatrics, San Francisco
ANA = "+12025550143"  # a patient who calls Riverside
BEN = "+13125550188"  # another patient


def make_practice(
    services: Services,
    *,
    name: str = "Riverside Family Medicine",
    number: str = RIVERSIDE_NUMBER,
    timezone: str = "America/New_York",
) -> Practice:
    with services.session() as session:
        practice = add_practice(
            session,
            name=name,
            number=number,
            timezone=timezone,
            booking_url=None,
            now=services.clock(),
        )
        session.commit()
        return practice


def make_api_key(services: Services, practice_id: int) -> str:
    with services.session() as session:
        key = add_api_key(session, practice_id=practice_id, now=services.clock())
        session.commit()
        return key


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def post_twilio(
    client: FlaskClient, path: str, params: dict[str, str], *, signature: str | None = None
) -> TestResponse:
    headers = {
        "X-Twilio-Signature": twilio_signature(path, params) if signature is None else signature
    }
    return client.post(path, data=params, headers=headers)


def call_params(
    call_sid: str, caller: str = ANA, to: str = RIVERSIDE_NUMBER, **extra: str
) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid,
        "From": caller,
        "To": to,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def call_ended(
    client: FlaskClient, call_sid: str, caller: str = ANA, to: str = RIVERSIDE_NUMBER
) -> TestResponse:
    return post_twilio(
        client,
        "/twilio/voice/status",
        call_params(call_sid, caller, to, CallStatus="completed", CallDuration="12"),
    )


def recording_ready(
    client: FlaskClient, call_sid: str, recording_sid: str, duration: str = "14"
) -> TestResponse:
    return post_twilio(
        client,
        "/twilio/voice/recording",
        {
            "AccountSid": ACCOUNT_SID,
            "CallSid": call_sid,
            "RecordingSid": recording_sid,
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}",
            "RecordingStatus": "completed",
            "RecordingDuration": duration,
            "RecordingChannels": "1",
            "RecordingSource": "RecordVerb",
        },
    )


def transcription_ready(
    client: FlaskClient, call_sid: str, recording_sid: str, text: str, caller: str = ANA
) -> TestResponse:
    return post_twilio(
        client,
        "/twilio/voice/transcription",
        call_params(
            call_sid,
            caller,
            TranscriptionSid=new_sid("TR"),
            TranscriptionText=text,
            TranscriptionStatus="completed",
            RecordingSid=recording_sid,
        ),
    )


def run_jobs(services: Services, connection: Redis) -> None:
    """Run every queued job in this process, as `telephony worker` would."""
    services.dispatcher.flush()
    runtime.install(services)
    queues = [Queue(name, connection=connection) for name in QUEUE_NAMES]
    worker = SimpleWorker(queues, connection=connection)
    worker.work(burst=True, with_scheduler=False)


def tasks_of(services: Services, practice_id: int | None = None) -> list[Task]:
    with services.session() as session:
        query = select(Task).order_by(Task.id)
        if practice_id is not None:
            query = query.where(Task.practice_id == practice_id)
        return list(session.scalars(query))


def events(services: Services) -> list[WebhookEvent]:
    with services.session() as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def practice_row(services: Services, practice_id: int) -> Practice:
    with services.session() as session:
        practice = session.get(Practice, practice_id)
        assert practice is not None
        return practice


def timeline_kinds(services: Services, task_id: int) -> list[str]:
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return [entry.kind for entry in task.timeline]


def api_get(client: FlaskClient, key: str, path: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {key}"})


@contextmanager
def statements(services: Services) -> Iterator[list[str]]:
    """The SQL of every statement the services' engine runs inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(services.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(services.engine, "before_cursor_execute", record)
