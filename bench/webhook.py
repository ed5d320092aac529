"""Benchmark of the Twilio webhooks under gunicorn, against a bare Flask app on the same settings.

    python bench/webhook.py [--duration S] [--rounds N] [--connections 16]

Builds a throwaway PostgreSQL database and uses its own Redis db index, starts the real app
with the Procfile's `web` line (bound to 127.0.0.1; max_requests off unless
--keep-max-requests, see start_stack) and bench/bare_app.py with the same gunicorn.conf.py,
then drives both with wrk (bench/replay.lua) replaying pre-signed Twilio-shaped requests:
every status callback has its own CallSid, so every one stores a row and hands its event to
an RQ job. Afterwards every stored row must be carried by exactly one queued job. Rounds
interleave bare-status, status, bare-incoming and incoming so that the noise of a shared
machine hits all four alike. One JSON object goes to stdout; progress goes to stderr.
Everything started is stopped, and the database dropped, on the way out (also on an error
or Ctrl-C).

Helpers: bench/profile_webhook.py (py-spy on the workers under this load) and
bench/webhook_parts.py (each step of a webhook alone, next to cheaper alternatives).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import platform
import resource
import runpy
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from telephony_service import migrate
from telephony_service.db import make_engine
from telephony_service.services import voice
from telephony_service.services.practices import PracticeCard, add_practice
from telephony_service.workqueue import QUEUE_NAME

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA_SCRIPT = BENCH / "replay.lua"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_BASE = "redis://127.0.0.1:6379"
PUBLIC_BASE_URL = "https://bench.example.test"
PRACTICE_NUMBER = "+16175550100"
PRACTICE_NAME = "Bench Family Dental"
STATUS_PATH = "/twilio/voice/status"
INCOMING_PATH = "/twilio/voice/incoming"
TARGETS = ("bare_status", "status", "bare_incoming", "incoming")

# What the service is held to (per connection count, see the report's "targets").
MIN_STATUS_RATIO = 0.25
MAX_STATUS_P99_MS = 50.0
MIN_INCOMING_RATIO = 0.8
MAX_WORKER_PSS_MB = 60.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- Twilio-shaped, signed requests -----------------------------------------------------------


class Signer:
    """Signs and encodes form bodies like Twilio, fast enough to pre-generate 10^5 of them.

    twilio's compute_signature plus urlencode cost ~100 us a request, which for a large
    run means seconds of idle server between warm-up and measurement. Only a few fields
    vary, so the static ones are quoted once; the result is checked against
    RequestValidator on the first requests (see `check`).
    """

    def __init__(self, auth_token: str, url: str, template: dict[str, str]) -> None:
        self.key = auth_token.encode("utf-8")
        self.url = url
        self.template = template
        self.keys = sorted(template)
        self.quoted = {k: urllib.parse.quote_plus(v) for k, v in template.items()}

    def line(self, values: dict[str, str]) -> str:
        """One line of a request file: "<signature>\\t<body>"."""
        params = self.template | values
        payload = self.url + "".join(k + params[k] for k in self.keys)
        digest = hmac.new(self.key, payload.encode("utf-8"), hashlib.sha1).digest()
        body = "&".join(
            k + "=" + (urllib.parse.quote_plus(values[k]) if k in values else self.quoted[k])
            for k in self.keys
        )
        return base64.b64encode(digest).decode("ascii") + "\t" + body

    def check(self, line: str, auth_token: str) -> None:
        signature, body = line.split("\t")
        params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        expected = RequestValidator(auth_token).compute_signature(self.url, params)
        if signature != expected or set(params) != set(self.template):
            raise AssertionError(f"pre-signed request does not match twilio's signature: {line}")


class RequestFactory:
    """Status callbacks and incoming calls as Twilio posts them, each with a fresh CallSid."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.auth_token = auth_token
        # The run tag keeps CallSids unique even against rows of an earlier run.
        self.run_tag = secrets.token_hex(4)
        self.serial = 0
        common = {
            "AccountSid": account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": "",
            "Called": PRACTICE_NUMBER,
            "CalledCity": "BOSTON",
            "CalledCountry": "US",
            "CalledState": "MA",
            "CalledZip": "02108",
            "Caller": "",
            "CallerCity": "CAMBRIDGE",
            "CallerCountry": "US",
            "CallerState": "MA",
            "CallerZip": "02139",
            "Direction": "inbound",
            "From": "",
            "FromCity": "CAMBRIDGE",
            "FromCountry": "US",
            "FromState": "MA",
            "FromZip": "02139",
            "To": PRACTICE_NUMBER,
            "ToCity": "BOSTON",
            "ToCountry": "US",
            "ToState": "MA",
            "ToZip": "02108",
        }
        status = common | {
            "CallStatus": "completed",
            "CallDuration": "37",
            "Duration": "1",
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
            "Timestamp": "Thu, 27 Nov 2025 17:16:00 +0000",
        }
        incoming = common | {
            "CallStatus": "ringing",
            "CallToken": "%7B%22parentCallInfoToken%22%3A%22" + "a1b2c3d4" * 24 + "%22%7D",
            "StirVerstat": "TN-Validation-Passed-A",
        }
        self.signers = {
            STATUS_PATH: Signer(auth_token, PUBLIC_BASE_URL + STATUS_PATH, status),
            INCOMING_PATH: Signer(auth_token, PUBLIC_BASE_URL + INCOMING_PATH, incoming),
        }

    def values(self) -> dict[str, str]:
        self.serial += 1
        caller = f"+1857555{self.serial % 10000:04d}"
        return {
            "CallSid": f"CA{self.run_tag}{self.serial:024x}",
            "Caller": caller,
            "From": caller,
        }

    def line(self, path: str, **overrides: str) -> str:
        return self.signers[path].line(self.values() | overrides)

    def write(self, file: Path, path: str, count: int) -> Path:
        signer = self.signers[path]
        with file.open("w") as out:
            for index in range(count):
                line = signer.line(self.values())
                if index < 3:
                    signer.check(line, self.auth_token)
                out.write(line + "\n")
        return file

    def form(self, path: str, **overrides: str) -> tuple[dict[str, str], str]:
        """Headers and body for a single request sent from Python (probes, captures)."""
        signature, body = self.line(path, **overrides).split("\t")
        return (
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
            body,
        )


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def procfile_web_argv() -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web":
            return shlex.split(command)
    raise RuntimeError("the Procfile has no web line")


