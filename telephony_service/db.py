"""Engine and session wiring. Nothing is built at import time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 15}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the web process read while the worker writes; foreign keys are off
            # by default in SQLite and we rely on them.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

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
