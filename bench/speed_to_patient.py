"""Speed to patient: from a missed call to the text-back reaching Twilio, on real processes.

    python bench/speed_to_patient.py [--steady-seconds 30] [--rate 10] [--burst 1000]
        [--jobs 1000] [--job-rounds 4] [--sender-rate 1] [--profile]

Runs what production runs: gunicorn with the Procfile's `web` line (gunicorn.conf.py), RQ
workers started as `telephony worker`, PostgreSQL (a fresh database, dropped afterwards),
Redis (its own db index, flushed before and after) and bench/fake_twilio.py answering like
Twilio's Messages API. TWILIO_API_BASE_URL points at the fake and Twilio credentials are set,
so the Twilio gateway sends; PUBLIC_BASE_URL is the gunicorn server, so the fake's signed
status callbacks reach it and pass the signature check. Practices are added with `telephony
practice add`. The patients' numbers come from an area code whose time zone is inside the
texting window now and for the length of the run (the compliance gate itself is asked), so
nothing waits for quiet hours; the practices' daily send cap is raised so that it does not
hold texts back either. Every call comes from a number of its own: one text each.

Scenarios, in one run:
1. steady: signed missed-call status webhooks (CallStatus=completed) at --rate a second for
   --steady-seconds; latency = the fake receiving that number's SMS minus the webhook being
   sent, split into its stages from the rows' own time stamps.
2. burst: --burst calls from as many numbers, as fast as --burst-senders threads send them;
   drain time (first webhook sent to last SMS received), texts per number (exactly 1).
3. jobs: with the worker stopped, --jobs outbox texts are written through the services
   layer (the webhook event stored and applied as the worker would) and their send jobs are
   queued in blocks, alternating with blocks of no-op jobs (bench/noop.py); then one
   `telephony worker` drains the queue. A block's time runs from its first job leaving the
   queue to the next block's first job leaving it (the queue's length, polled every
   millisecond), so it covers exactly its own jobs. Jobs/s of SMS vs no-op jobs.
4. rate limit: a worker with SMS_SENDER_RATE=--sender-rate; --rate-calls calls at once to
   each of --rate-practices practices; each sending number's rate from the fake's receive
   times, (n-1)/(last-first).
5. memory: PSS of every worker process after its runs (from /proc/<pid>/smaps_rollup).

One JSON document goes to stdout, progress to stderr. Everything started is stopped, the
database dropped and the Redis db flushed on the way out (also on an error, Ctrl-C or
SIGTERM). Each scenario reports the machine's load: CPU per role (web, rq workers, fake,
PostgreSQL, Redis, the benchmark) and what other people's processes used meanwhile; a
pure-Python probe at the start, between scenarios and at the end shows how fast the
(virtual) machine ran. --profile adds a pass of send jobs and one of no-op jobs, each on a
worker under cProfile, with the functions that cost the most per job.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.metadata
import itertools
import json
import math
import os
import platform
import pstats
import queue
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry
from sqlalchemy.orm import Session

from bench.fake_twilio import CALLBACK_DELAY
from bench.webhook import (
    PG_ADMIN_URL,
    REDIS_BASE,
    STATUS_PATH,
    RequestFactory,
    Server,
    Signer,
    child_pids,
    cpu_seconds,
    free_port,
    gunicorn_settings,
    http_request,
    log,
    machine_cpu,
    memory,
    procfile_web_argv,
    stop_on_sigterm,
    wait_ready,
)
from telephony_service.db import make_engine
from telephony_service.domain import compliance
from telephony_service.domain.phones import normalise_phone
from telephony_service.services.events import process, record_event
from telephony_service.workqueue import QUEUE_NAME, QUEUE_NAMES, SEND_JOB, send_job_id

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOOP_JOB = "bench.noop.noop"
# As workqueue.WorkQueue queues a send job.
FAILURE_TTL = 7 * 24 * 3600
# The practices' numbers (San Francisco); no patient area below uses 415.
PRACTICE_NUMBER = "+1415555{:04d}"
DAILY_CAP = 100_000
OPEN_ALL_WEEK = [f"{day}=08:00-20:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]

# The targets.
MIN_SMS_OVER_NOOP = 0.5
MIN_SMS_JOBS_PER_S = 60.0
MAX_P50_AT_RATE_MS = 20.0
MAX_P99_AT_RATE_MS = 50.0
MAX_RATE_OVER_LIMIT = 1.1
MAX_WORKER_PSS_MB = 80.0

# Where the patients live: the first area whose texting window (the compliance gate's own
# answer, state rules and holidays included) is open now and for the whole run is used.
# Together they cover every hour of the day: 08:00-20:00 somewhere from Puerto Rico (UTC-4)
# west to Hawaii (UTC-10), Guam (UTC+10) and, when it is night on every US clock, London.
# A number is the prefix, an exchange and four digits; only numbers that phonenumbers
# accepts and that map to the area's zones and state are used.
PATIENT_AREAS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Massachusetts (+1 617)", "+1617", ("555", "556", "557")),
    ("Colorado (+1 303)", "+1303", ("555", "556", "557")),
    ("Arizona (+1 602)", "+1602", ("555", "556", "557")),
    ("Washington (+1 206)", "+1206", ("555", "556", "557")),
    ("Alaska (+1 907)", "+1907", ("555", "556", "557")),
    ("Hawaii (+1 808)", "+1808", ("555", "556", "557")),
    ("Puerto Rico (+1 787)", "+1787", ("555", "556", "557")),
    ("Guam (+1 671)", "+1671", ("555", "482", "483")),
    ("London (+44 20)", "+4420", ("7946", "7947", "7948")),
)


# --- small helpers ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that was measured, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def distribution_ms(seconds: Sequence[float]) -> dict[str, Any]:
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "min_ms": round(min(seconds) * 1000, 1),
        "p50_ms": round(percentile(seconds, 50) * 1000, 1),
        "p90_ms": round(percentile(seconds, 90) * 1000, 1),
        "p99_ms": round(percentile(seconds, 99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 1),
    }


def median(values: Sequence[float], digits: int = 1) -> float:
    return round(statistics.median(values), digits)


def cpu_probe() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): how fast this (virtual)
    machine runs Python just now. Hosts drift by tens of percent between runs, invisibly
    from inside; compare runs' absolute figures only alongside this."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(1_000_000):
            total += number * number
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def versions() -> dict[str, str]:
    found = {}
    for name in (
        "rq",
        "redis",
        "SQLAlchemy",
        "psycopg",
        "twilio",
        "requests",
        "gunicorn",
        "Flask",
        "phonenumbers",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


# --- patients ---------------------------------------------------------------------------------


@dataclass
class PatientArea:
    label: str
    zones: tuple[str, ...]
    state: str | None
    numbers: Iterator[str]


def gate(phone: str, zone: str, at: datetime) -> compliance.Decision:
    """What the send path's compliance gate answers for a first automated text to `phone`."""
    return compliance.evaluate(
        at,
        channel=compliance.Channel.TEXT,
        purpose=compliance.Purpose.AUTOMATED,
        contact=compliance.ContactFacts(phone=phone, timezone=None, state=None, opted_out=False),
        history=compliance.History(attempts=[], automated_texts=[], practice_sent_today=0),
        policy=compliance.Policy(
            practice_timezone=zone, texting_window=None, daily_send_cap=DAILY_CAP
        ),
    )


