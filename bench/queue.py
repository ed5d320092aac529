"""Benchmark of the agents' queue with 100 vs 100,000 open tasks, side by side.

    python bench/queue.py [--rounds N] [--sizes 100,100000] [--history 2]

For each size it builds a throwaway PostgreSQL database (migrated like production), one
practice with that many open tasks plus closed history (`--history` times as many closed
tasks, older, as a practice accumulates them), call attempts and sent texts, with a
realistic spread of deadlines (3 days overdue to 5 days ahead), categories, statuses and
owners, all inserted with INSERT ... SELECT generate_series. Then, through the Flask test
client with a signed-in agent, rounds interleave the sizes (alternating which goes first,
so the noise of a shared machine hits both alike) and time:

- queue_page: GET /queue, the full HTML render;
- rows_refresh: GET /queue/rows, the page's background refresh every 5 s;
- take_next: POST /queue/take-next (the claimed task is handed back, untimed, so every
  round claims from the same queue).

It reports medians and p90 in ms, the ratio 100k/100 (target: at most 2), and EXPLAINs the
statements the page really ran (captured from the engine) on the largest database, once
as PostgreSQL plans them for these values and once as a generic plan (what a prepared
statement may settle on after psycopg prepares it), saying which index each one used.
One JSON object goes to stdout; progress goes to stderr. The databases are dropped on the
way out (also on an error or Ctrl-C). Needs the local PostgreSQL (scripts/ensure-services).
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/queue.py`, this directory comes first on sys.path, and this file
# (named queue) would shadow the standard library's queue module that psycopg imports:
# move it to the end (a stable sort keeps every other entry in its order).
sys.path.sort(
    key=lambda entry: os.path.abspath(entry or ".") == os.path.dirname(os.path.abspath(__file__))
)

import argparse
import contextlib
import json
import platform
import re
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import Engine

from telephony_service import migrate
from telephony_service.models import User
from telephony_service.services.auth import start_session
from telephony_service.services.practices import add_practice, add_user
from telephony_service.settings import Settings
from telephony_service.web import create_app
from telephony_service.wiring import Services, build_services

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"  # bench/ uses db 14; nothing here writes to it
PRACTICE_NUMBER = "+16175550100"
CSRF = "bench-csrf-token"
AGENTS = 5
TARGET_RATIO = 2.0

CATEGORIES = (
    "new_patient_request",
    "web_form",
    "missed_call",
    "voicemail",
    "sms_inquiry",
    "cancellation",
    "referral",
    "insurance_docs",
    "incomplete_scheduling",
    "post_visit",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------------

# Deadlines are spread by a multiplicative hash of the row number over 8 days (3 behind,
# 5 ahead), so deadline order is unrelated to id order, as with real arrivals.
_OPEN_TASKS = """
INSERT INTO tasks (practice_id, contact_id, category, status, priority, name, reason, source,
                   no_callback_number, call_count, has_voicemail, owner_id, created_at,
                   updated_at, due_at, next_action, next_action_at)
SELECT %(practice)s,
       %(first_contact)s + g %% %(contacts)s,
       (%(categories)s::text[])[1 + (g * 7) %% 10],
       CASE WHEN g %% 50 = 0 THEN 'needs_clinical_escalation'
            WHEN g %% 7 = 0 THEN 'left_voicemail'
            WHEN g %% 5 = 0 THEN 'first_attempted'
            WHEN g %% 41 = 0 THEN 'needs_insurance_followup'
            ELSE 'new' END,
       10 + g %% 40,
       CASE WHEN g %% 3 = 0 THEN NULL
            ELSE (ARRAY['Ana Lopez', 'Ben Ortiz', 'Chloe Park', 'Dev Patel'])[1 + g %% 4] END,
       NULL, 'bench', false, 1 + g %% 3, g %% 4 = 0,
       CASE WHEN g %% 5 = 1 THEN (%(agents)s::bigint[])[1 + (g / 5) %% %(agent_count)s] END,
       due - make_interval(mins => 20 + (g * 31) %% 600),
       due - make_interval(mins => 20 + (g * 31) %% 600),
       due, 'call_back', due
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT %(now)s::timestamptz
                     + make_interval(mins => ((g::bigint * 7919) %% 11520)::int - 4320) AS due) d
"""

_CLOSED_HISTORY = """
INSERT INTO tasks (practice_id, contact_id, category, status, priority, name, reason, source,
                   no_callback_number, call_count, has_voicemail, owner_id, created_at,
                   updated_at, due_at, next_action, next_action_at)
