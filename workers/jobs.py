"""RQ jobs: thin, idempotent, by id. Exceptions propagate so RQ's failed registry sees them."""

from __future__ import annotations

import logging

from telephony_service.services import events
from telephony_service.services.events import EventFailed
from workers.runtime import services

__all__ = ["EventFailed", "process_webhook_event", "process_webhook_events"]

log = logging.getLogger(__name__)


def process_webhook_event(event_id: int) -> None:
    wired = services()
    with wired.session() as session:
        events.process(session, event_id, now=wired.clock())


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
