"""Engine and session wiring. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    # Statement parameters are patient data (numbers, names, voicemail text); they must not
    # ride along in exception messages into logs, the events table or RQ's failed registry.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 15}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            # Python's sqlite3 opens transactions itself, and not before a SELECT, so a
            # SAVEPOINT would become the outer transaction and its RELEASE would commit it.
            # SQLAlchemy's documented remedy: the driver stays out, we emit BEGIN.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # WAL lets the web process read while the worker writes; foreign keys are off
            # by default in SQLite and we rely on them.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Connection) -> None:
            # An autocommit connection (the webhook insert) must stay outside a transaction,
            # or its row would wait for a COMMIT that never comes.
            # IMMEDIATE takes SQLite's one write lock at the start. A transaction that began
            # as a reader and then writes after another writer committed fails at once
            # ("database is locked", no waiting), which is how two workers, or a STOP and a
            # send, would collide; taken up front, the lock is simply waited for. SQLite is
            # the single-machine development default: serialising transactions costs little.
            if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A database that does not answer must fail a readiness check in seconds, not minutes.
    kwargs.setdefault("connect_args", {"connect_timeout": 3})
    # No ping before each checkout: it is a round trip on every webhook (about 14% of the
    # status webhook's CPU). A connection the server dropped fails its statement instead,
    # SQLAlchemy then discards the whole pool, and the webhook insert retries once.
    kwargs.setdefault("pool_pre_ping", False)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def relax_commit(session: Session) -> None:
    """Let this transaction's COMMIT return before its WAL reaches disk (PostgreSQL).

    Only for work that a crash may lose because it is redone: applying a stored event
    (its row stays unapplied and the relay applies it again) and storing a send's answer
    (the text stays claimed and is reconciled with Twilio's list). The first synchronous
    commit after it flushes it anyway. Saves a disk flush, milliseconds, per job. The
    webhook's insert and a send's claim are never relaxed: those must survive a crash.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


_Row = TypeVar("_Row")


def locked(session: Session, model: type[_Row], row_id: int) -> _Row:
    """A row locked for update and read afresh, never the session's older copy of it (the
    sessions keep objects across commits)."""
    return session.scalars(
        select(model)
        .where(model.id == row_id)  # type: ignore[attr-defined]
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def upsert_insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT (PostgreSQL's or SQLite's), the one with ON CONFLICT."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