def area_numbers(prefix: str, exchanges: Sequence[str]) -> Iterator[str]:
    for exchange in exchanges:
        for line in range(10_000):
            number = f"{prefix}{exchange}{line:04d}"
            if normalise_phone(number) == number:
                yield number


def choose_area(
    now: datetime, run_minutes: int, only: str | None = None
) -> tuple[PatientArea, list[dict[str, Any]]]:
    """The first area the gate lets a text reach now and every minute of the run (of the
    areas whose prefix starts with `only`, if given)."""
    tried: list[dict[str, Any]] = []
    fallback: PatientArea | None = None
    for label, prefix, exchanges in PATIENT_AREAS:
        if only is not None and not prefix.startswith(only):
            continue
        sample = next(area_numbers(prefix, exchanges), None)
        if sample is None:
            continue
        zones = compliance.contact_zones(sample, None)
        if not zones:
            continue
        state = compliance.state_for_number(sample)
        decision = gate(sample, zones[0], now)
        through = all(
            isinstance(gate(sample, zones[0], now + timedelta(minutes=m)), compliance.Allowed)
            for m in range(run_minutes + 1)
        )
        tried.append(
            {
                "area": label,
                "zones": list(zones),
                "local_time": now.astimezone(ZoneInfo(zones[0])).strftime("%a %H:%M"),
                "now": "allowed"
                if isinstance(decision, compliance.Allowed)
                else getattr(decision, "reason", str(decision)),
                f"open_for_{run_minutes}_min": through,
            }
        )
        area = PatientArea(label, zones, state, _matching(prefix, exchanges, zones, state))
        if through:
            return area, tried
        if fallback is None and isinstance(decision, compliance.Allowed):
            fallback = area
    if fallback is not None:
        log(f"no area stays open for {run_minutes} min; {fallback.label} is open now")
        return fallback, tried
    raise RuntimeError(f"no patient area is inside its texting window now: {tried}")


def _matching(
    prefix: str, exchanges: Sequence[str], zones: tuple[str, ...], state: str | None
) -> Iterator[str]:
    for number in area_numbers(prefix, exchanges):
        if (
            compliance.contact_zones(number, None) == zones
            and compliance.state_for_number(number) == state
        ):
            yield number


def take(area: PatientArea, count: int) -> list[str]:
    numbers = [number for _, number in zip(range(count), area.numbers, strict=False)]
    if len(numbers) < count:
        raise RuntimeError(f"{area.label} has only {len(numbers)} more usable numbers")
    return numbers


# --- webhooks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    caller: str
    sid: str
    signature: str
    body: str
    params: dict[str, str]


class CallMaker:
    """Missed-call status callbacks as Twilio posts them, signed for PUBLIC_BASE_URL.

    The fields are bench/webhook.py's; the signing is its Signer, checked against twilio's
    RequestValidator on the first few requests.
    """

    def __init__(self, account_sid: str, auth_token: str, public_url: str) -> None:
        template = RequestFactory(account_sid, auth_token).signers[STATUS_PATH].template
        self.signer = Signer(auth_token, public_url + STATUS_PATH, template)
        self.auth_token = auth_token
        self.tag = secrets.token_hex(4)
        self.serial = 0

    def call(self, caller: str, practice_number: str) -> Call:
        self.serial += 1
        values = {
            "CallSid": f"CA{self.tag}{self.serial:024x}",
            "Caller": caller,
            "From": caller,
            "Called": practice_number,
            "To": practice_number,
        }
        line = self.signer.line(values)
        if self.serial <= 3:
            self.signer.check(line, self.auth_token)
        signature, body = line.split("\t")
        return Call(caller, values["CallSid"], signature, body, self.signer.template | values)


@dataclass(frozen=True)
class Sent:
    caller: str
    at: float  # time.time() just before the request
    answer_s: float
    status: int


def send_calls(
    port: int, calls: Sequence[Call], *, senders: int, interval: float | None = None
) -> list[Sent]:
    """POST the calls from `senders` threads, a connection each request (as Twilio does);
    one every `interval` seconds on a fixed schedule, or as fast as they go."""
    work: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
    results: list[Sent] = []
    lock = threading.Lock()

    def sender() -> None:
        while (call := work.get()) is not None:
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": call.signature,
            }
            at, started = time.time(), time.perf_counter()
            try:
                status = http_request(port, "POST", STATUS_PATH, call.body, headers)[0]
            except (OSError, http.client.HTTPException):
                status = 0
            sent = Sent(call.caller, at, time.perf_counter() - started, status)
            with lock:
                results.append(sent)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    try:
        start = time.perf_counter()
        for index, call in enumerate(calls):
            if interval is not None:
                delay = start + index * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            work.put(call)
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join(timeout=30)
    return results


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    tmp: Path
    db_name: str
    redis_db: int
    servers: list[Server] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    db_created: bool = False
    redis: Redis | None = None
    pg: psycopg.Connection[Any] | None = None
    web: Server | None = None
    fake: Server | None = None
    account_sid: str = ""
    auth_token: str = ""
    public_url: str = ""
    # Storing and applying a missed call's event in the benchmark's own process, per call.
    prepare_ms_per_text: list[float] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"

    @property
    def redis_url(self) -> str:
        return f"{REDIS_BASE}/{self.redis_db}"

    @property
    def queue_key(self) -> str:
        return Queue(QUEUE_NAME, connection=self.r).key

    @property
    def r(self) -> Redis:
        assert self.redis is not None
        return self.redis

    @property
    def db(self) -> psycopg.Connection[Any]:
        assert self.pg is not None
        return self.pg

    def telephony(self, *args: str) -> str:
        """The `telephony` command, as an operator types it."""
        result = subprocess.run(
            [str(BIN / "telephony"), *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"telephony {' '.join(args)} failed:\n{result.stderr[-2000:]}")
        return result.stdout

    def start_fake(self, name: str, *, callbacks: bool) -> Server:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "bench.fake_twilio",
            "--port",
            str(port),
            "--auth-token",
            self.auth_token,
            "--account-sid",
            self.account_sid,
            *([] if callbacks else ["--no-callbacks"]),
        ]
        fake = Server(name, argv, port, self.tmp / f"{name}.log")
        self.servers.append(fake)
        fake.start(self.env)
        wait_ready(fake, lambda: http_request(port, "GET", "/_fake/counts")[0])
        return fake

    def start_worker(
        self, name: str, env: dict[str, str], *, argv: list[str] | None = None, wait: bool = True
    ) -> Server:
        worker = Server(
            name, argv or [str(BIN / "telephony"), "worker"], 0, self.tmp / f"{name}.log"
        )
        self.servers.append(worker)
        worker.start(env)
        if wait:
            deadline = time.monotonic() + 60
            while not any(w.pid == worker.pid for w in Worker.all(connection=self.r)):
                check_alive(worker)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not register in 60 s:\n{worker.log_tail()}")
                time.sleep(0.1)
        return worker

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:
                log(f"could not stop {server.name}: {exc}")
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.flushdb()
                self.redis.close()
        if self.db_created:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                # FORCE: a process that could not be stopped must not keep the database.
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.db_created = False


