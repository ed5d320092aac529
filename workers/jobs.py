"""RQ jobs: thin, idempotent, by id. Exceptions propagate so RQ's failed registry sees them."""

from __future__ import annotations

import logging

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
            events.record_failure(session, event_id, f"{type(exc).__name__}: {exc}")
            raise


def process_webhook_events(event_ids: list[int]) -> None:
    """Events that arrived together; each is applied on its own, like a job of its own."""
    failed = []
    for event_id in event_ids:
        try:
            process_webhook_event(event_id)
        except Exception:
            log.exception("webhook event %d failed", event_id)
            failed.append(event_id)
    if failed:
        # The others are applied; these stay unapplied and the relay retries them.
        raise RuntimeError(f"webhook events {failed} failed")
