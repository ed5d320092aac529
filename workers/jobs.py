"""RQ jobs: thin, idempotent, by id. Exceptions propagate so RQ's failed registry sees them."""

from __future__ import annotations

import logging

from telephony_service.services import delivery, events, followups
from telephony_service.services.events import EventFailed
from telephony_service.wiring import Services
from workers.runtime import services

__all__ = [
    "EventFailed",
    "process_webhook_event",
    "process_webhook_events",
    "reconcile_message",
    "run_followup",
    "send_message",
]

log = logging.getLogger(__name__)


def process_webhook_event(event_id: int) -> None:
    wired = services()
    with wired.session() as session:
        ready = events.process(
            session, event_id, now=wired.clock(), base_url=wired.settings.public_base_url
        )
    _hand_over(wired, ready)


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


def send_message(message_id: int) -> None:
    wired = services()
    with wired.session() as session:
        delivery.send_message(
            session, wired.gateway, message_id, clock=wired.clock, settings=wired.send_settings
        )


def reconcile_message(message_id: int) -> None:
    wired = services()
    with wired.session() as session:
        delivery.reconcile_message(session, wired.gateway, message_id, clock=wired.clock)


def run_followup(followup_id: int) -> None:
    wired = services()
    with wired.session() as session:
        outcome = followups.run_followup(
            session, followup_id, now=wired.clock(), base_url=wired.settings.public_base_url
        )
    _hand_over(wired, outcome.messages)


def _hand_over(wired: Services, message_ids: list[int]) -> None:
    """Send the texts an event or a step made due now, here, rather than in jobs of their
    own: a text-back is the patient's first answer, and a trip through the queue (behind
    whatever else is waiting) would only delay it. Each send claims its row like a send
    job does; one that fails here is found by the scheduler, as a lost job would be."""
    for message_id in message_ids:
        with wired.session() as session:
            delivery.send_message(
                session, wired.gateway, message_id, clock=wired.clock, settings=wired.send_settings
            )