@dataclass(frozen=True)
class LoadMark:
    at: float
    busy: int
    total: int
    # CPU seconds so far of this benchmark's processes, by role.
    roles: dict[str, float]


def load_mark(stack: Stack) -> LoadMark:
    """The machine's CPU so far, and what this benchmark's processes used of it, by role:
    web (gunicorn master and workers), rq workers, fake Twilio, PostgreSQL (this database's
    backends), Redis, and the benchmark itself."""
    roles: dict[str, float] = defaultdict(float)
    for server in stack.servers:
        if server.process is None or server.process.poll() is not None:
            continue
        role = (
            "rq_workers"
            if server.name.startswith("worker")
            else "fake_twilio"
            if server.name.startswith("fake")
            else server.name
        )
        for pid in (server.pid, *child_pids(server.pid)):
            roles[role] += cpu_seconds(pid)
    if stack.pg is not None:
        roles["postgres"] = sum(cpu_seconds(pid) for pid in backend_pids(stack))
    roles["redis"] = sum(cpu_seconds(pid) for pid in redis_pids())
    own = os.times()
    roles["benchmark"] = own.user + own.system
    busy, total = machine_cpu()
    return LoadMark(time.monotonic(), busy, total, dict(roles))


def load_between(start: LoadMark, end: LoadMark) -> dict[str, Any]:
    """Shares of the whole machine (all cores = 100): busy, used by this benchmark, and used
    by anything else (other people's work on a shared machine: a disturbed run shows here);
    and each role's CPU in percent of one core (a worker near 100 is saturated)."""
    total = max(1, end.total - start.total)
    busy = 100 * (end.busy - start.busy) / total
    used = {role: end.roles[role] - start.roles.get(role, 0.0) for role in end.roles}
    ours = 100 * sum(used.values()) * os.sysconf("SC_CLK_TCK") / total
    wall = max(1e-9, end.at - start.at)
    return {
        "machine_busy_pct": round(busy, 1),
        "this_benchmark_pct": round(ours, 1),
        "others_pct": round(max(0.0, busy - ours), 1),
        "pct_of_one_core": {role: round(100 * cpu / wall, 1) for role, cpu in used.items()},
    }


def redis_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "redis-server":
                    found.append(int(entry.name))
    return found