def gunicorn_settings(env: dict[str, str]) -> dict[str, Any]:
    """gunicorn.conf.py as gunicorn reads it, with the benchmark's environment."""
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # Hooks (post_fork and friends) are settings too; name them rather than drop them.
    return {
        k: f"<hook {v.__name__}>" if callable(v) else v
        for k, v in sorted(namespace.items())
        if k in names
    }


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("wb") as log_file:
            # Own session: Ctrl-C in the terminal reaches only the benchmark, which then
            # stops the server itself, in order.
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self) -> list[int]:
        return sorted(child_pids(self.pid))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def booted_workers(self) -> int:
        return self.log_path.read_text(errors="replace").count("Booting worker with pid")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        # SIGINT is gunicorn's quick shutdown; idle workers leave at once. The group also
        # holds the workers, in case the master died first.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        # Workers left behind by a master that died first.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ")"
        # do not.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the command name.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(server: Server) -> float:
    """CPU of a gunicorn master and all its workers, past ones included.

    Workers are replaced after max_requests; once the master has reaped one, its CPU time
    is in the master's cutime/cstime, so the sum does not drop when a worker goes.
    """
    return cpu_seconds(server.pid, reaped_children=True) + sum(
        cpu_seconds(pid) for pid in server.workers()
    )


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, for how loaded it was during a run."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def memory(pid: int) -> dict[str, float]:
    """PSS, RSS and USS in MB from smaps_rollup."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        kb[name] = int(rest.split()[0])
    return {
        "pid": pid,
        "pss_mb": round(kb["Pss"] / 1024, 1),
        "rss_mb": round(kb["Rss"] / 1024, 1),
        "uss_mb": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1),
    }


def process_age(pid: int) -> float:
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 1)


def http_request(
    port: int, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body.encode("utf-8"), headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def wait_ready(server: Server, probe: Callable[[], int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if probe() == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} was not ready in {timeout:.0f} s:\n{server.log_tail()}")


# --- database and redis -----------------------------------------------------------------------


@dataclass
class Store:
    """The benchmark's own database and Redis db index, and the counts it checks."""

    db_name: str
    redis_db: int
    created: bool = False
    redis: Redis | None = None
    conn: psycopg.Connection[Any] | None = None
    queue_key: str = field(default="")
    # The queued jobs read so far. Nothing consumes the queue during a run, so it only
    # grows and is read from where the last read stopped.
    jobs_seen: int = 0
    queued_events: Counter[int] = field(default_factory=Counter)
    unreadable_jobs: int = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"

    @property
    def redis_url(self) -> str:
        return f"{REDIS_BASE}/{self.redis_db}"

    def create(self) -> PracticeCard:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.created = True
        migrate.upgrade(f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db_name}")
        engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db_name}")
        try:
            with Session(engine) as session:
                practice = add_practice(
                    session,
                    name=PRACTICE_NAME,
                    number=PRACTICE_NUMBER,
                    timezone="America/New_York",
                    booking_url=None,
                    now=datetime.now(UTC),
                )
                card = PracticeCard(practice.id, practice.name, practice.twilio_number)
                session.commit()
        finally:
            engine.dispose()
        self.redis = Redis.from_url(self.redis_url)
        stale = self.redis.dbsize()
        if stale:
            log(f"redis db {self.redis_db} held {stale} keys; flushing it")
        self.redis.flushdb()
        self.queue_key = Queue(QUEUE_NAME, connection=self.redis).key
        self.conn = psycopg.connect(self.url, autocommit=True)
        return card

    def rows(self) -> int:
        assert self.conn is not None
        row = self.conn.execute("SELECT count(*) FROM webhook_events").fetchone()
        assert row is not None
        return int(row[0])

    def read_new_jobs(self) -> None:
        """Collect the event ids carried by jobs queued since the last call.

        A job carries one event id, or a list of them when the app hands several events
        that arrived together to one job; so stored rows are checked against events, not
        against the number of jobs.
        """
        assert self.redis is not None
        raw_ids = self.redis.lrange(self.queue_key, self.jobs_seen, -1)
        ids = [job_id.decode() if isinstance(job_id, bytes) else job_id for job_id in raw_ids]
        for job in Job.fetch_many(ids, connection=self.redis):
            if job is None:
                self.unreadable_jobs += 1
                continue
            arg: Any = job.args[0] if job.args else -1
            for event_id in arg if isinstance(arg, list) else [arg]:
                self.queued_events[int(event_id)] += 1
        self.jobs_seen += len(ids)

    def counts(self) -> tuple[int, int, int]:
        """(rows stored, jobs queued, events those jobs carry)."""
        self.read_new_jobs()
        return self.rows(), self.jobs_seen, sum(self.queued_events.values())

    def settled_counts(self) -> tuple[int, int, int]:
        """Counts once the work still in flight when wrk stopped is done.

        The server finishes requests wrk abandoned at its deadline, and the app may hand
        event ids to Redis from a background thread a little after it answered.
        """
        previous = self.counts()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.25)
            current = self.counts()
            if current == previous and current[0] == current[2]:
                return current
            previous = current
        return previous

    def row_ids(self) -> set[int]:
        assert self.conn is not None
        return {int(row[0]) for row in self.conn.execute("SELECT id FROM webhook_events")}

    def backend_pids(self) -> list[int]:
        assert self.conn is not None
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.db_name,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.flushdb()
                self.redis.close()
        if self.created:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                # FORCE: a server that could not be stopped must not keep the database.
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.created = False


