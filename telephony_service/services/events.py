"""Raw Twilio events: stored once, before Twilio gets its answer, then applied by a worker."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Engine, Insert, Update, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from telephony_service.db import (
    BEGIN,
    COMMIT,
    RELAX_COMMIT,
    autocommitted_row,
    explicit_transactions,
    pipelined,
    relaxed_rows,
    table,
    transaction_idle,
)
from telephony_service.gateways.base import redact
from telephony_service.models import WebhookEvent
from telephony_service.services import intake

# An event that failed this many times waits for a person (the row keeps the error);
# retrying it forever would only hide the bug behind a busy worker. With the back-off
# below the attempts span about twenty minutes, long enough to outlast a deploy or a
# database failover.
MAX_ATTEMPTS = 8

_table = table(WebhookEvent)


@functools.cache
def _insert(dialect_name: str) -> Insert:
    # Built once: SQLAlchemy then reuses its compiled form instead of deriving a cache key
    # from a fresh statement object on every webhook.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement: Insert = (
        dialect.insert(_table)
        .on_conflict_do_nothing(index_elements=["kind", "sid"])
        .returning(_table.c.id)
    )
    return statement


def record_event(
    engine: Engine, *, kind: str, sid: str, params: dict[str, Any], now: datetime
) -> int | None:
    """Store an event; None if (kind, sid) was already stored (a Twilio retry).

    One autocommitted INSERT: a single round trip, durable when it returns (the commit is
    the statement's own). On PostgreSQL straight through the driver, elsewhere Core: this
    runs on every webhook.
    """
    values = {"kind": kind, "sid": sid, "params": params, "received_at": now, "attempts": 0}
    if engine.dialect.name == "postgresql":
        row = autocommitted_row(engine, _insert("postgresql"), values | {"params": Jsonb(params)})
        return None if row is None else int(row[0])
    try:
        return _insert_once(engine, values)
    except DBAPIError as exc:
        # The pool does not ping before use (see db.py): a connection the database
        # dropped (restart, failover) fails here once, and a fresh one must not lose the
        # event Twilio will not send again.
        if not exc.connection_invalidated:
            raise
        return _insert_once(engine, values)


def _insert_once(engine: Engine, values: dict[str, Any]) -> int | None:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        row = connection.execute(_insert(engine.dialect.name), values).first()
        return None if row is None else int(row[0])


STALE_PAGE = 500


def stale_event_ids(
    session: Session,
    *,
    now: datetime,
    older_than: timedelta,
    after: tuple[datetime, int] | None = None,
    limit: int = STALE_PAGE,
) -> list[tuple[datetime, int]]:
    """Events stored but not applied, oldest first, as (received_at, id): their job was
    never enqueued, lost, or failed. `after`: the last of the previous page.

    An event that has failed n times waits older_than * 2**n after it arrived, so a fault
    that lasts a while does not use up every attempt in the first minute.
    """
    due = or_(
        *(
            and_(WebhookEvent.attempts == n, WebhookEvent.received_at < now - older_than * 2**n)
            for n in range(MAX_ATTEMPTS)
        )
    )
    query = select(WebhookEvent.received_at, WebhookEvent.id).where(
        WebhookEvent.processed_at.is_(None), due
    )
    if after is not None:
        query = query.where(tuple_(WebhookEvent.received_at, WebhookEvent.id) > tuple_(*after))
    query = query.order_by(WebhookEvent.received_at, WebhookEvent.id).limit(limit)
    return [(received, event_id) for received, event_id in session.execute(query)]


def _count_attempt(session: Session, event_id: int) -> bool:
    """Count an attempt in its own transaction, so a crash still counts. False if done."""
    # Not waiting for the disk: a count lost with a crashed database only means one
    # attempt more before the event is left for a person.
    counted = relaxed_rows(session, _count_statement(), {"event_id": event_id}, commit=True)
    return bool(counted)


@functools.cache
def _count_statement() -> Update:
    # Built once, and Core: the ORM's UPDATE would also look for the row in the session.
    return (
        update(_table)
        .where(_table.c.id == bindparam("event_id"), _table.c.processed_at.is_(None))
        .values(attempts=_table.c.attempts + 1)
        .returning(_table.c.id)
    )


def _record_failure(session: Session, event_id: int, error: str) -> None:
    session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(error=error[:500])
    )
    session.commit()


class EventFailed(RuntimeError):
    """Applying a stored event failed; the message names the kind of failure only."""


def process(session: Session, event_id: int, *, now: datetime, base_url: str) -> list[int]:
    """Apply a stored event once, counting the attempt; a failure is recorded on its row.

    Unknown or already applied ids are a quiet no-op, so a duplicate job changes nothing.
    Returns the ids of texts the event made ready to send now.
    """
    if session.get_bind().dialect.name == "postgresql" and transaction_idle(session):
        with explicit_transactions(session):
            counted, taken = _count_and_take(session, event_id, now)
            if not counted:
                session.rollback()
                return []
            return _apply(
                session, event_id, lambda: intake.apply_taken(session, taken, base_url=base_url)
            )
    if not _count_attempt(session, event_id):
        return []
    return _apply(
        session, event_id, lambda: intake.apply_event(session, event_id, now=now, base_url=base_url)
    )


def _apply(session: Session, event_id: int, apply: Callable[[], list[int] | None]) -> list[int]:
    try:
        return apply() or []
    except Exception as exc:
        session.rollback()
        # Database errors quote the rows they hit (PostgreSQL's DETAIL line names the key,
        # i.e. a phone number), so only the kind of failure is kept and raised.
        summary = _describe(exc)
        _record_failure(session, event_id, summary)
        raise EventFailed(f"webhook event {event_id}: {summary}") from None


def _count_and_take(
    session: Session, event_id: int, now: datetime
) -> tuple[bool, Sequence[tuple[Any, ...]]]:
    """_count_attempt, then the take of intake.apply_event, in one round trip (PostgreSQL,
    inside explicit_transactions): the count committed in a transaction of its own, the
    event taken in the transaction that goes on to apply it. Both commits relaxed, as
    relaxed_rows relaxes them when they go apart."""
    rows = pipelined(
        session,
        [
            (BEGIN, {}),
            (RELAX_COMMIT, {}),
            (_count_statement(), {"event_id": event_id}),
            (COMMIT, {}),
            (BEGIN, {}),
            (RELAX_COMMIT, {}),
            (intake.take_event_statement(), {"event_id": event_id, "now": now}),
        ],
    )
    return bool(rows[2]), rows[6]


def _describe(exc: Exception) -> str:
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        return f"{type(exc).__name__} ({type(exc.orig).__name__}, SQLSTATE {code})"
    if isinstance(exc, (KeyError, ValueError, TypeError, RuntimeError, AssertionError)):
        return redact(f"{type(exc).__name__}: {exc}")[:300]
    return type(exc).__name__


def retry_stranded(session: Session, event_id: int | None = None) -> int:
    """Give events that used up their attempts (or one event) back to the relay."""
    query = update(WebhookEvent).where(WebhookEvent.processed_at.is_(None))
    query = (
        query.where(WebhookEvent.id == event_id)
        if event_id is not None
        else query.where(WebhookEvent.attempts >= MAX_ATTEMPTS)
    )
    result = session.execute(query.values(attempts=0, error=None))
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