def url_of(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def check_alive(server: Server) -> None:
    assert server.process is not None
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")


def fake_json(fake: Server, path: str) -> Any:
    status, _, body = http_request(fake.port, "GET", path)
    if status != 200:
        raise RuntimeError(f"fake {path} answered {status}: {body[:300]!r}")
    return json.loads(body)


def fake_texts(fake: Server) -> dict[str, list[dict[str, Any]]]:
    """Messages the fake created, by To, each {"at", "from"}, in arrival order."""
    by_to: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in fake_json(fake, "/_fake/requests?kind=message")["requests"]:
        if record["sid"] is None:
            continue  # refused: nothing was created
        form = record["form"]
        by_to[form["To"][0]].append({"at": record["at"], "from": form.get("From", [""])[0]})
    return by_to


def wait_for_texts(
    fake: Server, numbers: Sequence[str], *, timeout: float, idle: float = 60.0
) -> bool:
    """Until every number has a text (True), or no new one came for `idle` seconds or the
    time is up (False)."""
    wanted = set(numbers)
    deadline = time.monotonic() + timeout
    have, changed = -1, time.monotonic()
    while True:
        per_to = fake_json(fake, "/_fake/counts")["per_to"]
        count = sum(1 for number in wanted if per_to.get(number))
        if count == len(wanted):
            return True
        now = time.monotonic()
        if count != have:
            have, changed = count, now
        if now > deadline or now - changed > idle:
            log(f"only {count} of {len(wanted)} numbers got a text")
            return False
        time.sleep(0.5)


def settle(stack: Stack, fake: Server, timeout: float = 180.0) -> float | None:
    """Seconds until the work of the texts so far is done: every message's two status
    callbacks answered, the queue empty, every stored event applied (twice in a row)."""
    started = time.monotonic()
    calm = 0
    while time.monotonic() - started < timeout:
        counts = fake_json(fake, "/_fake/counts")
        callbacks = counts["callbacks_sent"] + counts["callbacks_failed"]
        row = stack.db.execute(
            "SELECT count(*) FROM webhook_events WHERE processed_at IS NULL"
        ).fetchone()
        unapplied = int(row[0]) if row else -1
        if (
            callbacks >= 2 * counts["messages"]
            and stack.r.llen(stack.queue_key) == 0
            and not unapplied
        ):
            calm += 1
            if calm == 2:
                return round(time.monotonic() - started, 1)
        else:
            calm = 0
        time.sleep(0.5)
    log("the queue did not settle")
    return None


def per_number(numbers: Sequence[str], by_to: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    counts = [len(by_to.get(number, [])) for number in numbers]
    zero = sum(1 for c in counts if c == 0)
    more = sum(1 for c in counts if c > 1)
    return {
        "numbers": len(numbers),
        "texts": sum(counts),
        "min": min(counts),
        "max": max(counts),
        "with_0": zero,
        "with_more_than_1": more,
        "duplicates": sum(c - 1 for c in counts if c > 1),
        "losses": zero,
        "exactly_one_each": zero == 0 and more == 0,
    }


def outbox(stack: Stack, numbers: Sequence[str]) -> dict[str, Any]:
    """What the database holds for these numbers: outbox rows per number and their statuses."""
    rows = stack.db.execute(
        "SELECT to_number, status FROM messages WHERE to_number = ANY(%s)", (list(numbers),)
    ).fetchall()
    per: Counter[str] = Counter(row[0] for row in rows)
    counts = [per.get(number, 0) for number in numbers]
    return {
        "rows": len(rows),
        "rows_per_number_min": min(counts),
        "rows_per_number_max": max(counts),
        "statuses": dict(Counter(row[1] for row in rows)),
    }


def stages(stack: Stack, sent: Sequence[Sent], first_text: dict[str, float]) -> dict[str, Any]:
    """Where a missed call's latency goes, from the rows' own time stamps (one clock).

    webhook: request sent -> event stored by the web process (received_at);
    to_event_job: stored -> its job started (processed_at is the job's start);
    event_job_and_send_pickup: event job started -> the send job's claim (claimed_at);
    send_to_twilio: claim -> the fake received the POST;
    twilio_answer_and_commit: the fake received it -> the answer was stored (sent_at).
    """
    callers = [s.caller for s in sent]
    rows = stack.db.execute(
        """
        SELECT e.params->>'From', e.received_at, e.processed_at, m.claimed_at, m.sent_at
        FROM webhook_events e
        JOIN messages m ON m.to_number = e.params->>'From'
        WHERE e.kind = 'voice.status' AND e.params->>'From' = ANY(%s)
        """,
        (callers,),
    ).fetchall()
    at = {s.caller: s.at for s in sent}
    parts: dict[str, list[float]] = defaultdict(list)
    for caller, received, processed, claimed, sent_at in rows:
        if None in (received, processed, claimed, sent_at) or caller not in first_text:
            continue
        parts["webhook"].append(received.timestamp() - at[caller])
        parts["to_event_job"].append(processed.timestamp() - received.timestamp())
        parts["event_job_and_send_pickup"].append(claimed.timestamp() - processed.timestamp())
        parts["send_to_twilio"].append(first_text[caller] - claimed.timestamp())
        parts["twilio_answer_and_commit"].append(sent_at.timestamp() - first_text[caller])
    return {
        name: {k: v for k, v in distribution_ms(values).items() if k in ("p50_ms", "p99_ms")}
        for name, values in parts.items()
    }


# --- scenarios --------------------------------------------------------------------------------


def scenario_steady(
    stack: Stack, maker: CallMaker, practice: str, callers: list[str], rate: float
) -> tuple[dict[str, Any], list[Sent]]:
    assert stack.web is not None and stack.fake is not None
    calls = [maker.call(caller, practice) for caller in callers]
    log(f"steady: {len(calls)} missed calls at {rate}/s")
    load0 = load_mark(stack)
    sent = send_calls(stack.web.port, calls, senders=4, interval=1 / rate)
    complete = wait_for_texts(stack.fake, callers, timeout=120)
    load1 = load_mark(stack)
    by_to = fake_texts(stack.fake)
    first = {n: min(t["at"] for t in by_to[n]) for n in callers if by_to.get(n)}
    latencies = [first[s.caller] - s.at for s in sent if s.caller in first]
    span = max(s.at for s in sent) - min(s.at for s in sent)
    return {
        "calls": len(calls),
        "rate_per_s": rate,
        "achieved_rate_per_s": round((len(sent) - 1) / span, 2) if span > 0 else None,
        "webhook_non_200": sum(1 for s in sent if s.status != 200),
        "webhook_answer": distribution_ms([s.answer_s for s in sent]),
        "all_texted": complete,
        "latency_call_to_sms": distribution_ms(latencies),
        "latency_stages": stages(stack, sent, first),
        "machine_load": load_between(load0, load1),
    }, sent


def scenario_burst(
    stack: Stack, maker: CallMaker, practice: str, callers: list[str], senders: int
) -> tuple[dict[str, Any], list[Sent]]:
    assert stack.web is not None and stack.fake is not None
    calls = [maker.call(caller, practice) for caller in callers]
    log(f"burst: {len(calls)} missed calls from {senders} senders")
    load0 = load_mark(stack)
    sent = send_calls(stack.web.port, calls, senders=senders)
    complete = wait_for_texts(stack.fake, callers, timeout=600)
    load1 = load_mark(stack)
    by_to = fake_texts(stack.fake)
    first = {n: min(t["at"] for t in by_to[n]) for n in callers if by_to.get(n)}
    start = min(s.at for s in sent)
    last_sent = max(s.at + s.answer_s for s in sent)
    drain = max(first.values()) - start if first else None
    return {
        "calls": len(calls),
        "senders": senders,
        "webhooks_answered_in_s": round(last_sent - start, 2),
        "webhook_rate_per_s": round(len(sent) / max(1e-9, last_sent - start), 1),
        "webhook_non_200": sum(1 for s in sent if s.status != 200),
        "all_texted": complete,
        "drain_s": round(drain, 2) if drain is not None else None,
        "texts_per_s_over_drain": round(len(first) / drain, 1) if drain else None,
        "latency_call_to_sms": distribution_ms(
            [first[s.caller] - s.at for s in sent if s.caller in first]
        ),
        "latency_stages": stages(stack, sent, first),
        "worker_phases": worker_phases(stack, callers),
        "machine_load": load_between(load0, load1),
    }, sent


def worker_phases(stack: Stack, callers: list[str]) -> dict[str, Any]:
    """How the worker(s) spent a burst, from the rows' time stamps: applying the missed calls
    (an event's processed_at is its job's start), then the sends (claimed_at), with the
    status callbacks that the fake posted meanwhile applied between them."""

    def span(first: datetime | None, last: datetime | None, count: int) -> dict[str, Any]:
        if first is None or last is None:
            return {"count": count}
        seconds = (last - first).total_seconds()
        return {
            "count": count,
            "first_to_last_s": round(seconds, 2),
            "per_s": round((count - 1) / seconds, 1) if seconds > 0 else None,
        }

    events = stack.db.execute(
        "SELECT min(processed_at), max(processed_at), count(*) FROM webhook_events "
        "WHERE kind = 'voice.status' AND params->>'From' = ANY(%s)",
        (callers,),
    ).fetchone()
    sends = stack.db.execute(
        "SELECT min(claimed_at), max(claimed_at), count(*) FROM messages WHERE to_number = ANY(%s)",
        (callers,),
    ).fetchone()
    assert events is not None and sends is not None
    meanwhile = stack.db.execute(
        "SELECT kind, count(*) FROM webhook_events WHERE processed_at BETWEEN %s AND %s "
        "GROUP BY kind",
        (sends[0], sends[1]),
    ).fetchall()
    return {
        "missed_call_events_applied": span(*events),
        "texts_sent": span(*sends),
        "events_applied_while_sending": {row[0]: int(row[1]) for row in meanwhile},
    }


@dataclass(frozen=True)
class Block:
    kind: str  # "sms" or "noop"
    size: int
    round: int | None  # None: warm-up or the closing marker, not measured


def plan_blocks(jobs: int, rounds: int, warmup: int) -> list[Block]:
    size = jobs // rounds
    blocks = [Block("sms", warmup, None), Block("noop", warmup, None)]
    for number in range(rounds):
        # Alternate which kind goes first, so drift of a shared machine hits both alike.
        kinds = ("sms", "noop") if number % 2 == 0 else ("noop", "sms")
        blocks += [Block(kind, size, number + 1) for kind in kinds]
    # Its first job leaving the queue ends the last measured block.
    blocks.append(Block("noop", 5, None))
    return blocks


def prepare_texts(stack: Stack, calls: Sequence[Call]) -> list[int]:
    """Outbox texts as a missed call leaves them: the event stored as the web process stores
    it, then applied as the worker's event job applies it (tasks, contacts, links, the
    pending text); the send jobs are left to the caller to queue."""
    engine = make_engine(stack.db_url.replace("postgresql://", "postgresql+psycopg://"))
    ids: list[int] = []
    started = time.perf_counter()
    try:
        with Session(engine) as session:
            for call in calls:
                now = datetime.now(UTC)
                event_id = record_event(
                    engine, kind="voice.status", sid=call.sid, params=call.params, now=now
                )
                assert event_id is not None
                ready = process(session, event_id, now=now, base_url=stack.public_url)
                if len(ready) != 1:
                    raise RuntimeError(f"a missed call left {len(ready)} texts to send, not 1")
                ids.extend(ready)
    finally:
        engine.dispose()
    stack.prepare_ms_per_text.append(1000 * (time.perf_counter() - started) / max(1, len(calls)))
    return ids


def queue_blocks(stack: Stack, blocks: Sequence[Block], message_ids: Sequence[int]) -> None:
    """All blocks in one MULTI/EXEC: the worker sees the whole queue at once."""
    jobs = []
    pending = iter(message_ids)
    serial = 0
    for block in blocks:
        for _ in range(block.size):
            if block.kind == "sms":
                message_id = next(pending)
                job_id = send_job_id(message_id)
                jobs.append(
                    Queue.prepare_data(
                        SEND_JOB,
                        args=(message_id,),
                        job_id=job_id,
                        description=job_id,
                        result_ttl=0,
                        failure_ttl=FAILURE_TTL,
                    )
                )
            else:
                serial += 1
                job_id = f"bench-noop-{serial}"
                jobs.append(
                    Queue.prepare_data(
                        NOOP_JOB,
                        args=(serial,),
                        job_id=job_id,
                        description=job_id,
                        result_ttl=0,
                        failure_ttl=FAILURE_TTL,
                    )
                )
    Queue(QUEUE_NAME, connection=stack.r).enqueue_many(jobs)


@dataclass
class Stamp:
    at: float
    worker_cpu: float
    fake_cpu: float
    pg_cpu: float
    busy: float
    total: float


def drain_blocks(
    stack: Stack, worker: Server, fake: Server, blocks: Sequence[Block], timeout: float = 900
) -> list[Stamp]:
    """Stamp the moment each block's first job leaves the queue, polling its length."""
    total = sum(block.size for block in blocks)
    thresholds = []
    left = total
    for block in blocks:
        thresholds.append(left - 1)  # the queue's length once this block's first job is out
        left -= block.size
    key = stack.queue_key
    backends: list[int] = []
    stamps: list[Stamp] = []

    def stamp() -> Stamp:
        busy, all_ = machine_cpu()
        return Stamp(
            time.perf_counter(),
            cpu_seconds(worker.pid),
            cpu_seconds(fake.pid),
            sum(cpu_seconds(pid) for pid in backends),
            busy,
            all_,
        )

    deadline = time.monotonic() + timeout
    while len(stamps) < len(blocks):
        length = stack.r.llen(key)
        while len(stamps) < len(blocks) and length <= thresholds[len(stamps)]:
            stamps.append(stamp())
            if len(stamps) == 2 and not backends:
                # The worker's connections exist by now (the warm-up is not measured).
                backends = backend_pids(stack)
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs did not drain in {timeout:.0f} s; {length} left")
        check_alive(worker)
        time.sleep(0.001)
    while stack.r.llen(key):
        time.sleep(0.01)
    return stamps


def backend_pids(stack: Stack) -> list[int]:
    rows = stack.db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (stack.db_name,),
    ).fetchall()
    return [int(row[0]) for row in rows]


def scenario_jobs(
    stack: Stack, maker: CallMaker, practice: str, callers: list[str], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """SMS send jobs vs no-op jobs on one `telephony worker` (RQ SimpleWorker)."""
    fake = stack.start_fake("fake-twilio-jobs", callbacks=False)
    env = stack.env | {"TWILIO_API_BASE_URL": url_of(fake)}
    blocks = plan_blocks(args.jobs, args.job_rounds, args.job_warmup)
    sms_total = sum(b.size for b in blocks if b.kind == "sms")
    log(f"jobs: writing {sms_total} outbox texts through the services layer")
    calls = [maker.call(caller, practice) for caller in callers[:sms_total]]
    message_ids = prepare_texts(stack, calls)
    if stack.r.llen(stack.queue_key):
        raise RuntimeError("the queue is not empty before the job blocks")
    queue_blocks(stack, blocks, message_ids)
    log(f"jobs: {len(blocks)} blocks queued; starting the worker")
    load0 = load_mark(stack)
    worker = stack.start_worker("worker-jobs", env, wait=False)
    stamps = drain_blocks(stack, worker, fake, blocks)
    load1 = load_mark(stack)
    worker_memory = memory(worker.pid)
    worker.stop()

    measured: list[dict[str, Any]] = []
    for index, block in enumerate(blocks[:-1]):
        a, b = stamps[index], stamps[index + 1]
        wall = b.at - a.at
        measured.append(
            {
                "kind": block.kind,
                "round": block.round,
                "jobs": block.size,
                "seconds": round(wall, 4),
                "jobs_per_s": round(block.size / wall, 1),
                "wall_ms_per_job": round(1000 * wall / block.size, 3),
                "worker_cpu_ms_per_job": round(
                    1000 * (b.worker_cpu - a.worker_cpu) / block.size, 3
                ),
                "postgres_cpu_ms_per_job": round(1000 * (b.pg_cpu - a.pg_cpu) / block.size, 3),
                "fake_twilio_cpu_ms_per_job": round(
                    1000 * (b.fake_cpu - a.fake_cpu) / block.size, 3
                ),
                "machine_busy_pct": round(100 * (b.busy - a.busy) / max(1, b.total - a.total), 1),
            }
        )
    rounds = [m for m in measured if m["round"] is not None]
    sms = {m["round"]: m for m in rounds if m["kind"] == "sms"}
    noop = {m["round"]: m for m in rounds if m["kind"] == "noop"}
    ratios = [sms[r]["jobs_per_s"] / noop[r]["jobs_per_s"] for r in sorted(sms)]

    def med(kind: dict[Any, dict[str, Any]], key: str) -> float:
        return median([m[key] for m in kind.values()], 3)

    statuses = stack.db.execute(
        "SELECT status, count(*) FROM messages WHERE id = ANY(%s) GROUP BY status",
        (message_ids,),
    ).fetchall()
    reoffered = stack.db.execute(
        "SELECT count(*) FROM messages WHERE id = ANY(%s) AND enqueued_at > created_at",
        (message_ids,),
    ).fetchone()
    result = {
        "worker": "telephony worker (RQ SimpleWorker, relay and scheduler threads), one process",
        "fake_twilio": "a second instance without status callbacks, so the queue holds only "
        "the blocks' own jobs",
        "rounds": args.job_rounds,
        "jobs_per_block": args.jobs // args.job_rounds,
        "sms_jobs_per_s": {
            "median": med(sms, "jobs_per_s"),
            "per_round": [sms[r]["jobs_per_s"] for r in sorted(sms)],
        },
        "noop_jobs_per_s": {
            "median": med(noop, "jobs_per_s"),
            "per_round": [noop[r]["jobs_per_s"] for r in sorted(noop)],
        },
        "sms_over_noop": {
            "median_of_round_ratios": round(statistics.median(ratios), 3),
            "per_round": [round(x, 3) for x in ratios],
            "ratio_of_medians": round(med(sms, "jobs_per_s") / med(noop, "jobs_per_s"), 3),
        },
        "per_job_median": {
            kind: {
                key: med(rows, key)
                for key in (
                    "wall_ms_per_job",
                    "worker_cpu_ms_per_job",
                    "postgres_cpu_ms_per_job",
                    "fake_twilio_cpu_ms_per_job",
                    "machine_busy_pct",
                )
            }
            for kind, rows in (("sms", sms), ("noop", noop))
        },
        "machine_load": load_between(load0, load1),
        "blocks": measured,
        "texts_sent": {row[0]: int(row[1]) for row in statuses},
        "missed_call_applied_in_bench_process_ms": round(stack.prepare_ms_per_text[0], 2),
        "fake_messages_created": fake_json(fake, "/_fake/counts")["messages"],
        "texts_reoffered_by_scheduler": int(reoffered[0]) if reoffered else None,
        "failed_jobs": sum(
            FailedJobRegistry(name, connection=stack.r).count for name in QUEUE_NAMES
        ),
    }

    profile = None
    if args.profile:
        profile = profile_jobs(
            stack, maker, practice, callers[sms_total:], env, args.jobs // args.job_rounds
        )
    fake.stop()
    return result, worker_memory, profile


def profile_jobs(
    stack: Stack,
    maker: CallMaker,
    practice: str,
    callers: list[str],
    env: dict[str, str],
    count: int,
) -> dict[str, Any]:
    """A pass of send jobs, then one of no-op jobs, each on a `telephony worker` under
    cProfile (it sees the main thread, where jobs run), and where their time goes."""
    fake = next(s for s in stack.servers if s.name == "fake-twilio-jobs")
    calls = [maker.call(caller, practice) for caller in callers[: count + 20]]
    ids = prepare_texts(stack, calls)
    passes: dict[str, Any] = {
        "note": "cProfile slows Python code several-fold: read the shares, not the absolute "
        "times. Per job = the pass's totals / all its jobs (20 warm-up and 5 marker jobs "
        "included).",
    }
    for kind in ("sms", "noop"):
        log(f"profile: {count} {kind} jobs under cProfile")
        blocks = [Block(kind, 20, None), Block(kind, count, 1), Block("noop", 5, None)]
        queue_blocks(stack, blocks, ids if kind == "sms" else [])
        out = stack.tmp / f"worker-{kind}.prof"
        argv = [sys.executable, "-m", "cProfile", "-o", str(out), str(BIN / "telephony"), "worker"]
        worker = stack.start_worker(f"worker-profiled-{kind}", env, argv=argv, wait=False)
        stamps = drain_blocks(stack, worker, fake, blocks)
        worker.stop()
        jobs = sum(block.size for block in blocks)
        rows = [
            (cumtime, tottime, calls_n, f"{short_path(path)}:{line}({name})")
            for (path, line, name), (_, calls_n, tottime, cumtime, _) in pstats.Stats(
                str(out)
            ).stats.items()
        ]

        def entry(row: tuple[float, float, int, str], jobs: int = jobs) -> dict[str, Any]:
            cum, own, calls_n, where = row
            return {
                "function": where,
                "calls_per_job": round(calls_n / jobs, 2),
                "cum_ms_per_job": round(1000 * cum / jobs, 3),
                "own_ms_per_job": round(1000 * own / jobs, 3),
            }

        # What runs once a job: the worker's start (imports, click) is called once a pass
        # and left out.
        per_job = [
            row
            for row in rows
            if row[2] / jobs >= 0.5 and not any(word in row[3] for word in IMPORT_TIME)
        ]
        by_cum = sorted(per_job, reverse=True)
        by_own = sorted(per_job, key=lambda row: row[1], reverse=True)
        passes[kind] = {
            "jobs": count,
            "file": f"{out} (kept with --keep-temp)",
            "wall_ms_per_job_under_profiler": round(
                1000 * (stamps[2].at - stamps[1].at) / count, 2
            ),
            "top_cumulative": [entry(r) for r in by_cum if r[0] / jobs >= 0.05e-3][:60],
            "top_own": [entry(r) for r in by_own[:30]],
        }
    return passes


# Frames of the worker's start (imports, class and regex building), not of its jobs.
IMPORT_TIME = (
    "importlib",
    "<module>",
    "builtins.exec",
    "builtins.compile",
    "__build_class__",
    "marshal.loads",
    "builtins.__import__",
    "re/_",
    "sre_",
)


def short_path(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def scenario_rate_limit(
    stack: Stack, maker: CallMaker, practices: list[str], callers: list[list[str]], rate: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    assert stack.web is not None and stack.fake is not None
    env = stack.env | {"SMS_SENDER_RATE": str(rate)}
    worker = stack.start_worker("worker-rate", env)
    load0 = load_mark(stack)
    calls = [
        maker.call(group[i], practice)
        for i in range(max(len(g) for g in callers))
        for practice, group in zip(practices, callers, strict=True)
        if i < len(group)
    ]
    every = [c for group in callers for c in group]
    log(
        f"rate limit: {len(calls)} calls at once to {len(practices)} practices, "
        f"SMS_SENDER_RATE={rate}"
    )
    sent = send_calls(stack.web.port, calls, senders=8)
    per_sender = max(len(g) for g in callers)
    complete = wait_for_texts(stack.fake, every, timeout=per_sender / rate + 90)
    by_to = fake_texts(stack.fake)
    senders: dict[str, Any] = {}
    worst = 0.0
    for practice, group in zip(practices, callers, strict=True):
        times = sorted(t["at"] for n in group for t in by_to.get(n, []) if t["from"] == practice)
        if len(times) < 2:
            senders[practice] = {"texts": len(times)}
            worst = math.inf
            continue
        measured = (len(times) - 1) / (times[-1] - times[0])
        gaps = [b - a for a, b in itertools.pairwise(times)]
        in_one_second = max(
            sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)
        )
        worst = max(worst, measured)
        senders[practice] = {
            "texts": len(times),
            "span_s": round(times[-1] - times[0], 2),
            "rate_per_s": round(measured, 3),
            "over_limit": round(measured / rate, 3),
            "min_gap_s": round(min(gaps), 3),
            "median_gap_s": round(statistics.median(gaps), 3),
            "max_gap_s": round(max(gaps), 3),
            "most_in_any_1s": in_one_second,
        }
    settled = settle(stack, stack.fake)
    load1 = load_mark(stack)
    worker_memory = memory(worker.pid)
    worker.stop()
    return {
        "sender_rate_limit_per_s": rate,
        "calls": len(calls),
        "webhook_non_200": sum(1 for s in sent if s.status != 200),
        "all_texted": complete,
        "per_number": per_number(every, by_to),
        "per_sender": senders,
        "worst_rate_over_limit": round(worst / rate, 3) if math.isfinite(worst) else None,
        "settled_after_s": settled,
        "machine_load": load_between(load0, load1),
    }, worker_memory


# --- the run ----------------------------------------------------------------------------------


def setup(stack: Stack, args: argparse.Namespace, practice_count: int) -> list[str]:
    log(f"database {stack.db_name}, redis db {stack.redis_db}, temp {stack.tmp}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{stack.db_name}"')
    stack.db_created = True
    stack.redis = Redis.from_url(stack.redis_url)
    stale = stack.r.dbsize()
    if stale:
        log(f"redis db {stack.redis_db} held {stale} keys; flushing it")
    stack.r.flushdb()

    stack.account_sid = "AC" + secrets.token_hex(16)
    stack.auth_token = secrets.token_hex(16)
    web_port = free_port()
    stack.public_url = f"http://127.0.0.1:{web_port}"
    env = dict(os.environ)
    # The venv's gunicorn and telephony on PATH, so the Procfile's lines run unchanged; the
    # repository on PYTHONPATH, so a worker can import bench.noop.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for name in ("SMS_SENDER_RATE", "WEB_ACCESS_LOG", "TWILIO_EDGE", "TWILIO_REGION"):
        env.pop(name, None)
    env.update(
        DATABASE_URL=stack.db_url,
        REDIS_URL=stack.redis_url,
        SECRET_KEY=secrets.token_urlsafe(32),
        PUBLIC_BASE_URL=stack.public_url,
        TWILIO_ACCOUNT_SID=stack.account_sid,
        TWILIO_AUTH_TOKEN=stack.auth_token,
        TELEPHONY_INSTANCE_PATH=str(stack.tmp / "instance"),
        PORT=str(web_port),
    )
    stack.env = env
    stack.fake = stack.start_fake("fake-twilio", callbacks=True)
    env["TWILIO_API_BASE_URL"] = url_of(stack.fake)

    stack.telephony("db", "upgrade")
    stack.pg = psycopg.connect(stack.db_url, autocommit=True)
    practices = []
    for index in range(practice_count):
        number = PRACTICE_NUMBER.format(100 + index)
        practice_id = (
            stack.telephony(
                "practice",
                "add",
                "--name",
                f"Bench Family Medicine {index + 1}",
                "--number",
                number,
                "--timezone",
                args.practice_timezone,
            )
            .strip()
            .splitlines()[-1]
        )
        stack.telephony("practice", "hours", "--practice", practice_id, *OPEN_ALL_WEEK)
        stack.telephony(
            "practice", "quiet-hours", "--practice", practice_id, "--daily-cap", str(DAILY_CAP)
        )
        practices.append(number)

    # The Procfile binds 0.0.0.0:$PORT; here loopback only (a command-line --bind wins over
    # the config file's and changes nothing else), and gunicorn's control socket in the temp
    # directory rather than one path per user.
    argv = [
        *procfile_web_argv(),
        "--bind",
        f"127.0.0.1:{web_port}",
        "--control-socket",
        str(stack.tmp / "web.ctl"),
    ]
    stack.web = Server("web", argv, web_port, stack.tmp / "web.log")
    stack.servers.append(stack.web)
    stack.web.start(env)
    wait_ready(stack.web, lambda: http_request(web_port, "GET", "/readyz")[0])
    return practices


def run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    started = time.monotonic()
    load_start = os.getloadavg()
    now = datetime.now(UTC)
    area, tried = choose_area(now, args.run_minutes, args.area)
    args.practice_timezone = area.zones[0]
    log(
        f"patients in {area.label} ({', '.join(area.zones)}), "
        f"local time {now.astimezone(ZoneInfo(area.zones[0])):%a %H:%M}"
    )
    steady_n = math.ceil(args.rate * args.steady_seconds)
    jobs_n = (
        args.jobs + args.job_warmup + (args.jobs // args.job_rounds + 20 if args.profile else 0)
    )
    warm_callers = take(area, args.warmup_calls)
    steady_callers = take(area, steady_n)
    burst_callers = take(area, args.burst)
    job_callers = take(area, jobs_n)
    rate_callers = [take(area, args.rate_calls) for _ in range(args.rate_practices)]

    busy0, total0 = machine_cpu()
    time.sleep(1.0)
    busy1, total1 = machine_cpu()
    # Nothing of the benchmark runs yet: all of this is someone else's.
    busy_before = round(100 * (busy1 - busy0) / max(1, total1 - total0), 1)
    if busy_before > 10:
        log(f"the machine is {busy_before}% busy before the start; figures will be noisy")
    probes = {"start": cpu_probe()}
    practices = setup(stack, args, 1 + args.rate_practices)
    main_practice, rate_practices = practices[0], practices[1:]
    assert stack.web is not None and stack.fake is not None
    maker = CallMaker(stack.account_sid, stack.auth_token, stack.public_url)
    settings = gunicorn_settings(stack.env)

    workers = [stack.start_worker(f"worker-{n + 1}", stack.env) for n in range(args.workers)]
    log(
        f"web pid {stack.web.pid} workers {stack.web.workers()}; "
        f"rq workers {[w.pid for w in workers]}; fake {url_of(stack.fake)}"
    )

    # A worker that has run a job or two (lazy imports, connection pools) is what a
    # practice's patients meet; a freshly started one is not measured.
    log(f"warm-up: {len(warm_callers)} missed calls")
    warm_calls = [maker.call(caller, main_practice) for caller in warm_callers]
    send_calls(stack.web.port, warm_calls, senders=1, interval=1 / args.rate)
    wait_for_texts(stack.fake, warm_callers, timeout=60)
    settle(stack, stack.fake)

    steady, _ = scenario_steady(stack, maker, main_practice, steady_callers, args.rate)
    log(
        f"steady: p50 {steady['latency_call_to_sms'].get('p50_ms')} ms, "
        f"p99 {steady['latency_call_to_sms'].get('p99_ms')} ms"
    )
    steady["settled_after_s"] = settle(stack, stack.fake)
    burst, _ = scenario_burst(stack, maker, main_practice, burst_callers, args.burst_senders)
    log(f"burst: drain {burst['drain_s']} s")
    burst["settled_after_s"] = settle(stack, stack.fake)
    probes["after_burst"] = cpu_probe()
    by_to = fake_texts(stack.fake)
    steady["per_number"] = per_number(steady_callers, by_to)
    burst["per_number"] = per_number(burst_callers, by_to)
    burst["outbox"] = outbox(stack, burst_callers)
    steady["outbox"] = outbox(stack, steady_callers)
    memories: dict[str, Any] = {}
    for worker in workers:
        memories[worker.name + " (steady + burst)"] = memory(worker.pid)
    web_memory = [memory(pid) for pid in stack.web.workers()]
    for worker in workers:
        worker.stop()

    jobs, jobs_memory, profile = scenario_jobs(stack, maker, main_practice, job_callers, args)
    memories["worker-jobs (sms + no-op blocks)"] = jobs_memory
    log(
        f"jobs: sms {jobs['sms_jobs_per_s']['median']}/s, "
        f"noop {jobs['noop_jobs_per_s']['median']}/s"
    )

    probes["after_jobs"] = cpu_probe()
    rate, rate_memory = scenario_rate_limit(
        stack, maker, rate_practices, rate_callers, args.sender_rate
    )
    memories["worker-rate (rate limit)"] = rate_memory
    log(f"rate limit: worst {rate['worst_rate_over_limit']} x the limit")

    # Late duplicates of the first scenarios (a re-offered or re-run job) would show by now.
    by_to = fake_texts(stack.fake)
    recheck = per_number(warm_callers + steady_callers + burst_callers, by_to)
    failed_jobs = sum(FailedJobRegistry(name, connection=stack.r).count for name in QUEUE_NAMES)
    row = stack.db.execute("SELECT count(*) FROM webhook_events WHERE error IS NOT NULL").fetchone()
    failed_events = int(row[0]) if row else None
    fake_counts = fake_json(stack.fake, "/_fake/counts")

    sms_rate = jobs["sms_jobs_per_s"]["median"]
    ratio = jobs["sms_over_noop"]["median_of_round_ratios"]
    worst_pss = max(m["pss_mb"] for m in memories.values())
    latency = steady["latency_call_to_sms"]
    p50, p99 = latency.get("p50_ms"), latency.get("p99_ms")
    targets: dict[str, Any] = {
        "latency_at_rate": {
            "target": f"p50 <= {MAX_P50_AT_RATE_MS:.0f} ms and p99 <= {MAX_P99_AT_RATE_MS:.0f} ms "
            f"at {args.rate:g} calls/s",
            "value": {"p50_ms": p50, "p99_ms": p99},
            "met": p50 is not None
            and p99 is not None
            and p50 <= MAX_P50_AT_RATE_MS
            and p99 <= MAX_P99_AT_RATE_MS,
        },
        "exactly_one_text_per_number": {
            "target": "every number exactly 1 text (no duplicates, no losses)",
            "value": {k: recheck[k] for k in ("min", "max", "with_0", "with_more_than_1")},
            "met": recheck["exactly_one_each"] and rate["per_number"]["exactly_one_each"],
        },
        "sms_job_over_noop": {
            "target": f">= {MIN_SMS_OVER_NOOP} x the no-op job's jobs/s",
            "value": ratio,
            "met": ratio >= MIN_SMS_OVER_NOOP,
        },
        "sms_jobs_per_worker": {
            "target": f">= {MIN_SMS_JOBS_PER_S:.0f} jobs/s per worker",
            "value": sms_rate,
            "met": sms_rate >= MIN_SMS_JOBS_PER_S,
        },
        "sender_rate": {
            "target": f"<= {MAX_RATE_OVER_LIMIT} x SMS_SENDER_RATE per sending number",
            "value": rate["worst_rate_over_limit"],
            "met": rate["worst_rate_over_limit"] is not None
            and rate["worst_rate_over_limit"] <= MAX_RATE_OVER_LIMIT,
        },
        "worker_pss": {
            "target": f"<= {MAX_WORKER_PSS_MB:.0f} MB per worker process",
            "value": worst_pss,
            "met": worst_pss <= MAX_WORKER_PSS_MB,
        },
    }
    targets["all_met"] = all(t["met"] for t in targets.values())
    return {
        "benchmark": "speed to patient: missed call -> text-back at Twilio, real processes",
        "summary": {
            "latency_at_rate_p50_ms": steady["latency_call_to_sms"].get("p50_ms"),
            "latency_at_rate_p99_ms": steady["latency_call_to_sms"].get("p99_ms"),
            "latency_at_rate_max_ms": steady["latency_call_to_sms"].get("max_ms"),
            "burst_drain_s": burst["drain_s"],
            "texts_per_number_min_max": [recheck["min"], recheck["max"]],
            "duplicates": recheck["duplicates"] + rate["per_number"]["duplicates"],
            "losses": recheck["losses"] + rate["per_number"]["losses"],
            "sms_jobs_per_s": sms_rate,
            "noop_jobs_per_s": jobs["noop_jobs_per_s"]["median"],
            "sms_over_noop": ratio,
            "per_sender_rate_per_s": {
                k: v.get("rate_per_s") for k, v in rate["per_sender"].items()
            },
            "worker_pss_mb_max": worst_pss,
            # Other people's CPU on the machine during each scenario (all cores = 100).
            "others_load_pct": {
                "steady": steady["machine_load"]["others_pct"],
                "burst": burst["machine_load"]["others_pct"],
                "jobs": jobs["machine_load"]["others_pct"],
                "rate_limit": rate["machine_load"]["others_pct"],
            },
        },
        "targets": targets,
        "steady": steady,
        "burst": burst,
        "per_number_recheck_at_end": recheck,
        "sms_job_throughput": jobs,
        "rate_limit": rate,
        "memory": {
            "rq_workers": memories,
            "web_workers_after_burst": web_memory,
        },
        "errors": {
            "failed_rq_jobs": failed_jobs,
            "webhook_events_with_error": failed_events,
            "fake_refused_creates": fake_counts["refused"],
            "fake_callbacks_failed": fake_counts["callbacks_failed"],
        },
        **({"profile": profile} if profile else {}),
        "setup": {
            "patients": {
                "area": area.label,
                "zones": list(area.zones),
                "state": area.state,
                "local_time_at_start": now.astimezone(ZoneInfo(area.zones[0])).isoformat(
                    timespec="minutes"
                ),
                "areas_tried": tried,
            },
            "practices": {
                "numbers": practices,
                "timezone": args.practice_timezone,
                "business_hours": "every day 08:00-20:00",
                "daily_send_cap": DAILY_CAP,
            },
            "gunicorn": {
                "argv": stack.web.argv,
                "workers": settings.get("workers"),
                "threads": settings.get("threads"),
                "worker_class": settings.get("worker_class"),
            },
            "rq_workers_for_steady_and_burst": args.workers,
            "fake_twilio_callback_delay_s": CALLBACK_DELAY,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "postgres": server_version(stack),
            "redis": str(stack.r.info("server").get("redis_version")),
            "packages": versions(),
            "source": source_state(),
            "cpu_probe_ms": probes | {"end": cpu_probe()},
            "machine_busy_before_start_pct": busy_before,
            "loadavg_at_start": load_start,
            "loadavg_at_end": os.getloadavg(),
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def source_state() -> dict[str, Any]:
    """Which code was measured: the commit, the files changed since, and a digest of the
    service's sources as they were read (others may be editing the tree)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return result.stdout.strip()

    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("telephony_service/**/*.py"), *ROOT.glob("workers/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed_files": git("status", "--porcelain").splitlines(),
        "service_source_sha256": digest.hexdigest()[:16],
    }


def server_version(stack: Stack) -> str:
    row = stack.db.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10.0, help="steady calls per second")
    parser.add_argument(
        "--warmup-calls", type=int, default=5, help="calls before the steady run, not measured"
    )
    parser.add_argument("--burst", type=int, default=1000, help="calls in the burst")
    parser.add_argument("--burst-senders", type=int, default=4)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="telephony worker processes for steady and burst (Procfile: 1)",
    )
    parser.add_argument("--jobs", type=int, default=1000, help="measured send jobs (and no-ops)")
    parser.add_argument("--job-rounds", type=int, default=4)
    parser.add_argument("--job-warmup", type=int, default=20)
    parser.add_argument("--sender-rate", type=float, default=1.0, help="SMS_SENDER_RATE")
    parser.add_argument("--rate-practices", type=int, default=2)
    parser.add_argument("--rate-calls", type=int, default=20, help="calls per practice")
    parser.add_argument(
        "--run-minutes",
        type=int,
        default=20,
        help="how long the patients' texting window must stay open",
    )
    parser.add_argument(
        "--area",
        default=None,
        help="only patient areas whose prefix starts with this (e.g. +1808); default: all",
    )
    parser.add_argument("--redis-db", type=int, default=15)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add a pass of send jobs under cProfile and report it",
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep logs (and the profile)")
    args = parser.parse_args(argv)
    if args.jobs % args.job_rounds:
        parser.error("--jobs must be a multiple of --job-rounds")

    tmp = Path(tempfile.mkdtemp(prefix="telephony-speed-"))
    stack = Stack(
        tmp=tmp, db_name=f"telephony_speed_{secrets.token_hex(4)}", redis_db=args.redis_db
    )
    try:
        with stop_on_sigterm():
            report = run(args, stack)
        print(json.dumps(report, indent=2))
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        try:
            stack.stop_all()
        except Exception as exc:
            log(f"cleanup: {exc}")
        if args.keep_temp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
