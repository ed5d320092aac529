"""The callback queue: open tasks of a practice, most urgent first, and "take next".

Every query here keeps to the partial indexes ix_tasks_queue / ix_tasks_queue_unowned
(practice_id, due_at, id WHERE open), so the closed history that makes up most of the
table is never read and a page costs the same with 100 or 100,000 open tasks:

- the open-status condition is written exactly as the indexes' predicate, with the
  statuses as SQL literals, not bound parameters. PostgreSQL can only prove that a query
  implies a partial index's predicate from constants (a prepared statement's generic plan
  would otherwise lose the index), and SQLite only uses a partial index whose WHERE term
  appears verbatim in the query;
- pages are read by keyset ((due_at, id) after the cursor), never by OFFSET;
- the header counts stop at COUNT_CAP: counting 100,000 rows on every refresh of every
  agent's screen would cost more than the page itself, and "1,000+" says enough;
- attempts are counted for the page's rows only, one grouped query per table.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from telephony_service.domain.categories import LABELS as CATEGORY_LABELS
from telephony_service.domain.categories import Category
from telephony_service.domain.categories import label as category_label
from telephony_service.domain.phones import mask_phone
from telephony_service.domain.statuses import OPEN, TaskStatus
from telephony_service.domain.statuses import label as status_label
from telephony_service.models import (
    OPEN_STATUSES_SQL,
    AuditEntry,
    CallAttempt,
    Contact,
    Link,
    Message,
    Practice,
    Task,
    TaskEvent,
    User,
)
from telephony_service.services import audit, lanes
from telephony_service.services.lanes import LaneView

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
COUNT_CAP = 1000
# A compare-and-swap claim (SQLite) that lost a race reads the next candidate; this many
# losses in a row means the queue is being emptied faster than we can read it.
CLAIM_TRIES = 5

CLINICAL = TaskStatus.NEEDS_CLINICAL_ESCALATION.value
# In the order of the indexes' predicate: SQLite matches the term as written.
OPEN_IN_INDEX_ORDER: tuple[str, ...] = tuple(re.findall(r"'([a-z_]+)'", OPEN_STATUSES_SQL))
if set(OPEN_IN_INDEX_ORDER) != {status.value for status in OPEN}:
    raise RuntimeError("models.OPEN_STATUSES_SQL no longer matches domain.statuses.OPEN")

OWNER_ANY = ""
OWNER_MINE = "mine"
OWNER_UNASSIGNED = "unassigned"

ROLE_AGENT = "agent"
ROLE_CLINICIAN = "clinician"
ROLE_MANAGER = "manager"

# A "Take next" press sent again (a double click, a resubmitted form) within this long
# answers with the task the first one took instead of taking another.
PRESS_WINDOW = timedelta(minutes=5)
MAX_NONCE_LENGTH = 64
# A patient who asked for a call at a time is not handed out by "take next" before it: the
# agent would ring on Tuesday for the call they asked for on Wednesday (or at 9:00 for
# 11:00), and would own the task when the time came. This close to it the call is on time.
REQUESTED_CALL_LEAD = timedelta(minutes=10)


class BadQueueFilter(ValueError):
    """A filter or cursor the queue page did not give out."""


@dataclass(frozen=True)
class QueueFilters:
    owner: str = OWNER_ANY
    categories: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    my_lanes: bool = False

    @property
    def active(self) -> bool:
        return bool(self.owner or self.categories or self.statuses or self.my_lanes)

    def query_args(self) -> dict[str, Any]:
        """The filters as the queue page's GET form sends them (for links and redirects)."""
        args: dict[str, Any] = {}
        if self.owner:
            args["owner"] = self.owner
        if self.categories:
            args["category"] = list(self.categories)
        if self.statuses:
            args["status"] = list(self.statuses)
        if self.my_lanes:
            args["lanes"] = "1"
        return args


def parse_filters(args: Mapping[str, Sequence[str]], *, role: str) -> QueueFilters:
    """Filters from the page's GET form: each key maps to all the values sent for it."""

    def values(key: str) -> list[str]:
        return [
            part.strip() for raw in args.get(key, ()) for part in raw.split(",") if part.strip()
        ]

    owner = (values("owner") or [OWNER_ANY])[0]
    # Short forms a bookmark or a test may use: ?mine=1, ?unassigned=1.
    if _flag(values("mine")):
        owner = OWNER_MINE
    elif _flag(values("unassigned")):
        owner = OWNER_UNASSIGNED
    if owner not in (OWNER_ANY, OWNER_MINE, OWNER_UNASSIGNED):
        raise BadQueueFilter(f"owner must be {OWNER_MINE} or {OWNER_UNASSIGNED}")
    categories: list[str] = []
    for value in values("category"):
        if value not in {category.value for category in Category}:
            raise BadQueueFilter(f"{value!r} is not a category")
        if value not in categories:
            categories.append(value)
    statuses: list[str] = []
    allowed = allowed_statuses(role)
    for value in values("status"):
        if value not in allowed:
            raise BadQueueFilter(f"{value!r} is not a status this queue shows")
        if value not in statuses:
            statuses.append(value)
    return QueueFilters(
        owner=owner,
        categories=tuple(categories),
        statuses=tuple(statuses),
        my_lanes=_flag(values("lanes")),
    )


