"""Scheduling links: an opaque token in a text, a small page in the practice's name."""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Insert, insert, select, update
from sqlalchemy.orm import Session

from telephony_service.db import at_commit, table
from telephony_service.domain.calendar import BusinessCalendar
from telephony_service.domain.statuses import NEXT_CALL_BACK, TaskStatus, is_open
from telephony_service.models import Link, Practice, Task, TaskEvent
from telephony_service.services.consent import contact_made, lock_contact, stop_cadence
from telephony_service.services.practices import PracticeCard, calendar_for
from telephony_service.services.tasks import change_status

LINK_TTL = timedelta(days=7)
# 64 random bits: unguessable for a link that lives a week, and short enough that a
# text with the practice's name and number stays within two segments.
TOKEN_BYTES = 8


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_link(
    session: Session,
    *,
    practice_id: int,
    task_id: int | None,
    now: datetime,
    ttl: timedelta = LINK_TTL,
) -> str:
    """A new link; returns its token (only the token's hash is stored)."""
    token = new_token()
    add_link(
        session, token, practice_id=practice_id, task_id=task_id, message_id=None, now=now, ttl=ttl
    )
    return token


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def add_link(
    session: Session,
    token: str,
    *,
    practice_id: int,
    task_id: int | None,
    message_id: int | None,
    now: datetime,
    ttl: timedelta = LINK_TTL,
) -> None:
    """Store a link for a token already written into a text (only the token's hash).

    Written with the commit where the caller allows it (db.at_commit): nothing reads a
    link before the patient opens it.
    """
    values = {
        "token_hash": hash_token(token),
        "practice_id": practice_id,
        "task_id": task_id,
        "message_id": message_id,
        "created_at": now,
        "expires_at": now + ttl,
        "opens": 0,
    }
    at_commit(session, _insert_statement(), values)


@functools.cache
def _insert_statement() -> Insert:
    return insert(table(Link))


def link_url(base_url: str, token: str) -> str:
    return f"{base_url}/s/{token}"


# --- the patient's page ------------------------------------------------------------------
#
# The token in the URL is the only credential: whoever holds the text may see the
# practice's name and number and the offered times, and nothing about the patient.

# token_urlsafe's alphabet; the length bounds leave room for a longer token later. A path
# that does not look like one is refused before any database work.
_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{8,64}")

LinkState = Literal["valid", "expired", "revoked"]

# Offered call-back times: on the local half hour, at least SLOT_LEAD away (time for the
# front desk to see the request), spread over today and the next business days.
SLOT_STEP = timedelta(minutes=30)
SLOT_LEAD = timedelta(minutes=30)
_SLOT_SEARCH_DAYS = 21
# A page loaded up to SLOT_PAGE_AGE ago still works: a time it offered is accepted if it
# was offered at any moment of that window and is still SLOT_MIN_NOTICE away. Older
# choices, or times the page never offered, are refused and the patient picks again.
SLOT_PAGE_AGE = timedelta(minutes=30)
SLOT_MIN_NOTICE = timedelta(minutes=10)
# A reload (or the back button, since the page is never cached) within this long of the
# last recorded click counts an open but adds no second timeline entry.
REOPEN_QUIET = timedelta(minutes=10)


class LinkError(Exception):
    """A patient's request on a link that cannot be done. `reason` picks the wording."""

    reason = "error"

    def __init__(self, practice: PracticeCard) -> None:
        super().__init__(self.reason)
        self.practice = practice


class LinkUnavailable(LinkError):
    """The link expired or was revoked; `reason` is the state."""

    def __init__(self, practice: PracticeCard, state: LinkState) -> None:
        super().__init__(practice)
        self.reason = state


class NoActions(LinkError):
    """The link's task is closed (or it has none): the page only shows the number."""

    reason = "closed"


class NoBookingUrl(LinkError):
    reason = "no_booking"


class InvalidSlot(LinkError):
    """Not a time the page offered (past, outside hours, garbage, or the page is too old)."""

    reason = "bad_slot"


@dataclass(frozen=True)
class LinkPage:
    """What the patient's page shows; plain values, usable after the session closes."""

    state: LinkState
    practice: PracticeCard
    timezone: str
    booking_url: str | None
    slots: list[datetime]
    # The time the patient already asked to be called at, while it stands.
    callback_at: datetime | None


def well_formed(token: str) -> bool:
    return _TOKEN_FORMAT.fullmatch(token) is not None


def find_link(session: Session, token: str) -> Link | None:
    if not well_formed(token):
        return None
    return session.scalar(select(Link).where(Link.token_hash == hash_token(token)))


def link_state(link: Link, now: datetime) -> LinkState:
    if link.revoked_at is not None:
        return "revoked"
    if now >= link.expires_at:
        return "expired"
    return "valid"


# A task the cadence closed for want of an answer still has live links: its final text
# says "you can still book at <link>". A patient who then asks for a call reopens it.
REOPENED_BY_PATIENT = frozenset({TaskStatus.CLOSED_NO_RESPONSE})


