"""db.autocommitted_row: the webhook's insert and the send's claim, through psycopg."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest
from sqlalchemy import text

from telephony_service.db import autocommitted_row, make_engine
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
