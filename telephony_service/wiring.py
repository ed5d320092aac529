"""The one place that builds real implementations from settings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from telephony_service.clock import Clock, system_clock
from telephony_service.db import make_engine, make_session_factory
from telephony_service.gateways import TelephonyGateway, build_gateway
from telephony_service.services.delivery import SendSettings
from telephony_service.settings import Settings
from telephony_service.wording import check_sms_templates
from telephony_service.workqueue import Dispatcher, WorkQueue, connect_redis

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    redis: Redis
    work: WorkQueue
    dispatcher: Dispatcher
    clock: Clock = field(default=system_clock)
    _gateway: TelephonyGateway | None = field(default=None, repr=False)

    @property
    def gateway(self) -> TelephonyGateway:
        """Built on first use, so a process that never sends never loads twilio.rest."""
        if self._gateway is None:
            self._gateway = build_gateway(self.settings)
        return self._gateway

    @gateway.setter
    def gateway(self, gateway: TelephonyGateway) -> None:
        self._gateway = gateway

    @property
    def send_settings(self) -> SendSettings:
        return SendSettings(
            public_base_url=self.settings.public_base_url,
            sender_rate=self.settings.sms_sender_rate,
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.session_factory() as session:
            yield session

    def with_own_pool(self) -> Services:
        """The same services on database connections of their own.

        For the worker's relay and scheduler passes. Most passes find nothing due and end
        their transaction with a ROLLBACK, and psycopg forgets every prepared statement of
        a connection that rolls back. Sharing the jobs' pool, the passes (two a second)
        reached every pooled connection in turn, so the jobs' statements were parsed and
        planned again on almost every run: 1.4 ms of PostgreSQL's CPU per send, about as
        much as running them.
        """
        engine = make_engine(self.settings.database_url)
        return dataclasses.replace(
            self, engine=engine, session_factory=make_session_factory(engine)
        )


def build_services(settings: Settings, *, clock: Clock = system_clock) -> Services:
    if settings.redis_url is None:
        raise RuntimeError(
            "REDIS_URL is unset; `telephony run` starts an embedded Redis for development"
        )
    # Refused at start, loudly, rather than at a patient's first text.
    check_sms_templates()
    engine = make_engine(settings.database_url)
    redis = connect_redis(settings.redis_url, settings.enqueue_timeout)
    work = WorkQueue(redis)
    return Services(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        redis=redis,
        work=work,
        dispatcher=Dispatcher(work),
        clock=clock,
    )
