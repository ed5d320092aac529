"""What each step of a webhook costs, alone, in one thread: CPU and wall microseconds per call.

    python bench/webhook_parts.py [--iterations 2000] [--redis-db 13]

The steps the status and incoming webhooks take (form parsing, signature check, phone
normalisation, the event insert, the RQ enqueue), each next to cheaper ways of doing the
same thing, so a proposed change comes with a number. Runs against its own PostgreSQL
database and Redis db index, like bench/webhook.py, and drops them at the end. Prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import secrets
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg.types.json import Jsonb
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql
from twilio.request_validator import RequestValidator, compare
from werkzeug.wrappers import Request

from bench.webhook import PUBLIC_BASE_URL, STATUS_PATH, RequestFactory, Store, log
from telephony_service.db import make_engine
from telephony_service.domain.phones import normalise_phone
from telephony_service.models import WebhookEvent
from telephony_service.services.events import record_event
from telephony_service.web import security
from telephony_service.workqueue import (
    EVENT_JOB,
    EVENTS_JOB,
    WorkQueue,
    connect_redis,
    event_job_id,
    events_job_id,
)

_table: Any = WebhookEvent.__table__
# Built once: the statement itself carries no values, execute() binds them.
PREBUILT = (
    postgresql.insert(_table)
    .on_conflict_do_nothing(index_elements=["kind", "sid"])
    .returning(_table.c.id)
)
RAW_INSERT = (
    "INSERT INTO webhook_events (kind, sid, params, received_at, attempts) "
    "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (kind, sid) DO NOTHING RETURNING id"
)
# The nudge carried by PostgreSQL instead of Redis: delivered to listeners at commit.
NOTIFY_INSERT = (
    "WITH stored AS ("
    "INSERT INTO webhook_events (kind, sid, params, received_at, attempts) "
    "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (kind, sid) DO NOTHING RETURNING id) "
    "SELECT id, pg_notify('webhook_events', id::text) FROM stored"
)


def measure(
    name: str, call: Callable[[int], object], iterations: int, per: int = 1
) -> dict[str, Any]:
    """CPU and wall time per call (per item, for calls that handle `per` items).

    The median of five batches, after a warm-up batch.
    """
    batch = max(1, iterations // 5)
    serial = 0
    for _ in range(min(batch, 200)):
        serial += 1
        call(serial)
    cpu, wall = [], []
    for _ in range(5):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(batch):
            serial += 1
            call(serial)
        cpu.append((time.process_time() - cpu0) / batch / per * 1e6)
        wall.append((time.perf_counter() - wall0) / batch / per * 1e6)
    result = {
        "cpu_us": round(statistics.median(cpu), 1),
        "wall_us": round(statistics.median(wall), 1),
    }
    log(f"{name:40s} cpu {result['cpu_us']:8.1f} us  wall {result['wall_us']:8.1f} us")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    n = args.iterations

    store = Store(db_name=f"telephony_bench_{secrets.token_hex(4)}", redis_db=args.redis_db)
    results: dict[str, Any] = {}
    engines: list[Engine] = []
    try:
        store.create()
        url = "postgresql+psycopg" + store.url.removeprefix("postgresql")
        factory = RequestFactory("AC" + secrets.token_hex(16), secrets.token_hex(16))
        validator = RequestValidator(factory.auth_token)
        signed = PUBLIC_BASE_URL + STATUS_PATH
        headers, body = factory.form(STATUS_PATH)
        payload = body.encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": STATUS_PATH,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "CONTENT_TYPE": headers["Content-Type"],
            "CONTENT_LENGTH": str(len(payload)),
        }

        def form(_: int) -> Any:
            return Request(environ | {"wsgi.input": io.BytesIO(payload)}).form

        parsed = form(0)
        params = parsed.to_dict(flat=True)
        signature = headers["X-Twilio-Signature"]
        assert validator.validate(signed, parsed, signature)

        results["form_parse (werkzeug request.form)"] = measure("form_parse", form, n)
        results["signature: RequestValidator.validate (today)"] = measure(
            "validate", lambda _: validator.validate(signed, parsed, signature), n
        )
        results["signature: compute_signature once + compare"] = measure(
            "compute once",
            lambda _: compare(validator.compute_signature(signed, parsed), signature),
            n,
        )
        key = factory.auth_token.encode()

        def fast_signature(_: int) -> bool:
            # Twilio's algorithm: the URL, then each name followed by its value, names in
            # order and a name's values in order, duplicates once. Sorting the unique
            # (name, value) pairs gives exactly that order, without twilio's per-name
            # getlist() and string concatenation in a loop.
            data = signed + "".join(k + v for k, v in sorted(set(parsed.items(multi=True))))
            digest = hmac.new(key, data.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(base64.b64encode(digest).decode(), signature)

        assert fast_signature(0)
        # The current code hands the validator a plain dict with getall(); older code
        # handed it werkzeug's MultiDict. Measured when the module has it.
        twilio_params: Any = getattr(security, "TwilioParams", None)
        if twilio_params is not None:
            plain = twilio_params(params)
            results["signature: compute_signature once over TwilioParams"] = measure(
                "compute once, TwilioParams",
                lambda _: compare(validator.compute_signature(signed, plain), signature),
                n,
            )
        results["signature: sorted (name, value) pairs, one HMAC"] = measure(
            "fast signature", fast_signature, n
        )
        results["form: urllib.parse.parse_qsl on the raw body"] = measure(
            "parse_qsl", lambda _: urllib.parse.parse_qsl(payload.decode()), n
        )
        results["normalise_phone (today, per incoming call)"] = measure(
            "normalise_phone", lambda _: normalise_phone("+16175550100"), n
        )

        now = datetime.now(UTC)
        tag = secrets.token_hex(4)

        def sid(i: int, variant: str) -> str:
            return f"CA{tag}{variant}{i:022x}"

        default = make_engine(url)
        no_ping = make_engine(url, pool_pre_ping=False)
        # One statement is its own transaction: AUTOCOMMIT spares the BEGIN and COMMIT
        # round trips that engine.begin() costs around it.
        autocommit = make_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT")
        engines.extend([default, no_ping, autocommit])

        def current(i: int) -> object:
            return record_event(
                default, kind="voice.status", sid=sid(i, "01"), params=params, now=now
            )

        def prebuilt(engine: Engine, variant: str) -> Callable[[int], object]:
            def call(i: int) -> object:
                with engine.begin() as connection:
                    return connection.execute(
                        PREBUILT,
                        {
                            "kind": "voice.status",
                            "sid": sid(i, variant),
                            "params": params,
                            "received_at": now,
                            "attempts": 0,
                        },
                    ).first()

            return call

        def raw(sql: str, variant: str, engine: Engine = no_ping) -> Callable[[int], object]:
            def call(i: int) -> object:
                with engine.begin() as connection:
                    return connection.exec_driver_sql(
                        sql, ("voice.status", sid(i, variant), Jsonb(params), now)
                    ).first()

            return call

        results["insert: record_event (today)"] = measure("record_event", current, n)
        results["insert: prebuilt Core statement"] = measure("prebuilt", prebuilt(default, "02"), n)
        results["insert: prebuilt, pool_pre_ping=False"] = measure(
            "prebuilt no ping", prebuilt(no_ping, "03"), n
        )
        results["insert: exec_driver_sql, pool_pre_ping=False"] = measure(
            "driver sql no ping", raw(RAW_INSERT, "04"), n
        )
        results["insert+pg_notify in one statement, no pre-ping"] = measure(
            "driver sql + notify", raw(NOTIFY_INSERT, "05"), n
        )
        results["insert: prebuilt, no pre-ping, AUTOCOMMIT"] = measure(
            "prebuilt no ping autocommit", prebuilt(autocommit, "06"), n
        )
        results["insert+pg_notify, no pre-ping, AUTOCOMMIT"] = measure(
            "notify no ping autocommit", raw(NOTIFY_INSERT, "07", autocommit), n
        )

        redis = connect_redis(store.redis_url, 0.25)
        work = WorkQueue(redis)
        base = 10_000_000

        def enqueue_pipeline(i: int) -> object:
            pipe = redis.pipeline()
            work.queue.enqueue_call(
                EVENT_JOB,
                args=(base * 2 + i,),
                job_id=event_job_id(base * 2 + i),
                result_ttl=0,
                failure_ttl=7 * 24 * 3600,
                pipeline=pipe,
            )
            return pipe.execute()

        results["enqueue: WorkQueue.enqueue_event (today, unique)"] = measure(
            "enqueue today", lambda i: work.enqueue_event(base + i), n
        )
        results["enqueue: enqueue_call in one pipeline, not unique"] = measure(
            "enqueue pipeline", enqueue_pipeline, n
        )

        def batch_of(size: int, offset: int, unique: bool) -> Callable[[int], object]:
            def call(i: int) -> object:
                ids = [base * offset + i * size + k for k in range(size)]
                if unique:
                    return work.enqueue_events(ids)
                pipe = redis.pipeline()
                work.queue.enqueue_call(
                    EVENTS_JOB,
                    args=(ids,),
                    job_id=events_job_id(ids),
                    result_ttl=0,
                    failure_ttl=7 * 24 * 3600,
                    pipeline=pipe,
                )
                return pipe.execute()

            return call

        for size in (2, 10):
            results[f"enqueue: enqueue_events of {size} (today), per event"] = measure(
                f"enqueue_events x{size}", batch_of(size, 3 + size, True), n // size, per=size
            )
            results[f"enqueue: {size} per job, one pipeline, not unique, per event"] = measure(
                f"pipeline x{size}", batch_of(size, 30 + size, False), n // size, per=size
            )
        nudges = Redis.from_url(store.redis_url)
        results["nudge: plain LPUSH of the event id"] = measure(
            "lpush", lambda i: nudges.lpush("bench:nudges", i), n
        )
        nudges.close()
        redis.close()
        print(json.dumps({"iterations": n, "per_call": results}, indent=2))
        return 0
    finally:
        for engine in engines:
            engine.dispose()
        store.drop()


if __name__ == "__main__":
    sys.exit(main())