SELECT %(practice)s,
       %(first_contact)s + g %% %(contacts)s,
       (%(categories)s::text[])[1 + (g * 3) %% 10],
       (ARRAY['closed_resolved', 'closed_no_response', 'closed_opted_out', 'merged'])[1 + g %% 4],
       20, NULL, NULL, 'bench', false, 1, false,
       (%(agents)s::bigint[])[1 + g %% %(agent_count)s],
       due - interval '1 hour', due + interval '1 day', due, NULL, NULL
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT %(now)s::timestamptz
                     - make_interval(mins => 4320 + ((g::bigint * 104729) %% 525600)::int) AS due) d
"""


@dataclass
class Bench:
    """One size: its database, app, signed-in agent and timings."""

    size: int
    db_name: str
    history: int = 0
    created: bool = False
    services: Services | None = None
    app: Flask | None = None
    client: FlaskClient | None = None
    conn: psycopg.Connection[Any] | None = None
    agent_id: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db_name}"

    def create(self, history_factor: int) -> None:
        log(f"{self.size:,} open tasks: database {self.db_name}")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.created = True
        migrate.upgrade(self.url)
        settings = Settings(
            database_url=self.url,
            redis_url=REDIS_URL,
            secret_key=secrets.token_hex(16),
            public_base_url="https://bench.example.test",
            twilio_account_sid=None,
            twilio_auth_token=None,
            twilio_api_base_url="https://api.twilio.com",
            instance_path=ROOT / "instance",
        )
        self.services = build_services(settings)
        now = datetime.now(UTC)
        with self.services.session() as session:
            practice = add_practice(
                session,
                name="Bench Family Medicine",
                number=PRACTICE_NUMBER,
                timezone="America/New_York",
                booking_url=None,
                now=now,
            )
            agents = [
                add_user(
                    session,
                    practice_id=practice.id,
                    email=f"agent{index}@bench.example",
                    role="agent",
                    phone="+16175550199",
                    password=secrets.token_urlsafe(16),
                    now=now,
                )
                for index in range(AGENTS)
            ]
            session.commit()
            practice_id, agent_ids = practice.id, [agent.id for agent in agents]
        self.agent_id = agent_ids[0]
        self.history = self.size * history_factor
        self.conn = psycopg.connect(self.url.replace("+psycopg", ""), autocommit=True)
        started = time.monotonic()
        self._fill(practice_id, agent_ids, now)
        log(
            f"{self.size:,} open + {self.history:,} closed tasks inserted and analysed "
            f"in {time.monotonic() - started:.1f} s"
        )
        self.app = create_app(services=self.services)
        self.client = self.app.test_client()
        with self.services.session() as session:
            agent = session.get(User, self.agent_id)
            assert agent is not None
            token = start_session(session, agent, now=datetime.now(UTC))
            session.commit()
        with self.client.session_transaction() as cookie:
            cookie["sid"] = token
            cookie["csrf"] = CSRF

    def _fill(self, practice_id: int, agent_ids: list[int], now: datetime) -> None:
        assert self.conn is not None
        contacts = max(1, (self.size + self.history) // 2)
        # Numbers in the unassigned 999 area code: never a real patient's.
        self.conn.execute(
            """
            INSERT INTO contacts (practice_id, phone, created_at)
            SELECT %(practice)s, '+1999' || lpad(g::text, 7, '0'), %(now)s
            FROM generate_series(1, %(n)s) AS g
            """,
            {"practice": practice_id, "now": now, "n": contacts},
        )
        row = self.conn.execute("SELECT min(id) FROM contacts").fetchone()
        assert row is not None
        params = {
            "practice": practice_id,
            "first_contact": int(row[0]),
            "contacts": contacts,
            "categories": list(CATEGORIES),
            "agents": agent_ids,
            "agent_count": len(agent_ids),
            "now": now,
        }
        self.conn.execute(_OPEN_TASKS, {**params, "n": self.size})
        if self.history:
            self.conn.execute(_CLOSED_HISTORY, {**params, "n": self.history})
        # A third of the tasks had a call, half of them a text that went out.
        self.conn.execute(
            """
            INSERT INTO call_attempts (practice_id, task_id, user_id, request_key, status,
                                       created_at, updated_at)
            SELECT practice_id, id, owner_id, 'bench-' || id, 'no-answer', created_at,
                   created_at
            FROM tasks WHERE id % 3 = 0
            """
        )
        self.conn.execute(
            """
            INSERT INTO messages (practice_id, task_id, contact_id, dedupe_key, purpose,
                                  attempt, kind, to_number, from_number, body, segments,
                                  status, not_before, tries, created_at, sent_at, updated_at)
            SELECT practice_id, id, contact_id, 'bench-' || id, 'text_back', 1, 'automated',
                   '+19990000000', %(number)s, 'We missed your call.', 1, 'delivered',
                   created_at, 1, created_at, created_at, created_at
            FROM tasks WHERE id %% 2 = 0 AND contact_id IS NOT NULL
            """,
            {"number": PRACTICE_NUMBER},
        )
        self.conn.execute("VACUUM ANALYZE")

    # --- the three timed requests ----------------------------------------------------------

    def _timed(self, name: str, call: Any) -> Any:
        started = time.perf_counter()
        response = call()
        self.times.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return response

    def queue_page(self, query: str = "", name: str = "queue_page") -> None:
        client = self.client
        assert client is not None
        response = self._timed(name, lambda: client.get(f"/queue{query}"))
        body = response.get_data(as_text=True)
        if response.status_code != 200 or 'data-testid="queue-row"' not in body:
            raise RuntimeError(f"GET /queue{query} answered {response.status_code}")

    def rows_refresh(self) -> None:
        client = self.client
        assert client is not None
        response = self._timed(
            "rows_refresh", lambda: client.get("/queue/rows", headers={"X-Background": "1"})
        )
        if response.status_code != 200 or not response.get_json()["task_ids"]:
            raise RuntimeError(f"GET /queue/rows answered {response.status_code}")

    def take_next(self) -> None:
        client = self.client
        assert client is not None and self.conn is not None
        response = self._timed(
            "take_next", lambda: client.post("/queue/take-next", data={"csrf_token": CSRF})
        )
        location = response.headers.get("Location", "")
        found = re.search(r"/tasks/(\d+)$", location)
        if response.status_code != 302 or found is None:
            raise RuntimeError(f"take next answered {response.status_code} {location}")
        # Hand it back (untimed): every round claims from the same queue.
        self.conn.execute("UPDATE tasks SET owner_id = NULL WHERE id = %s", (int(found[1]),))

    def open_tasks(self) -> int:
        assert self.conn is not None
        row = self.conn.execute(
            "SELECT count(*) FROM tasks WHERE status NOT IN "
            "('closed_resolved', 'closed_no_response', 'closed_opted_out', 'merged')"
        ).fetchone()
        assert row is not None
        return int(row[0])

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        if self.services is not None:
            with contextlib.suppress(Exception):
                self.services.engine.dispose()
                self.services.redis.close()
        if self.created:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self.created = False


# --- EXPLAIN ------------------------------------------------------------------------------------


@contextlib.contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def _indexes(plan: dict[str, Any]) -> list[str]:
    found = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        found.extend(_indexes(child))
    return found


def _scans(plan: dict[str, Any]) -> list[str]:
    found = [f"{plan['Node Type']} on {plan['Relation Name']}"] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


def explain(bench: Bench) -> dict[str, Any]:
    """Plans of the statements GET /queue and POST /queue/take-next really run."""
    assert bench.services is not None and bench.client is not None and bench.conn is not None
    with captured(bench.services.engine) as statements:
        bench.queue_page()
    with captured(bench.services.engine) as claims:
        bench.take_next()
    wanted = {
        "queue_rows": lambda s: "LEFT OUTER JOIN contacts" in s,
        "queue_counts": lambda s: "count(*)" in s and "FROM tasks" in s,
        "attempts_texts": lambda s: "FROM messages" in s and "GROUP BY" in s,
        "attempts_calls": lambda s: "FROM call_attempts" in s and "GROUP BY" in s,
    }
    report: dict[str, Any] = {}
    for name, match in wanted.items():
        statement, params = next((s, p) for s, p in statements if match(s))
        report[name] = _explain_one(bench, statement, params, analyse=True)
    # What the cap saves: the same three counts without their LIMIT.
    statement, params = next((s, p) for s, p in statements if wanted["queue_counts"](s))
    uncapped = re.sub(r"\s+LIMIT %\(\w+\)s(::\w+)?", "", statement)
    report["queue_counts_uncapped"] = _explain_one(bench, uncapped, params, analyse=True)
    statement, params = next((s, p) for s, p in claims if "SKIP LOCKED" in s)
    report["take_next_claim"] = _explain_one(bench, statement, params, analyse=False)
    report["partial_index_used"] = {
        "queue_rows": "ix_tasks_queue" in report["queue_rows"]["indexes"],
        "queue_rows_generic_plan": "ix_tasks_queue" in report["queue_rows"]["generic_indexes"],
        "take_next_claim": "ix_tasks_queue_unowned" in report["take_next_claim"]["indexes"],
        "take_next_claim_generic_plan": "ix_tasks_queue_unowned"
        in report["take_next_claim"]["generic_indexes"],
    }
    return report


def _explain_one(bench: Bench, statement: str, params: Any, *, analyse: bool) -> dict[str, Any]:
    assert bench.conn is not None
    # SQLAlchemy's psycopg statements use %(name)s; ANALYZE of a FOR UPDATE would lock rows.
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyse else "FORMAT JSON"
    with bench.conn.transaction(force_rollback=True):
        row = bench.conn.execute(f"EXPLAIN ({options}) {statement}", params).fetchone()
    assert row is not None
    top = row[0][0]
    result: dict[str, Any] = {
        "indexes": _indexes(top["Plan"]),
        "scans": _scans(top["Plan"]),
        "generic_indexes": _generic_indexes(bench, statement, params),
    }
    if analyse:
        result["execution_ms"] = round(float(top["Execution Time"]), 3)
        result["planning_ms"] = round(float(top["Planning Time"]), 3)
    return result


def _generic_indexes(bench: Bench, statement: str, params: Any) -> list[str]:
    """The indexes of the generic plan: what a prepared statement may be run with."""
    assert bench.conn is not None
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", number, statement)
    values = sql.SQL(", ").join(sql.Literal(params[name]) for name in names)
    with bench.conn.transaction(force_rollback=True):
        bench.conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        bench.conn.execute(sql.SQL("PREPARE bench_q AS {}").format(sql.SQL(prepared)))
        try:
            query = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE bench_q ({})").format(values)
            row = bench.conn.execute(query).fetchone()
        finally:
            bench.conn.execute("DEALLOCATE bench_q")
    assert row is not None
    return _indexes(row[0][0]["Plan"])


# --- the run ------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(p90, 2),
        "min_ms": round(ordered[0], 2),
        "n": len(ordered),
    }


def run(args: argparse.Namespace, benches: list[Bench]) -> dict[str, Any]:
    for bench in benches:
        bench.create(args.history)
    log(f"warm-up: {args.warmup} rounds")
    for _ in range(args.warmup):
        for bench in benches:
            bench.queue_page()
            bench.rows_refresh()
            bench.take_next()
    for bench in benches:
        bench.times.clear()
    log(f"measuring: {args.rounds} interleaved rounds")
    for index in range(args.rounds):
        order = benches if index % 2 == 0 else list(reversed(benches))
        for bench in order:
            bench.queue_page()
        for bench in order:
            bench.rows_refresh()
        for bench in order:
            bench.take_next()
        # Filters that cannot walk the partial index in order alone (informational).
        for bench in order:
            bench.queue_page("?owner=mine", name="queue_page_mine")
            bench.queue_page("?category=referral", name="queue_page_one_category")
    largest = max(benches, key=lambda bench: bench.size)
    smallest = min(benches, key=lambda bench: bench.size)
    sizes = {
        str(bench.size): {
            "open_tasks": bench.open_tasks(),
            "closed_history": bench.history,
            **{name: summary(values) for name, values in bench.times.items()},
        }
        for bench in benches
    }
    ratios = {
        name: round(
            statistics.median(largest.times[name]) / statistics.median(smallest.times[name]), 2
        )
        for name in largest.times
    }
    # After the summaries: explaining runs the page and a take next once more.
    log("explaining the queue's statements on the largest database")
    plans = explain(largest)
    headline = ("queue_page", "take_next", "rows_refresh")
    return {
        "benchmark": "queue",
        "rounds": args.rounds,
        "sizes": sizes,
        f"ratio_{largest.size}_over_{smallest.size}_median": ratios,
        "target": f"{largest.size:,} within {TARGET_RATIO:g}x of {smallest.size:,} "
        f"for {', '.join(headline)}",
        "target_met": all(ratios[name] <= TARGET_RATIO for name in headline),
        "counts": "header counts stop at 1,001 rows each (shown as 1,000+), not cached",
        "explain": plans,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--sizes",
        type=lambda text: sorted({int(part) for part in text.split(",")}),
        default=[100, 100_000],
        help="open tasks per database, comma-separated (default 100,100000)",
    )
    parser.add_argument(
        "--history", type=int, default=2, help="closed tasks per open task (default 2)"
    )
    args = parser.parse_args(argv)
    if len(args.sizes) < 2:
        parser.error("--sizes needs at least two sizes to compare")
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, stdout=sys.stderr)

    tag = secrets.token_hex(4)
    benches = [Bench(size=size, db_name=f"telephony_bench_{tag}_{size}") for size in args.sizes]
    started = time.monotonic()
    try:
        report = run(args, benches)
        report["wall_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(report, indent=2))
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        for bench in benches:
            try:
                bench.drop()
            except Exception as exc:
                log(f"could not drop database {bench.db_name}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