# --- load --------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: Server
    path: str
    # Real status callbacks must never repeat a CallSid; the rest may cycle through a pool.
    unique: bool


def run_wrk(
    target: Target,
    request_file: Path,
    *,
    duration: int,
    connections: int,
    threads: int,
    store: Store,
    measure_cpu: bool,
) -> dict[str, Any]:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{target.server.port}",
        "--",
        str(request_file),
        target.path,
        "unique" if target.unique else "cycle",
        str(threads),
    ]
    server_cpu = server_cpu_seconds(target.server)
    worker_cpu = {pid: cpu_seconds(pid) for pid in target.server.workers()}
    boots = target.server.booted_workers()
    pg_cpu = {pid: cpu_seconds(pid) for pid in store.backend_pids()} if measure_cpu else {}
    rows_before = store.counts() if target.unique else (0, 0, 0)
    busy0, total0 = machine_cpu()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=duration + 120)
        except BaseException:
            # Ctrl-C, SIGTERM or a hung wrk: end it and reap it before going on.
            process.kill()
            process.wait(timeout=10)
            raise
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = machine_cpu()
    server_cpu_s = server_cpu_seconds(target.server) - server_cpu
    live = set(target.server.workers())
    worker_split = sorted(
        (round(cpu_seconds(pid) - start, 2) for pid, start in worker_cpu.items() if pid in live),
        reverse=True,
    )
    # Backends that closed during the run are missed (a replaced worker's pool); backends
    # opened during it count from zero. Close enough to tell where the time goes.
    pg_cpu_s = (
        sum(cpu_seconds(pid) - pg_cpu.get(pid, 0.0) for pid in store.backend_pids())
        if measure_cpu
        else 0.0
    )
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stdout} {stderr}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{stdout}\n{stderr}")
    raw = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    result: dict[str, Any] = {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p90_ms": raw["latency_us"]["p90"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
        # wrk counts HTTP status > 399 as errors; 1xx/3xx never happen here.
        "non_2xx": errors["status"],
        "socket_errors": socket_errors,
        "errors": errors["status"] + socket_errors,
        "ok": raw["requests"] - errors["status"],
        # Requests handed to wrk but not answered when it stopped (plus the one wrk uses
        # to check the script): the most that can have been stored without being counted.
        "unanswered_at_stop": raw["calls"] - raw["requests"],
        "repeated_requests": raw["wrapped"],
        "cpu": {
            "machine_busy_pct": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
            "server_s": round(server_cpu_s, 2),
            "server_us_per_request": round(1e6 * server_cpu_s / max(1, raw["requests"])),
            # Per worker (those alive through the run). Keep-alive connections stay with the
            # worker that accepted them, and with 16 of them one worker sometimes gets most:
            # then one core idles and the run is slow. This shows it when it happens.
            "worker_split_s": worker_split,
            # Workers replaced during the run (max_requests): each costs a short dip.
            "worker_restarts": target.server.booted_workers() - boots,
            # Includes building the requests in wrk's init(), before its clock starts.
            "wrk_s": round(
                (children1.ru_utime - children0.ru_utime)
                + (children1.ru_stime - children0.ru_stime),
                2,
            ),
        },
    }
    # Memory after every run, to tell growth (a leak, a cache) from a one-off cost.
    with contextlib.suppress(OSError):
        result["worker_pss_mb"] = [memory(pid)["pss_mb"] for pid in target.server.workers()]
    if measure_cpu:
        result["cpu"]["postgres_backends_s"] = round(pg_cpu_s, 2)
        result["cpu"]["postgres_us_per_request"] = round(1e6 * pg_cpu_s / max(1, raw["requests"]))
    if target.unique:
        rows_after = store.settled_counts()
        result["rows_inserted"] = rows_after[0] - rows_before[0]
        result["jobs_enqueued"] = rows_after[1] - rows_before[1]
        result["events_enqueued"] = rows_after[2] - rows_before[2]
    return result


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(rounds: list[dict[str, dict[str, Any]]], endpoints: list[str]) -> dict[str, Any]:
    per_target: dict[str, Any] = {}
    for name in [t for t in TARGETS if t.removeprefix("bare_") in endpoints]:
        runs = [r[name] for r in rounds]
        per_target[name] = {
            "rps": [run["rps"] for run in runs],
            "p50_ms": [run["p50_ms"] for run in runs],
            "p99_ms": [run["p99_ms"] for run in runs],
            "errors": [run["errors"] for run in runs],
            "median": {
                "rps": median([run["rps"] for run in runs]),
                "p50_ms": median([run["p50_ms"] for run in runs]),
                "p99_ms": median([run["p99_ms"] for run in runs]),
                "errors": median([run["errors"] for run in runs]),
            },
        }
    ratios: dict[str, Any] = {}
    for real in endpoints:
        bare = f"bare_{real}"
        paired = [r[real]["rps"] / r[bare]["rps"] for r in rounds]
        ratios[f"{real}_over_bare"] = {
            # Paired within a round: the two runs are back to back, so slow drift of the
            # shared machine cancels out. This is the figure the targets are judged on.
            "median_of_round_ratios": median(paired),
            "per_round": [round(x, 3) for x in paired],
            "ratio_of_medians": round(
                per_target[real]["median"]["rps"] / per_target[bare]["median"]["rps"], 3
            ),
        }
    return {"per_target": per_target, "ratios": ratios}