def _flag(values: list[str]) -> bool:
    return bool(values) and values[0].lower() in ("1", "on", "true", "yes")


# --- role views ----------------------------------------------------------------------


def default_statuses(role: str) -> tuple[str, ...]:
    """What a role's queue shows unfiltered: clinical escalations go to licensed staff."""
    if role == ROLE_CLINICIAN:
        return (CLINICAL,)
    return tuple(status for status in OPEN_IN_INDEX_ORDER if status != CLINICAL)


def allowed_statuses(role: str) -> tuple[str, ...]:
    """What a role may filter by: managers any status, closed ones included."""
    if role == ROLE_MANAGER:
        return tuple(status.value for status in TaskStatus)
    if role == ROLE_CLINICIAN:
        return OPEN_IN_INDEX_ORDER
    return default_statuses(role)


def _in(column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    result: ColumnElement[bool] = column.in_([literal(v, literal_execute=True) for v in values])
    return result


def _status_terms(statuses: Sequence[str]) -> list[ColumnElement[bool]]:
    """The status condition, with the indexes' predicate whenever only open statuses are
    asked for (a manager looking at closed ones reads ix_tasks_practice_status_due)."""
    wanted = [status for status in OPEN_IN_INDEX_ORDER if status in statuses]
    if len(wanted) == len(statuses):
        terms = [_in(Task.status, OPEN_IN_INDEX_ORDER)]
        if len(wanted) < len(OPEN_IN_INDEX_ORDER):
            terms.append(_in(Task.status, wanted))
        return terms
    return [_in(Task.status, statuses)]


# --- the page ------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    id: int
    category: str
    category_label: str
    # First name, else the masked number: the full number is never in the list.
    who: str
    age: str
    attempts: int
    owner: str | None
    owned_by_me: bool
    due_at: datetime
    overdue: bool
    countdown: str
    status: str
    status_label: str
    flag: str | None

    @property
    def due_iso(self) -> str:
        return iso_utc(self.due_at)


@dataclass(frozen=True)
class QueueCounts:
    """Counts of the role's whole queue; each stops at COUNT_CAP + 1 (shown "1,000+")."""

    open: int
    overdue: int
    unassigned: int

    @staticmethod
    def shown(count: int) -> str:
        return f"{COUNT_CAP:,}+" if count > COUNT_CAP else f"{count:,}"

    def as_text(self) -> dict[str, str]:
        return {
            "open": self.shown(self.open),
            "overdue": self.shown(self.overdue),
            "unassigned": self.shown(self.unassigned),
        }


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    next_cursor: str | None
    counts: QueueCounts
    filters: QueueFilters
    now: datetime
    # The user's lanes that are on now.
    lanes: list[LaneView] = field(default_factory=list)
    # "My lanes" was asked for while none of the user's lanes is on.
    no_active_lane: bool = False
    view: str = ROLE_AGENT
    status_choices: tuple[str, ...] = ()

    @property
    def category_choices(self) -> list[tuple[str, str]]:
        return [(category.value, CATEGORY_LABELS[category]) for category in Category]

    @property
    def status_choice_labels(self) -> list[tuple[str, str]]:
        return [(status, status_label(status)) for status in self.status_choices]


def queue_page(
    session: Session,
    *,
    practice: Practice,
    user: User,
    now: datetime,
    filters: QueueFilters,
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
) -> QueuePage:
    """One page of the user's queue, most urgent (earliest deadline) first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQueueFilter(f"limit must be 1 to {MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor else None
    active = lanes.active_lanes(session, practice=practice, user=user, now=now)
    base = [Task.practice_id == practice.id]
    role_statuses = default_statuses(user.role)
    counts = _counts(session, [*base, *_status_terms(role_statuses)], now)

    terms = [*base, *_status_terms(filters.statuses or role_statuses)]
    if filters.owner == OWNER_MINE:
        terms.append(Task.owner_id == user.id)
    elif filters.owner == OWNER_UNASSIGNED:
        terms.append(Task.owner_id.is_(None))
    categories = set(filters.categories) if filters.categories else None
    no_active_lane = False
    if filters.my_lanes:
        in_lanes = set(lanes.lane_categories(active))
        no_active_lane = not in_lanes
        categories = in_lanes if categories is None else categories & in_lanes
    if categories is not None:
        if not categories:
            terms.append(Task.id.is_(None))  # nothing matches; keeps one code path
        else:
            terms.append(_in(Task.category, sorted(categories)))
    if after is not None:
        terms.append(tuple_(Task.due_at, Task.id) > tuple_(*after))

    found = session.execute(
        select(
            Task.id,
            Task.category,
            Task.status,
            Task.flag,
            Task.name,
            Task.created_at,
            Task.due_at,
            Task.owner_id,
            Contact.phone,
            User.name.label("owner_name"),
            User.email.label("owner_email"),
        )
        .outerjoin(Contact, Contact.id == Task.contact_id)
        .outerjoin(User, User.id == Task.owner_id)
        .where(*terms)
        .order_by(Task.due_at, Task.id)
        .limit(limit + 1)
    ).all()
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        next_cursor = encode_cursor(found[-1].due_at, found[-1].id)
    attempts = _attempts(session, [row.id for row in found])
    rows = [
        QueueRow(
            id=row.id,
            category=row.category,
            category_label=category_label(row.category),
            who=_who(row.name, row.phone),
            age=age_text(now - row.created_at),
            attempts=attempts.get(row.id, 0),
            owner=(row.owner_name or row.owner_email) if row.owner_id is not None else None,
            owned_by_me=row.owner_id == user.id,
            due_at=row.due_at,
            overdue=row.due_at <= now,
            countdown=countdown_text(row.due_at - now),
            status=row.status,
            status_label=status_label(row.status),
            flag=row.flag,
        )
        for row in found
    ]
    return QueuePage(
        rows=rows,
        next_cursor=next_cursor,
        counts=counts,
        filters=filters,
        now=now,
        lanes=active,
        no_active_lane=no_active_lane and filters.my_lanes,
        view=ROLE_CLINICIAN if user.role == ROLE_CLINICIAN else ROLE_AGENT,
        status_choices=allowed_statuses(user.role),
    )


def _counts(session: Session, terms: list[ColumnElement[bool]], now: datetime) -> QueueCounts:
    def capped(*extra: ColumnElement[bool]) -> Any:
        limited = select(literal_column("1")).where(*terms, *extra).limit(COUNT_CAP + 1).subquery()
        return select(func.count()).select_from(limited).scalar_subquery()

    # One round trip for the three numbers.
    row = session.execute(
        select(capped(), capped(Task.due_at <= now), capped(Task.owner_id.is_(None)))
    ).one()
    return QueueCounts(open=int(row[0]), overdue=int(row[1]), unassigned=int(row[2]))


def _attempts(session: Session, task_ids: list[int]) -> dict[int, int]:
    """Outbound calls (call attempts) plus outbound texts that reached the provider."""
    if not task_ids:
        return {}
    totals: dict[int, int] = {}
    calls = session.execute(
        select(CallAttempt.task_id, func.count())
        .where(CallAttempt.task_id.in_(task_ids))
        .group_by(CallAttempt.task_id)
    )
    # Answers to STOP/HELP are not attempts to reach the patient.
    texts = session.execute(
        select(Message.task_id, func.count())
        .where(
            Message.task_id.in_(task_ids),
            Message.sent_at.is_not(None),
            Message.kind != "reply",
        )
        .group_by(Message.task_id)
    )
    for task_id, count in [*calls, *texts]:
        if task_id is not None:
            totals[task_id] = totals.get(task_id, 0) + int(count)
    return totals


def _who(name: str | None, phone: str | None) -> str:
    if name and name.strip():
        return name.split()[0]
    if phone:
        return mask_phone(phone)
    return "No callback number"


def age_text(age: timedelta) -> str:
    """ "12 min", "3 h", "2 d": how long the patient has been waiting."""
    minutes = max(0, int(age.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def countdown_text(left: timedelta) -> str:
    """The SLA countdown as static/queue.js writes it each second: "12:04" left, or
    "overdue 12:04"; hours as "2:05:09", days as "3 d 4 h"."""
    overdue = left.total_seconds() <= 0
    seconds = int(abs(left.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours}:{minutes:02d}:{secs:02d}"
    else:
        text = f"{minutes:02d}:{secs:02d}"
    return f"overdue {text}" if overdue else text


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- cursors -------------------------------------------------------------------------


def encode_cursor(due: datetime, task_id: int) -> str:
    raw = json.dumps([iso_utc(due), task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        due, task_id = json.loads(raw)
        parsed = datetime.fromisoformat(due.replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError, binascii.Error):
        raise BadQueueFilter("this page link is no longer valid") from None
    if parsed.tzinfo is None or not isinstance(task_id, int) or isinstance(task_id, bool):
        raise BadQueueFilter("this page link is no longer valid")
    return parsed, task_id


# --- take next -----------------------------------------------------------------------


def take_next(
    session: Session,
    *,
    practice: Practice,
    user: User,
    now: datetime,
    lanes_only: bool = False,
    nonce: str | None = None,
) -> Task | None:
    """Claim the most urgent unowned task of the user's queue; None when none is left.

    The user's lanes that are on now come first; with `lanes_only`, nothing else.
    Atomic: two agents pressing at once get two different tasks. `nonce` names one press
    of the button (the page's form gives out a fresh one): the same press sent again
    within PRESS_WINDOW gets the task it took the first time. Commits.
    """
    if nonce is not None:
        if not nonce or len(nonce) > MAX_NONCE_LENGTH:
            raise BadQueueFilter("this form is not one the queue page gave out")
        # One press of this user at a time: a double click's second request waits here
        # for the first to commit its claim, then finds it (SQLite serialises all writers).
        # NO KEY UPDATE: rows that merely reference the user (audit entries) don't wait.
        session.execute(select(User.id).where(User.id == user.id).with_for_update(key_share=True))
        earlier = _taken_by_press(session, practice=practice, user=user, now=now, nonce=nonce)
        if earlier is not None:
            session.commit()
            return session.get(Task, earlier, populate_existing=True)
    base = [
        Task.practice_id == practice.id,
        Task.owner_id.is_(None),
        *_status_terms(default_statuses(user.role)),
        _not_waiting_for_requested_time(now),
    ]
    in_lanes = lanes.lane_categories(
        lanes.active_lanes(session, practice=practice, user=user, now=now)
    )
    choices: list[list[ColumnElement[bool]]] = []
    if in_lanes:
        choices.append([*base, _in(Task.category, in_lanes)])
    if not lanes_only:
        choices.append(base)
    for terms in choices:
        task_id = _claim(session, terms, user.id, now)
        if task_id is not None:
            break
    else:
        session.rollback()
        return None
    session.add(TaskEvent(task_id=task_id, at=now, kind="assigned", data={"user_id": user.id}))
    audit.record(
        session,
        practice_id=practice.id,
        user_id=user.id,
        action="took_task",
        now=now,
        task_id=task_id,
        data=None if nonce is None else {"nonce": nonce},
    )
    session.commit()
    return session.get(Task, task_id, populate_existing=True)


def _not_waiting_for_requested_time(now: datetime) -> ColumnElement[bool]:
    # Only a patient's request moves a task's due time past its deadline (links'
    # request_callback), so a due time still ahead on a task whose link asked for a call
    # is that request's time. Deadlines ahead (an SLA) may be worked early, as before.
    requested = select(Link.id).where(Link.task_id == Task.id, Link.action == "callback")
    return or_(Task.due_at <= now + REQUESTED_CALL_LEAD, ~requested.exists())


def _taken_by_press(
    session: Session, *, practice: Practice, user: User, now: datetime, nonce: str
) -> int | None:
    # The audit log, read by ix_audit_log_practice_at: a few minutes of one practice.
    recent = session.execute(
        select(AuditEntry.task_id, AuditEntry.data).where(
            AuditEntry.practice_id == practice.id,
            AuditEntry.at > now - PRESS_WINDOW,
            AuditEntry.action == "took_task",
            AuditEntry.user_id == user.id,
        )
    )
    for task_id, data in recent:
        if task_id is not None and (data or {}).get("nonce") == nonce:
            return int(task_id)
    return None


def _claim(
    session: Session, terms: list[ColumnElement[bool]], user_id: int, now: datetime
) -> int | None:
    candidates = select(Task.id).where(*terms).order_by(Task.due_at, Task.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        # A row another agent is claiming right now is skipped, not waited for; a row
        # claimed and committed since our snapshot fails the re-check under the lock.
        task_id = session.scalar(candidates.with_for_update(skip_locked=True))
        if task_id is not None:
            session.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(owner_id=user_id, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        return task_id
    # SQLite has no row locks: a compare-and-swap that must change exactly one row.
    for _ in range(CLAIM_TRIES):
        task_id = session.scalar(candidates)
        if task_id is None:
            return None
        claimed = session.execute(
            update(Task)
            .where(Task.id == task_id, *terms)
            .values(owner_id=user_id, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) == 1:
            return int(task_id)
    return None