class UnknownTask(LookupError):
    pass


def revoke_links(session: Session, *, practice_id: int, task_id: int, now: datetime) -> int:
    """Staff revoke a task's live links (a text that went to the wrong person, say): each
    then opens the practice's "no longer active" page with its number. The task's
    automated texts stop too: the next one would carry a new live link to the same phone,
    and one already written would carry a dead one; staff take it from there. On the
    task's timeline; returns how many were live. Another practice's task is unknown here."""
    task = session.get(Task, task_id)
    if task is None or task.practice_id != practice_id:
        raise UnknownTask(f"practice {practice_id} has no task {task_id}")
    if task.contact_id is not None:
        lock_contact(session, task.contact_id)  # the lock order: contact, then task
    session.refresh(task, with_for_update={"key_share": True})
    revoked = revoke_task_links(session, task_id, now)
    session.add(TaskEvent(task_id=task_id, at=now, kind="links_revoked", data={"links": revoked}))
    stop_cadence(session, task, at=now, reason="links_revoked")
    return revoked


def revoke_task_links(session: Session, task_id: int, now: datetime) -> int:
    """Revoke every live link of a task; returns how many. (An expired one is left as it
    is: it shows the same page, and stays "expired" on the task page.)"""
    result = session.execute(
        update(Link)
        .where(Link.task_id == task_id, Link.revoked_at.is_(None), Link.expires_at > now)
        .values(revoked_at=now),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def open_link(session: Session, link: Link, now: datetime, *, counted: bool) -> bool:
    """Record the patient's click. A link-preview fetch (counted=False) records nothing:
    a messaging app unfurling the link is not the patient reading it."""
    if not counted:
        return False
    link.opens = (link.opens or 0) + 1
    if link.opened_at is None:
        link.opened_at = now
    if link.task_id is not None and not _clicked_recently(session, link.task_id, now):
        session.add(
            TaskEvent(
                task_id=link.task_id,
                at=now,
                kind="link_opened",
                data={"link_id": link.id, "opens": link.opens},
            )
        )
    return True


def _clicked_recently(session: Session, task_id: int, now: datetime) -> bool:
    last = session.scalar(
        select(TaskEvent.at)
        .where(TaskEvent.task_id == task_id, TaskEvent.kind == "link_opened")
        .order_by(TaskEvent.at.desc())
        .limit(1)
    )
    return last is not None and now - last < REOPEN_QUIET


def show_link(session: Session, token: str, now: datetime, *, counted: bool) -> LinkPage | None:
    """The page for a token, recording the click when it counts. None: no such link."""
    link = find_link(session, token)
    if link is None:
        return None
    practice = _practice(session, link)
    card = _card(practice)
    state = link_state(link, now)
    if state != "valid":
        return LinkPage(state, card, practice.timezone, None, [], None)
    open_link(session, link, now, counted=counted)
    task = _task(session, link)
    if link.task_id is not None and (task is None or not _takes_callbacks(task)):
        # Taken care of (or gone): booking online still works, a call-back would be
        # asked of nobody.
        return LinkPage(state, card, practice.timezone, practice.booking_url, [], None)
    callback_at = None
    if (
        task is not None
        and is_open(TaskStatus(task.status))
        and link.action == "callback"
        and task.next_action == NEXT_CALL_BACK
        and task.next_action_at is not None
        and task.next_action_at > now
    ):
        callback_at = task.next_action_at
    return LinkPage(
        state=state,
        practice=card,
        timezone=practice.timezone,
        booking_url=practice.booking_url,
        # Someone has to make the call: a link without a task offers booking only.
        slots=callback_slots(practice, now) if task is not None else [],
        callback_at=callback_at,
    )


def callback_slots(practice: Practice, now: datetime, count: int = 6) -> list[datetime]:
    """Upcoming call-back times (UTC) in the practice's business hours.

    At most half of them on one day, spread from the soonest to the latest of that day, so
    a patient who wants "as soon as possible" and one who can talk only after work both
    find a time. Holidays and closures have no business hours and are skipped.
    """
    calendar = calendar_for(practice)
    earliest = _round_up(calendar, now + SLOT_LEAD)
    per_day = max(1, -(-count // 2))
    slots: list[datetime] = []
    day = calendar.to_local(now).date()
    for _ in range(_SLOT_SEARCH_DAYS):
        if len(slots) >= count:
            break
        candidates = [
            slot
            for opens, closes in calendar.intervals_on(day)
            for slot in _grid(calendar, max(opens, earliest), closes)
        ]
        slots.extend(_spread(candidates, min(per_day, count - len(slots))))
        day += timedelta(days=1)
    return slots


def _round_up(calendar: BusinessCalendar, at: datetime) -> datetime:
    """The first local half hour at or after `at` (in UTC)."""
    at = at.astimezone(UTC)
    local = calendar.to_local(at)
    past = timedelta(
        minutes=local.minute % 30, seconds=local.second, microseconds=local.microsecond
    )
    return at if not past else at - past + SLOT_STEP


def _grid(calendar: BusinessCalendar, start: datetime, end: datetime) -> list[datetime]:
    slots: list[datetime] = []
    slot = _round_up(calendar, start)
    while slot < end:
        slots.append(slot)
        slot += SLOT_STEP
    return slots


def _spread(candidates: list[datetime], n: int) -> list[datetime]:
    if n <= 0:
        return []
    if len(candidates) <= n:
        return candidates
    if n == 1:
        return candidates[:1]
    last = len(candidates) - 1
    return [candidates[round(i * last / (n - 1))] for i in range(n)]


def slot_offered(practice: Practice, slot: datetime, now: datetime) -> bool:
    """Whether a page loaded within SLOT_PAGE_AGE could have offered `slot`.

    The offered set only changes when `now` crosses a local half hour, so checking at each
    of those moments in the window, and at `now`, covers every page of the window.
    """
    if slot.tzinfo is None or slot < now + SLOT_MIN_NOTICE:
        return False
    calendar = calendar_for(practice)
    moments = [now]
    moment = _round_up(calendar, now - SLOT_PAGE_AGE)
    while moment < now:
        moments.append(moment)
        moment += SLOT_STEP
    return any(slot in callback_slots(practice, moment) for moment in moments)


def request_callback(session: Session, link: Link, slot: datetime, now: datetime) -> datetime:
    """The patient asks to be called at `slot`; returns it. A click followed by a request
    is real contact, so the automated cadence stops (staff make the call).

    The task falls due at that time: the queue, most urgent first, then neither buries a
    call the patient wants sooner than the task's deadline nor shows one they asked for
    on Wednesday as overdue on Tuesday. A task the cadence closed is reopened.
    """
    practice, task = _actionable(session, link, now)
    if task is None or not _takes_callbacks(task):
        raise NoActions(_card(practice))
    if not slot_offered(practice, slot, now):
        raise InvalidSlot(_card(practice))
    slot = slot.astimezone(UTC)
    if not is_open(TaskStatus(task.status)):
        change_status(session, task, TaskStatus.NEW, now=now)
    task.next_action = NEXT_CALL_BACK
    task.next_action_at = slot
    task.due_at = slot
    task.updated_at = now
    link.action = "callback"
    link.action_at = now
    session.add(
        TaskEvent(
            task_id=task.id,
            at=now,
            kind="callback_requested",
            data={"at": slot.isoformat(), "link_id": link.id},
        )
    )
    contact_made(session, task, at=now, reason="callback_requested")
    return slot


def book_online(session: Session, link: Link, now: datetime) -> str:
    """The patient goes to book online; returns the practice's booking URL (and only it)."""
    practice, task = _actionable(session, link, now)
    if not practice.booking_url:
        raise NoBookingUrl(_card(practice))
    link.action = "booked"
    link.action_at = now
    if task is not None:
        task.updated_at = now
        session.add(
            TaskEvent(task_id=task.id, at=now, kind="link_booked", data={"link_id": link.id})
        )
        contact_made(session, task, at=now, reason="booked_online")
    return practice.booking_url


def practice_card(session: Session, link: Link) -> PracticeCard:
    return _card(_practice(session, link))


def _actionable(session: Session, link: Link, now: datetime) -> tuple[Practice, Task | None]:
    """The practice and the link's task, locked (None: a link without one, or gone)."""
    practice = _practice(session, link)
    state = link_state(link, now)
    if state != "valid":
        raise LinkUnavailable(_card(practice), state)
    return practice, _locked_task(session, link)


def _practice(session: Session, link: Link) -> Practice:
    practice = session.get(Practice, link.practice_id)
    assert practice is not None  # a foreign key, deleted with its links
    return practice


def _locked_task(session: Session, link: Link) -> Task | None:
    """_task for an action that changes it: its contact locked, then the task (the lock
    order everywhere), as the action stops the automated texts of the patient's other
    tasks too; a reply applied meanwhile takes the same locks in the same order.

    The task's lock is FOR NO KEY UPDATE: a page view of the same link, which updates the
    link and then adds a line to the task's timeline (a key-share lock on the task), then
    never waits on it while this action waits on the link.
    """
    if link.task_id is None:
        return None
    contact_id = session.scalar(select(Task.contact_id).where(Task.id == link.task_id))
    if contact_id is not None:
        lock_contact(session, contact_id)
    session.scalars(
        select(Task)
        .where(Task.id == link.task_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one_or_none()
    return _task(session, link)


def _task(session: Session, link: Link) -> Task | None:
    """The link's task, whatever its status; None for a link without one."""
    if link.task_id is None:
        return None
    return session.get(Task, link.task_id)


def _takes_callbacks(task: Task) -> bool:
    status = TaskStatus(task.status)
    return is_open(status) or status in REOPENED_BY_PATIENT


def _card(practice: Practice) -> PracticeCard:
    return PracticeCard(practice.id, practice.name, practice.twilio_number)
