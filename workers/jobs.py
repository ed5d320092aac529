"""RQ jobs: thin, idempotent, by id. Exceptions propagate so RQ's failed registry sees them."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from telephony_service.services import events, intake
from workers.runtime import services

log = logging.getLogger(__name__)


def process_webhook_event(event_id: int) -> None:
    wired = services()
    with wired.session() as session:
        if not events.count_attempt(session, event_id):
            return  # unknown id or already applied: a duplicate job is a quiet no-op
        try:
            intake.apply_event(session, event_id, now=wired.clock())
        except Exception as exc:
            session.rollback()
            # Database errors quote the rows they hit (PostgreSQL's DETAIL line names the
            # key, i.e. a phone number), so only the kind of failure is kept and raised.
            summary = _describe(exc)
            events.record_failure(session, event_id, summary)
            raise EventFailed(f"webhook event {event_id}: {summary}") from None


class EventFailed(RuntimeError):
    pass


def _describe(exc: Exception) -> str:
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        return f"{type(exc).__name__} ({type(exc.orig).__name__}, SQLSTATE {code})"
    if isinstance(exc, (KeyError, ValueError, TypeError, RuntimeError, AssertionError)):
        return f"{type(exc).__name__}: {exc}"[:300]
    return type(exc).__name__


def process_webhook_events(event_ids: list[int]) -> None:
    """Events that arrived together; each is applied on its own, like a job of its own."""
    failed = []
    for event_id in event_ids:
        try:
            process_webhook_event(event_id)
        except EventFailed as exc:
            log.error("%s", exc)
            failed.append(event_id)
    if failed:
        # The others are applied; these stay unapplied and the relay retries them.
        raise EventFailed(f"webhook events {failed} failed")