# --- the benchmark -----------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (a supervisor, `timeout`) takes the same cleanup path as Ctrl-C."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def capture_responses(
    real: Server, factory: RequestFactory, card: PracticeCard, tmp: Path
) -> tuple[Path, dict[str, Any]]:
    """The real endpoints' answers, for the bare app to send byte for byte."""
    captured: dict[str, Any] = {}
    # "ringing" is not a terminal status, so this probe stores nothing; the answer is the
    # same empty TwiML a completed call gets.
    probes = {
        "status": (STATUS_PATH, {"CallStatus": "ringing"}, voice.empty()),
        "incoming": (INCOMING_PATH, {}, voice.greeting(card, PUBLIC_BASE_URL)),
    }
    for name, (path, overrides, expected) in probes.items():
        headers, body = factory.form(path, **overrides)
        status, content_type, payload = http_request(real.port, "POST", path, body, headers)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {payload[:300]!r}")
        if payload != expected.encode("utf-8"):
            raise RuntimeError(f"{path} answered other bytes than voice.py builds: {payload!r}")
        captured[name] = {
            "path": path,
            "body": payload.decode("utf-8"),
            "content_type": content_type,
        }
    file = tmp / "bare_responses.json"
    file.write_text(json.dumps(captured))
    return file, captured


