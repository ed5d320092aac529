"""Engine and session wiring. Nothing is built at import time."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import psycopg
from psycopg.pq import ExecStatus, TransactionStatus
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


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


def _driver(session: Session) -> psycopg.Connection[Any]:
    driver = session.connection().connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise ValueError("this speaks psycopg: PostgreSQL only")
    return driver


def transaction_idle(session: Session) -> bool:
    """True if the session's connection has no transaction open (PostgreSQL)."""
    return _driver(session).info.transaction_status == TransactionStatus.IDLE


@contextmanager
def explicit_transactions(session: Session) -> Iterator[None]:
    """In this block the session's connection opens no transaction by itself: pipelined
    statements open theirs ("BEGIN") and a commit or rollback ends it (PostgreSQL).

    psycopg opens a transaction with a BEGIN of its own, and in a pipeline it waits for its
    answer: a round trip before the pipeline's statements go. A pipeline that opens its own
    transaction, after a statement that commits by itself, saves it. Inside the block,
    every transaction opened must end with a commit or a rollback; a statement outside one
    commits by itself. The session must have no transaction open when the block starts.
    Whatever happens, the connection leaves the block transactional again, with any
    transaction still open rolled back.
    """
    driver = _driver(session)
    driver.autocommit = True
    try:
        yield
    finally:
        if not driver.broken:
            if driver.info.transaction_status != TransactionStatus.IDLE:
                driver.rollback()
            driver.autocommit = False


def relaxed_rows(
    session: Session, statement: ClauseElement, params: Mapping[str, Any], *, commit: bool = False
) -> Sequence[tuple[Any, ...]]:
    """One statement in a transaction whose COMMIT returns before its WAL reaches disk
    (PostgreSQL); its rows. With `commit`, the transaction ends with it.

    Only for work that a crash may lose because it is redone: applying a stored event (its
    row stays unapplied and the relay applies it again) and counting an attempt at it. The
    first synchronous commit after it flushes it anyway. Saves a disk flush per job. The
    webhook's insert and a send's claim are never relaxed: those must survive a crash.
    (A send's answer is relaxed in the statement that locks its contact.)

    On PostgreSQL the SET LOCAL, the statement and the COMMIT go in one round trip (see
    pipelined: values and rows as the driver takes and gives them).
    """
    if session.get_bind().dialect.name != "postgresql":
        rows = session.execute(cast(Executable, statement), params).all()
        if commit:
            session.commit()
        return [tuple(row) for row in rows]
    return pipelined(session, [(RELAX_COMMIT, {}), (statement, params)], commit=commit)[1]


# For pipelines in explicit_transactions.
BEGIN = text("BEGIN")
COMMIT = text("COMMIT")
RELAX_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


