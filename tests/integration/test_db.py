"""db.autocommitted_row (the webhook's insert and the send's claim), db.pipelined (the send's
transaction), db.relaxed_rows (applying an event) and db.at_commit (an event's last writes),
through psycopg on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from sqlalchemy import Insert, column, insert, select, table, text, update
from sqlalchemy.orm import Session

from telephony_service.db import (
    at_commit,
    autocommitted_row,
    commit,
    explicit_transactions,
    make_engine,
    pipelined,
    relaxed_rows,
    transaction_idle,
    writes_at_commit,
)
from telephony_service.wiring import Services


def test_it_commits_the_statement_and_hands_the_connection_back_transactional(
    services: Services,
) -> None:
    # One pooled connection, so the next checkout is the one the call used.
    engine = make_engine(services.settings.database_url, pool_size=1, max_overflow=0)
    try:
        if engine.dialect.name != "postgresql":
            with pytest.raises(ValueError, match="PostgreSQL only"):
                autocommitted_row(engine, text("SELECT 1"), {})
            return
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE scratch (n integer)"))
        assert autocommitted_row(
            engine, text("INSERT INTO scratch VALUES (:n) RETURNING n"), {"n": 7}
        ) == (7,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            autocommitted_row(engine, text("SELECT 1 / :n"), {"n": 0})
        with pytest.raises(ValueError, match="naive"):
            autocommitted_row(engine, text("SELECT :at"), {"at": datetime(2026, 11, 28, 9, 0)})
        with engine.connect() as connection:
            # Committed, and the connection is back to opening transactions.
            assert connection.execute(text("SELECT n FROM scratch")).scalar_one() == 7
            assert connection.connection.driver_connection.autocommit is False
            connection.execute(text("INSERT INTO scratch VALUES (8)"))
            connection.rollback()
            assert connection.execute(text("SELECT count(*) FROM scratch")).scalar_one() == 1
    finally:
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(text("DROP TABLE IF EXISTS scratch"))
        engine.dispose()


SCRATCH = table("scratch", column("n"))


def test_it_runs_pipelined_statements_in_order_in_the_sessions_transaction(
    services: Services,
) -> None:
    engine = services.engine
    with services.session() as session:
        if engine.dialect.name != "postgresql":
            with pytest.raises(ValueError, match="PostgreSQL only"):
                pipelined(session, [(select(SCRATCH.c.n), {})])
            return
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (n integer)"))
    try:
        with services.session() as session:
            inserted, counted, updated, matching = pipelined(
                session,
                [
                    (insert(SCRATCH).values(n=text(":n")).returning(SCRATCH.c.n), {"n": 7}),
                    (text("SELECT count(*) FROM scratch"), {}),
                    (update(SCRATCH).values(n=SCRATCH.c.n + 1), {}),
                    # A constant IN list, expanded for the driver.
                    (select(SCRATCH.c.n).where(SCRATCH.c.n.in_((8, 9))), {}),
                ],
            )
            assert (inserted, counted, updated, matching) == ([(7,)], [(1,)], [], [(8,)])
            # Still the session's transaction: nothing is committed yet.
            session.rollback()
            assert session.execute(text("SELECT count(*) FROM scratch")).scalar_one() == 0
            session.rollback()

            pipelined(session, [(text("INSERT INTO scratch VALUES (:n)"), {"n": 3})], commit=True)
            # The session goes on with a transaction of its own.
            session.execute(text("INSERT INTO scratch VALUES (4)"))
            session.rollback()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT n FROM scratch")).scalars().all() == [3]
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE scratch"))


def test_it_fails_the_pipeline_at_a_failing_statement_and_leaves_it_to_roll_back(
    services: Services,
) -> None:
    with services.session() as session:
        if services.engine.dialect.name != "postgresql":
            # Refused before anything runs: SQLite's send goes statement by statement.
            with pytest.raises(ValueError, match="PostgreSQL only"):
                pipelined(session, [(text("SELECT 1 / :n"), {"n": 0})])
            return
        with pytest.raises(psycopg.errors.DivisionByZero):
            pipelined(session, [(text("SELECT 1 / :n"), {"n": 0}), (text("SELECT 2"), {})])
        session.rollback()
        assert session.execute(text("SELECT 3")).scalar_one() == 3
        with pytest.raises(ValueError, match="naive"):
            pipelined(session, [(text("SELECT :at"), {"at": datetime(2026, 11, 28, 9, 0)})])


def test_it_relaxes_only_its_own_transactions_commit_and_returns_the_rows(
    services: Services,
) -> None:
    engine = services.engine
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (n integer)"))
    try:
        with services.session() as session:
            insert_one = insert(SCRATCH).values(n=text(":n")).returning(SCRATCH.c.n)
            assert relaxed_rows(session, insert_one, {"n": 5}) == [(5,)]
            if postgres:
                setting = session.execute(text("SHOW synchronous_commit")).scalar_one()
                assert setting == "off"
            session.rollback()
            assert relaxed_rows(session, insert_one, {"n": 6}, commit=True) == [(6,)]
            if postgres:
                # The next transaction waits for the disk again.
                setting = session.execute(text("SHOW synchronous_commit")).scalar_one()
                assert setting == "on"
            session.rollback()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT n FROM scratch")).scalars().all() == [6]
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE scratch"))


def test_it_lets_pipelined_statements_open_and_end_their_own_transactions(
    services: Services,
) -> None:
    engine = services.engine
    with services.session() as session:
        if engine.dialect.name != "postgresql":
            with pytest.raises(ValueError, match="PostgreSQL only"), explicit_transactions(session):
                pass
            return
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (n integer)"))

    def stored() -> list[int]:
        with engine.connect() as other:
            return list(other.execute(text("SELECT n FROM scratch ORDER BY n")).scalars())

    add = text("INSERT INTO scratch VALUES (:n)")
    try:
        with services.session() as session:
            assert transaction_idle(session)
            with explicit_transactions(session):
                pipelined(
                    session,
                    [
                        (text("BEGIN"), {}),
                        (add, {"n": 1}),
                        (text("COMMIT"), {}),
                        (text("BEGIN"), {}),
                        (add, {"n": 2}),
                    ],
                )
                # The first transaction is committed, the second still open.
                assert stored() == [1]
                assert not transaction_idle(session)
                session.commit()
                assert stored() == [1, 2]
                pipelined(session, [(text("BEGIN"), {}), (add, {"n": 3})])
            # Left open at the end of the block: rolled back, and the connection opens
            # transactions again.
            assert stored() == [1, 2]
            driver = session.connection().connection.driver_connection
            assert driver.autocommit is False
            session.execute(add, {"n": 4})
            session.rollback()
            assert stored() == [1, 2]

            with (
                pytest.raises(psycopg.errors.DivisionByZero),
                explicit_transactions(session),
            ):
                pipelined(session, [(text("BEGIN"), {}), (text("SELECT 1 / 0"), {})])
            assert session.connection().connection.driver_connection.autocommit is False
            session.rollback()
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE scratch"))


def _scratch_rows(session: Session) -> list[int]:
    return list(session.execute(text("SELECT n FROM scratch ORDER BY n")).scalars())


@pytest.fixture
def scratch(services: Services) -> Iterator[Insert]:
    """A table `scratch (n integer)` for the test; an INSERT of one value `:n` into it."""
    with services.engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (n integer)"))
    try:
        yield insert(SCRATCH).values(n=text(":n"))
    finally:
        with services.engine.begin() as connection:
            connection.execute(text("DROP TABLE scratch"))


def test_it_holds_writes_for_the_commit_and_sends_them_with_it(
    services: Services, scratch: Insert
) -> None:
    with services.session() as session:
        session.execute(text("INSERT INTO scratch VALUES (1)"))
        with writes_at_commit(session):
            at_commit(session, scratch, {"n": 2})
            at_commit(session, scratch, [{"n": 3}, {"n": 4}])
            if services.engine.dialect.name == "postgresql":
                # Waiting: not even this transaction sees them yet.
                assert _scratch_rows(session) == [1]
            else:
                # SQLite has no pipeline to send them in: written at once.
                assert _scratch_rows(session) == [1, 2, 3, 4]
            commit(session)
        # Nothing waits any more: the next write goes at once.
        at_commit(session, scratch, {"n": 5})
        assert _scratch_rows(session) == [1, 2, 3, 4, 5]
        session.rollback()
    with services.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM scratch")).scalar_one() == 4


def test_it_drops_the_waiting_writes_of_a_block_left_without_commit(
    services: Services, scratch: Insert
) -> None:
    with services.session() as session:
        with pytest.raises(RuntimeError), writes_at_commit(session):
            at_commit(session, scratch, {"n": 1})
            raise RuntimeError("the job failed")
        session.rollback()
        # The session's next transaction neither waits nor carries them.
        at_commit(session, scratch, {"n": 2})
        assert _scratch_rows(session) == [2]
        commit(session)
    with services.engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM scratch")).scalars().all() == [2]


def test_it_raises_a_failing_held_write_at_commit_and_the_session_goes_on(
    services: Services, scratch: Insert
) -> None:
    with services.session() as session:
        if services.engine.dialect.name != "postgresql":
            return  # nothing is held back on SQLite (see the test above)
        session.execute(text("ALTER TABLE scratch ADD CONSTRAINT positive CHECK (n > 0)"))
        session.commit()
        with pytest.raises(psycopg.errors.CheckViolation), writes_at_commit(session):
            session.execute(text("INSERT INTO scratch VALUES (1)"))
            at_commit(session, scratch, {"n": -1})
            commit(session)
        session.rollback()
        # Nothing of that transaction was kept, and the session works as before.
        assert _scratch_rows(session) == []
        with writes_at_commit(session):
            at_commit(session, scratch, {"n": 2})
            commit(session)
        assert _scratch_rows(session) == [2]