def check_bare(bare: Server, factory: RequestFactory, captured: dict[str, Any]) -> dict[str, Any]:
    checks = {}
    for name, entry in captured.items():
        headers, body = factory.form(entry["path"])
        status, content_type, payload = http_request(
            bare.port, "POST", entry["path"], body, headers
        )
        same = (
            status == 200
            and payload == entry["body"].encode("utf-8")
            and content_type == entry["content_type"]
        )
        if not same:
            raise RuntimeError(f"bare {entry['path']} differs: {status} {content_type} {payload!r}")
        checks[name] = {
            "identical": same,
            "content_type": content_type,
            "bytes": len(payload),
        }
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # wrk takes whole seconds only.
    parser.add_argument("--duration", type=int, default=6, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    # Five rounds: a run where most connections landed on one worker is an outlier that a
    # median of five absorbs.
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--endpoints",
        type=lambda text: [e for e in ("status", "incoming") if e in text.split(",")],
        default=["status", "incoming"],
        help="which real endpoints to measure, each with its bare twin (default status,incoming)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1 is cheapest)")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--keep-temp", action="store_true", help="keep request files and logs")
    parser.add_argument(
        "--keep-max-requests",
        action="store_true",
        help="keep gunicorn.conf.py's max_requests (workers recycled mid-run; noisy baseline)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    if not args.endpoints:
        parser.error("--endpoints takes status, incoming or both")
    if args.connections < args.wrk_threads:
        parser.error("--connections must be at least --wrk-threads")

    tmp = Path(tempfile.mkdtemp(prefix="telephony-bench-"))
    store = Store(db_name=f"telephony_bench_{secrets.token_hex(4)}", redis_db=args.redis_db)
    servers: list[Server] = []
    started = time.monotonic()
    try:
        with stop_on_sigterm():
            report = run(args, tmp, store, servers)
        report["wall_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(report, indent=2))
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        try:
            store.drop()
        except Exception as exc:
            log(f"could not drop database {store.db_name}: {exc}")
        if args.keep_temp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Stack:
    """The two servers, ready, and what is needed to send them requests."""

    real: Server
    bare: Server
    factory: RequestFactory
    card: PracticeCard
    settings: dict[str, Any]
    web_argv: list[str]
    responses: dict[str, Any]


def start_stack(
    tmp: Path, store: Store, servers: list[Server], *, keep_max_requests: bool = False
) -> Stack:
    """Database, Redis, the real app as the Procfile runs it and the bare app beside it."""
    log(f"database {store.db_name}, redis db {store.redis_db}, temp {tmp}")
    card = store.create()

    account_sid = "AC" + secrets.token_hex(16)
    auth_token = secrets.token_hex(16)
    factory = RequestFactory(account_sid, auth_token)
    env = dict(os.environ)
    # The venv's gunicorn, as `gunicorn` on PATH, so the Procfile line runs unchanged.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DATABASE_URL=store.url,
        REDIS_URL=store.redis_url,
        SECRET_KEY=secrets.token_urlsafe(32),
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        TWILIO_ACCOUNT_SID=account_sid,
        TWILIO_AUTH_TOKEN=auth_token,
        TELEPHONY_INSTANCE_PATH=str(tmp / "instance"),
    )
    web_argv = procfile_web_argv()
    real_port, bare_port = free_port(), free_port()

    # The Procfile's bind is 0.0.0.0:$PORT; the benchmark listens on loopback only (a
    # command-line --bind overrides the config file's and changes nothing else). gunicorn
    # 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), which
    # the two servers, and anyone else's gunicorn here, would take from each other.
    #
    # max_requests (20000) recycles a worker every few seconds at the bare app's rate, and
    # after each recycle the replaced worker's keep-alive connections reconnect to the one
    # still up: the rest of that run is served by one core, and the bare baseline halves
    # at random. So by default both servers run without it (same settings for both still);
    # --keep-max-requests measures the config as it is, recycling included.
    def local(port: int, name: str) -> list[str]:
        argv = ["--bind", f"127.0.0.1:{port}", "--control-socket", str(tmp / f"{name}.ctl")]
        return argv if keep_max_requests else [*argv, "--max-requests", "0"]

    real = Server("real", [*web_argv, *local(real_port, "real")], real_port, tmp / "real.log")
    bare_argv = [a if "create_app()" not in a else "bench.bare_app:create_app()" for a in web_argv]
    bare = Server("bare", [*bare_argv, *local(bare_port, "bare")], bare_port, tmp / "bare.log")
    servers.extend([real, bare])

    real.start(env | {"PORT": str(real_port)})
    wait_ready(real, lambda: http_request(real_port, "GET", "/readyz")[0])
    file, captured = capture_responses(real, factory, card, tmp)
    bare.start(env | {"PORT": str(bare_port), "BENCH_BARE_RESPONSES": str(file)})
    status_probe = factory.form(STATUS_PATH)
    wait_ready(bare, lambda: http_request(bare_port, "POST", STATUS_PATH, status_probe[1])[0])
    identical = check_bare(bare, factory, captured)
    settings = gunicorn_settings(env | {"PORT": str(real_port)})
    for server in (real, bare):
        # Ready means one worker answers; the others may still be forking.
        deadline = time.monotonic() + 20
        while len(server.workers()) < settings["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
    log(
        f"real pid {real.pid} workers {real.workers()}; "
        f"bare pid {bare.pid} workers {bare.workers()}"
    )
    return Stack(real, bare, factory, card, settings, web_argv, identical)


def run(args: argparse.Namespace, tmp: Path, store: Store, servers: list[Server]) -> dict[str, Any]:
    stack = start_stack(tmp, store, servers, keep_max_requests=args.keep_max_requests)
    real, bare, factory = stack.real, stack.bare, stack.factory
    targets = {
        "bare_status": Target("bare_status", bare, STATUS_PATH, unique=False),
        "status": Target("status", real, STATUS_PATH, unique=True),
        "bare_incoming": Target("bare_incoming", bare, INCOMING_PATH, unique=False),
        "incoming": Target("incoming", real, INCOMING_PATH, unique=False),
    }
    # Pools for targets that may repeat a request; unique files are made per run below.
    pools = {
        "bare_status": factory.write(tmp / "bare_status.txt", STATUS_PATH, 5000),
        "bare_incoming": factory.write(tmp / "bare_incoming.txt", INCOMING_PATH, 5000),
        "incoming": factory.write(tmp / "incoming.txt", INCOMING_PATH, 5000),
    }
    rows_at_start = store.counts()
    rounds: list[dict[str, dict[str, Any]]] = []
    status_runs: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        results: dict[str, dict[str, Any]] = {}
        for name in [t for t in TARGETS if t.removeprefix("bare_") in args.endpoints]:
            target = targets[name]
            for phase, seconds in (("warmup", args.warmup), ("measure", args.duration)):
                if target.unique:
                    # Sized from the bare app's rate just measured (the real endpoint is not
                    # faster), with a wide margin; a shortfall is counted, not hidden.
                    ceiling = results["bare_status"]["rps"]
                    count = int(ceiling * seconds * 1.5) + 2000
                    request_file = factory.write(
                        tmp / f"status_{number}_{phase}.txt", STATUS_PATH, count
                    )
                else:
                    request_file = pools[name]
                result = run_wrk(
                    target,
                    request_file,
                    duration=seconds,
                    connections=args.connections,
                    threads=args.wrk_threads,
                    store=store,
                    measure_cpu=target.server is real,
                )
                if target.unique:
                    request_file.unlink()
                    status_runs.append({"round": number, "phase": phase, **result})
                if phase == "measure":
                    results[name] = result
            r = results[name]
            log(
                f"round {number} {name:13s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}  "
                f"busy {r['cpu']['machine_busy_pct']}%  workers {r['cpu']['worker_split_s']} s"
            )
        rounds.append(results)

    # Memory right after the load, before anything is stopped.
    real_workers = [memory(pid) | {"age_s": process_age(pid)} for pid in real.workers()]
    bare_workers = [memory(pid) | {"age_s": process_age(pid)} for pid in bare.workers()]
    rows_total, jobs_total, events_total = (
        now - start for now, start in zip(store.settled_counts(), rows_at_start, strict=True)
    )
    # Exact check: every stored row is carried by exactly one queued job, and no job
    # carries an event that is not stored.
    stored = store.row_ids()
    queued = store.queued_events
    missing = len(stored - queued.keys())
    unknown = len(queued.keys() - stored)
    duplicated = sum(1 for count in queued.values() if count > 1)

    summary = summarize(rounds, args.endpoints)
    ok_total = sum(run["ok"] for run in status_runs)
    unanswered = sum(run["unanswered_at_stop"] for run in status_runs)
    repeated = sum(run["repeated_requests"] for run in status_runs)
    status_errors = sum(run["errors"] for run in status_runs)
    accounting = {
        "status_runs_including_warmup": len(status_runs),
        "status_2xx_total": ok_total,
        "status_errors_total": status_errors,
        "webhook_events_rows_inserted": rows_total,
        "rq_queue_length": jobs_total,
        # Jobs may carry several events each (the app batches events that arrive
        # together), so the queue is checked by the events its jobs carry.
        "events_in_queued_jobs": events_total,
        "rows_without_job": missing,
        "jobs_events_not_stored": unknown,
        "events_queued_twice": duplicated,
        "unreadable_jobs": store.unreadable_jobs,
        "rows_equal_queued_events": rows_total == events_total and missing == 0,
        "rows_equal_2xx": rows_total == ok_total,
        "rows_minus_2xx": rows_total - ok_total,
        # wrk stops on a timer and drops the requests still in flight; the server finishes
        # them (stores, enqueues) after wrk has gone, so rows may exceed the 2xx count by
        # at most that many. More than that, or fewer rows than 2xx, is a real mismatch.
        "unanswered_at_wrk_stop_total": unanswered,
        "repeated_callsids": repeated,
        "consistent": rows_total == events_total
        and missing == unknown == duplicated == store.unreadable_jobs == 0
        and ok_total <= rows_total <= ok_total + unanswered
        and repeated == 0,
        "per_run": [
            {
                k: run[k]
                for k in (
                    "round",
                    "phase",
                    "ok",
                    "errors",
                    "rows_inserted",
                    "jobs_enqueued",
                    "events_enqueued",
                    "unanswered_at_stop",
                )
            }
            for run in status_runs
        ],
    }
    if not accounting["consistent"]:
        log(f"MISMATCH in stored rows / queued jobs / answered requests: {accounting}")

    ratios = summary["ratios"]
    worst_pss = max(worker["pss_mb"] for worker in real_workers)
    targets_met: dict[str, Any] = {}
    if "status" in args.endpoints:
        status_ratio = ratios["status_over_bare"]["median_of_round_ratios"]
        status_p99 = summary["per_target"]["status"]["median"]["p99_ms"]
        targets_met["status_throughput"] = {
            "target": f">= {MIN_STATUS_RATIO} x bare",
            "value": status_ratio,
            "met": status_ratio >= MIN_STATUS_RATIO,
        }
        targets_met["status_p99"] = {
            "target": f"<= {MAX_STATUS_P99_MS} ms at {args.connections} connections",
            "value": status_p99,
            "met": status_p99 <= MAX_STATUS_P99_MS,
        }
    if "incoming" in args.endpoints:
        incoming_ratio = ratios["incoming_over_bare"]["median_of_round_ratios"]
        targets_met["incoming_throughput"] = {
            "target": f">= {MIN_INCOMING_RATIO} x bare",
            "value": incoming_ratio,
            "met": incoming_ratio >= MIN_INCOMING_RATIO,
        }
    targets_met["web_worker_pss"] = {
        "target": f"<= {MAX_WORKER_PSS_MB} MB",
        "value": worst_pss,
        "met": worst_pss <= MAX_WORKER_PSS_MB,
    }
    targets_met["all_met"] = all(t["met"] for t in targets_met.values())
    if len(args.endpoints) < 2:
        targets_met["note"] = f"only {args.endpoints} measured"

    initial_workers = len(real_workers)
    return {
        "benchmark": "twilio webhooks under gunicorn vs bare flask",
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "order_per_round": [t for t in TARGETS if t.removeprefix("bare_") in args.endpoints],
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "gunicorn": {
            "real_argv": real.argv,
            "bare_argv": bare.argv,
            "procfile_web": stack.web_argv,
            "settings_from_config": stack.settings,
            "settings_effective": stack.settings
            | {"bind": f"127.0.0.1:{real.port} (bare: 127.0.0.1:{bare.port})"}
            | ({} if args.keep_max_requests else {"max_requests": 0}),
            "overrides": [
                "--bind 127.0.0.1:PORT (the config binds 0.0.0.0:$PORT)",
                "--control-socket in the temp dir (default: one path per user)",
                *([] if args.keep_max_requests else ["--max-requests 0 (see --keep-max-requests)"]),
            ],
            "worker_boots": {"real": real.booted_workers(), "bare": bare.booted_workers()},
            "worker_restarts": {
                "real": real.booted_workers() - initial_workers,
                "bare": bare.booted_workers() - len(bare_workers),
            },
        },
        "responses": stack.responses,
        "rounds": [{"round": i + 1, **r} for i, r in enumerate(rounds)],
        **summary,
        "accounting": accounting,
        "memory_after_load": {
            "real_workers": real_workers,
            "bare_workers": bare_workers,
            "real_master": memory(real.pid),
            "real_worker_pss_mb_max": worst_pss,
            "bare_worker_pss_mb_max": max(worker["pss_mb"] for worker in bare_workers),
        },
        "targets": targets_met,
    }


if __name__ == "__main__":
    sys.exit(main())