def autocommitted_row(
    engine: Engine, statement: ClauseElement, params: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """One statement (built with SQLAlchemy, compiled once), committed on its own and run
    by psycopg on a pooled PostgreSQL connection; its first row, if any.

    For the statements on every webhook and send: SQLAlchemy's connection, execution
    context and result cost more CPU than the round trip (about 40 us of the status
    webhook's). Values go to the driver as given (a JSON value wrapped in psycopg's Jsonb).
    The connection goes back to the pool as it came (not autocommitting). A connection
    the server dropped (restart, failover) is discarded and the statement tried once
    more on a fresh one, so the caller's one-shot write is not lost.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError("autocommitted_row speaks psycopg: PostgreSQL only")
    sql, values = _for_driver(statement, engine.dialect, params)
    for attempt in (1, 2):
        pooled = engine.raw_connection()
        connection = pooled.driver_connection
        assert connection is not None
        try:
            connection.autocommit = True
            try:
                row: tuple[Any, ...] | None = connection.execute(sql, values).fetchone()
                return row
            finally:
                # Whatever happened, the pool gets back a connection that opens
                # transactions again (a failed autocommitted statement leaves none open).
                if not connection.broken:
                    connection.autocommit = False
        except psycopg.OperationalError:
            if not connection.broken or attempt == 2:
                raise
        finally:
            if connection.broken:
                pooled.invalidate()
            pooled.close()
    raise AssertionError("unreachable")


def pipelined(
    session: Session,
    statements: Sequence[tuple[ClauseElement, Mapping[str, Any]]],
    *,
    commit: bool = False,
) -> list[list[tuple[Any, ...]]]:
    """Statements (built with SQLAlchemy, compiled once) run by psycopg in the session's
    transaction, sent together in one round trip (pipeline mode) and run by PostgreSQL one
    after the other, as if sent one by one; each one's rows. With `commit`, the COMMIT
    goes in the same trip and the session's transaction ends.

    For a send's and an event's statements that do not depend on each other's answers:
    a round trip and SQLAlchemy's execution of each cost more than PostgreSQL takes to run
    them. Values go to the driver as given (JSON wrapped in psycopg's Jsonb), and rows come
    back as the driver reads them (no SQLAlchemy result types). A failing statement fails
    the ones after it; its error is raised and the session must be rolled back.
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        raise ValueError("pipelined speaks psycopg: PostgreSQL only")
    runs = [_for_driver(statement, bind.dialect, params) for statement, params in statements]
    driver = _driver(session)
    cursors = []
    with driver.pipeline():
        for sql, values in runs:
            cursor = driver.cursor()
            cursor.execute(sql, values)
            cursors.append(cursor)
        if commit:
            driver.commit()
    rows = [_rows(cursor) for cursor in cursors]
    for cursor in cursors:
        cursor.close()
    if commit:
        # The driver has committed; SQLAlchemy's COMMIT finds nothing left to send.
        session.commit()
    return rows


def _rows(cursor: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
    # By the result's status, not `description`: that builds a Column for every column of
    # every statement (a tenth of a send's pipelines), only to be tested against None.
    result = cursor.pgresult
    if result is None or result.status != ExecStatus.TUPLES_OK:
        return []
    return cursor.fetchall()


# session.info's key for the statements waiting for the commit (see writes_at_commit).
_AT_COMMIT = "telephony.at_commit"


@contextmanager
def writes_at_commit(session: Session) -> Iterator[None]:
    """In this block, statements given to `at_commit` wait, and `commit` sends them with
    the COMMIT in one round trip (PostgreSQL; elsewhere nothing changes).

    For a job's last writes, which nothing reads back before the commit: the rows of a new
    task's schedule, its text's link, the call's task. Each would otherwise be a round trip
    of its own, at a cost (after a quiet moment) of several times what PostgreSQL takes to
    run it. Leaving the block without `commit` drops what waits (the caller then rolls
    back, as after any failure); a plain session.commit() inside it would leave them out.
    """
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    session.info[_AT_COMMIT] = []
    try:
        yield
    finally:
        session.info.pop(_AT_COMMIT, None)


def at_commit(
    session: Session,
    statement: ClauseElement,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> None:
    """Run a write now (a sequence of parameter sets: once for each), or with the commit
    inside writes_at_commit. Only for rows nothing in the transaction reads before it
    commits. Values must be as psycopg takes them (see pipelined: a JSON value wrapped in
    Jsonb; no column type converts them), and a failing write fails the commit with the
    driver's own error."""
    waiting = session.info.get(_AT_COMMIT)
    if waiting is None:
        session.execute(cast(Executable, statement), params)
    elif isinstance(params, Mapping):
        waiting.append((statement, params))
    else:
        waiting.extend((statement, row) for row in params)


def commit(session: Session) -> None:
    """Commit the session, with the writes waiting for it (see writes_at_commit): the
    ORM's pending changes first, then those writes and the COMMIT in one round trip."""
    waiting = session.info.get(_AT_COMMIT)
    if not waiting:
        session.commit()
        return
    session.info[_AT_COMMIT] = []
    session.flush()
    pipelined(session, waiting, commit=True)


def _for_driver(
    statement: ClauseElement, dialect: Dialect, params: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The SQL psycopg runs for `statement`, and all its values (`params` and its own)."""
    # What the models' UTC column type would refuse: PostgreSQL reads a naive time as its
    # own zone's.
    if any(isinstance(value, datetime) and value.tzinfo is None for value in params.values()):
        raise ValueError("naive datetime given to a UTC column")
    sql, constants = _driver_sql(statement, dialect, tuple(sorted(params)))
    return sql, constants | dict(params)


@functools.lru_cache(maxsize=64)
def _driver_sql(
    statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """A statement as psycopg takes it (named parameters), with the values the statement
    itself carries (its literals)."""
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys)))
    # An IN of constants is rendered when the statement runs ("expanding"); expanded here,
    # once, into a parameter per value.
    expanded = compiled.construct_expanded_state(dict.fromkeys(keys))
    constants = {name: value for name, value in expanded.parameters.items() if name not in keys}
    return expanded.statement, constants


_Row = TypeVar("_Row")


def insert_row(session: Session, row: _Row) -> _Row:
    """INSERT a new ORM row with one Core statement and keep it in the session as if it
    had been loaded (attach_inserted); its id is set. A column not set on the row takes its
    scalar Python default, else NULL (a callable or server default is not applied).

    For rows written on a missed call's hot path: the unit of work's flush (change
    tracking, dependency sorting, fetching the new id back) costs several times the
    statement after a quiet moment.
    """
    values = column_values(row)
    row.id = session.execute(_insert_returning_id(table(type(row))), values).scalar_one()  # type: ignore[attr-defined]
    return attach_inserted(session, row)


def column_values(row: Any) -> dict[str, Any]:
    """A new ORM row's columns but its id, as insert_statement takes them. A column not set
    takes its scalar Python default, else None, and is set so on the row as well."""
    columns = [column for column in table(type(row)).c if column.key != "id"]
    for column in columns:
        if column.key not in row.__dict__:
            default = cast(Any, column.default)
            scalar = default is not None and default.is_scalar
            setattr(row, column.key, default.arg if scalar else None)
    return {column.key: getattr(row, column.key) for column in columns}


@functools.cache
def insert_statement(table: Table) -> Insert:
    """An INSERT of every column but the id, each from the parameter named after it (built
    once: building and keying a statement costs more CPU than running it)."""
    columns = [column for column in table.c if column.key != "id"]
    return insert(table).values(
        {column.key: bindparam(column.key, type_=column.type) for column in columns}
    )


@functools.cache
def _insert_returning_id(table: Table) -> Insert:
    return insert_statement(table).returning(table.c.id)


def attach_inserted(session: Session, row: _Row) -> _Row:
    """A row whose every column is set on it, its id included (just INSERTed with a Core
    statement, or copied from a cache), made a row of the session as if it had been
    loaded: clean, so a later change flushes as an UPDATE. A column left out would be
    loaded again when read.

    A rollback expires such a row but does not forget it, as it forgets a row the unit of
    work inserted; an instance still held under the same identity (one inserted in a
    transaction rolled back since: SQLite reuses the id) gives way to this one.
    """
    make_transient_to_detached(row)
    key = inspect(row).key
    stale = session.identity_map.get(key) if key is not None else None
    if stale is not None and stale is not row:
        session.expunge(stale)
    session.add(row)
    return row


def locked(session: Session, model: type[_Row], row_id: int) -> _Row:
    """A row locked for update and read afresh, never the session's older copy of it (the
    sessions keep objects across commits)."""
    statement = _locked_statement(cast(Hashable, model))
    row: _Row = session.scalars(statement, {"row_id": row_id}).one()
    return row


@functools.cache
def _locked_statement(model: type[Any]) -> Select[Any]:
    # Built once per model: building and keying a fresh SELECT costs more CPU than the
    # database takes to run it.
    return (
        select(model)
        .where(model.id == bindparam("row_id"))
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def table(model: type[Any]) -> Table:
    """A model's table, for Core statements (typed as the Table it is)."""
    return cast(Table, model.__table__)


def upsert_insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT (PostgreSQL's or SQLite's), the one with ON CONFLICT."""
    return dialect_insert(session.get_bind().dialect.name)


def dialect_insert(dialect_name: str) -> Callable[..., Any]:
    """upsert_insert by dialect name, for statements built once per dialect."""
    return postgresql.insert if dialect_name == "postgresql" else sqlite.insert
