"""Working a task on its category's cadence until the patient is reached or it runs out.

The schedule is rows in `followups` (one per task and step, with its due time). The
worker's scheduler hands due rows to RQ; running a step is idempotent (a done step is a
no-op) and writes the next step's row, whose (task, step) key is unique.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from telephony_service.cache import TtlCache
from telephony_service.db import at_commit, dialect_insert, locked, table
from telephony_service.domain.cadence import (
    DEFAULT_CADENCES,
    Action,
    CadenceInvalid,
    Step,
    dump_steps,
    parse_steps,
    step_due,
)
from telephony_service.domain.categories import Category
from telephony_service.domain.statuses import (
    NEXT_AWAIT_REPLY,
    NEXT_CALL_BACK,
    TaskStatus,
    check_transition,
    is_open,
)
from telephony_service.models import Cadence, Contact, FollowUp, Message, Practice, Task, TaskEvent
from telephony_service.services import consent, delivery
from telephony_service.services.practices import calendar_for
from telephony_service.services.tasks import change_status


@dataclass
class Outcome:
    """What a step produced: texts ready to send now."""

    messages: list[int] = field(default_factory=list)


# Every new task and every step reads its cadence; a manager's edit made in another
# process reaches this one within the cache's time.
_cadences: TtlCache[tuple[int, str], tuple[Step, ...]] = TtlCache(ttl=30.0)


def cadence_for(session: Session, practice_id: int, category: str) -> tuple[Step, ...]:
    """The practice's cadence for a category; the design's default if none is stored."""
    return _cadences.get(
        (practice_id, category), lambda: _load_cadence(session, practice_id, category)
    )


def _load_cadence(session: Session, practice_id: int, category: str) -> tuple[Step, ...]:
    stored = session.scalar(
        select(Cadence.steps).where(
            Cadence.practice_id == practice_id, Cadence.category == category
        )
    )
    if stored is not None:
        try:
            return parse_steps(stored)
        except CadenceInvalid:
            pass  # saved by hand and broken: the default is the safe reading
    return DEFAULT_CADENCES[Category(category)]


def store_default_cadences(session: Session, practice_id: int, now: datetime) -> None:
    """Every category's default, stored so the manager pages edit the practice's own copy."""
    existing = set(
        session.scalars(select(Cadence.category).where(Cadence.practice_id == practice_id))
    )
    for category, steps in DEFAULT_CADENCES.items():
        if category.value not in existing:
            session.add(
                Cadence(
                    practice_id=practice_id,
                    category=category.value,
                    steps=dump_steps(steps),
                    updated_at=now,
                )
            )


def set_cadence(
    session: Session, practice_id: int, category: Category, steps: tuple[Step, ...], now: datetime
) -> None:
    row = session.scalar(
        select(Cadence).where(Cadence.practice_id == practice_id, Cadence.category == category)
    )
    if row is None:
        row = Cadence(practice_id=practice_id, category=category.value, steps={}, updated_at=now)
        session.add(row)
    row.steps = dump_steps(steps)
    row.updated_at = now
    _cadences.clear()


def start(
    session: Session,
    practice: Practice,
    task: Task,
    contact: Contact | None,
    *,
    now: datetime,
    base_url: str,
    new_contact: bool = False,
) -> Outcome:
    """Schedule a new task's first step, and run it at once if it is due now (the
    text-back after a missed call must not wait for the scheduler's next pass).

    `new_contact`: the contact was created in this transaction, so it has no texts yet.
    """
    steps = cadence_for(session, practice.id, task.category)
    due = step_due(steps[0], previous=now, sla_due=task.due_at, calendar=calendar_for(practice))
    # Not added to the session: the step is written below, with its successor, once its
    # state is known (written first and run at once, it would be an INSERT and an UPDATE).
    followup = FollowUp(
        task_id=task.id,
        step=0,
        action=steps[0].action.value,
        template=steps[0].template,
        due_at=due,
        state="pending",
        # Run here, or by the scheduler when due: either way not enqueued yet.
        enqueued_at=None,
        done_at=None,
    )
    outcome = Outcome()
    rows = [followup]
    if due <= now:
        following = _run(
            session,
            practice,
            task,
            contact,
            followup,
            steps,
            now=now,
            base_url=base_url,
            outcome=outcome,
            new_thread=new_contact,
        )
        if following is not None:
            rows.append(following)
    _write_steps(session, rows)
    return outcome


def run_followup(session: Session, followup_id: int, *, now: datetime, base_url: str) -> Outcome:
    """Run one due step. A step already run, canceled, or not yet due is a no-op."""
    outcome = Outcome()
    task_id = session.scalar(
        select(FollowUp.task_id).where(
            FollowUp.id == followup_id, FollowUp.state == "pending", FollowUp.due_at <= now
        )
    )
    if task_id is None:
        session.rollback()
        return outcome
    contact, task, followup = _lock_step(session, task_id, followup_id)
    if followup.state != "pending" or followup.due_at > now:
        session.rollback()
        return outcome
    practice = session.get_one(Practice, task.practice_id)
    if not is_open(TaskStatus(task.status)) or task.cadence_stopped_at is not None:
        followup.state = "canceled"
        followup.done_at = now
        session.commit()
        return outcome
    steps = cadence_for(session, practice.id, task.category)
    following = _run(
        session,
        practice,
        task,
        contact,
        followup,
        steps,
        now=now,
        base_url=base_url,
        outcome=outcome,
    )
    if following is not None:
        _write_steps(session, [following])
    session.commit()
    return outcome


def _lock_step(
    session: Session, task_id: int, followup_id: int
) -> tuple[Contact | None, Task, FollowUp]:
    """A step with its task and the task's contact, locked and read afresh.

    Lock order everywhere: contact, then task, then the rest. A STOP (which locks the
    contact, then its tasks) and a step writing a text to the same patient would otherwise
    each hold what the other waits for.
    """
    contact_id = session.scalar(select(Task.contact_id).where(Task.id == task_id))
    contact = consent.lock_contact(session, contact_id) if contact_id is not None else None
    return contact, locked(session, Task, task_id), locked(session, FollowUp, followup_id)


def _run(
    session: Session,
    practice: Practice,
    task: Task,
    contact: Contact | None,
    followup: FollowUp,
    steps: tuple[Step, ...],
    *,
    now: datetime,
    base_url: str,
    outcome: Outcome,
    new_thread: bool = False,
) -> FollowUp | None:
    """Run a step; returns its successor, for the caller to write (None: the last one).

    `new_thread`: the task and its contact are new in this transaction (queue_text).
    """
    index = min(followup.step, len(steps) - 1)
    action = Action(followup.action)
    if action is Action.CLOSE:
        waiting = session.scalar(
            select(func.max(Message.not_before)).where(
                Message.task_id == task.id,
                Message.kind == "automated",
                Message.status.in_(("pending", "claimed", "unknown")),
            )
        )
        if waiting is not None:
            # The final text is still waiting (quiet hours, a cap): closing now would
            # cancel it. Close at the end of the day it goes out instead.
            followup.due_at = calendar_for(practice).close_of_day(max(waiting, now))
            followup.enqueued_at = None
            return None
        _close(session, task, now)
    else:
        if action is Action.CALL and task.next_action != delivery.NEXT_CALL_MANUALLY:
            task.next_action = NEXT_CALL_BACK
            task.next_action_at = followup.due_at
            task.updated_at = now
        template = followup.template
        if template is not None and contact is not None and task.flag != "sms_undeliverable":
            message = delivery.queue_text(
                session,
                practice=practice,
                contact=contact,
                task=task,
                template=template,
                kind="automated",
                dedupe_key=f"task:{task.id}:step:{followup.step}:{template}",
                attempt=followup.step,
                now=now,
                base_url=base_url,
                new_thread=new_thread,
            )
            if message is not None:
                outcome.messages.append(message.id)
    followup.state = "done"
    followup.done_at = now
    if action is Action.CLOSE:
        return None
    # A cadence the manager shortened since this task started may have no step after this
    # one: the task goes on to the new cadence's end (its last step closes the task), so it
    # is never left open with nothing scheduled.
    following = steps[index + 1] if index + 1 < len(steps) else steps[-1]
    due = step_due(
        following, previous=followup.due_at, sla_due=task.due_at, calendar=calendar_for(practice)
    )
    if following.action is Action.CLOSE and task.next_action == NEXT_CALL_BACK:
        task.next_action = NEXT_AWAIT_REPLY
        task.next_action_at = due
    return FollowUp(
        task_id=task.id,
        step=followup.step + 1,
        action=following.action.value,
        template=following.template,
        due_at=due,
        state="pending",
        enqueued_at=None,
        done_at=None,
    )


_STEP_COLUMNS = (
    "task_id",
    "step",
    "action",
    "template",
    "due_at",
    "state",
    "enqueued_at",
    "done_at",
)


def _write_steps(session: Session, rows: list[FollowUp]) -> None:
    """Insert steps in one statement, or with the commit where the caller allows it (see
    db.at_commit: nothing reads the schedule back before it). (task, step) is unique and a
    step that exists already is left as it is, so a step run twice never schedules its
    successor twice."""
    at_commit(
        session,
        _steps_statement(session.get_bind().dialect.name),
        [{name: getattr(row, name) for name in _STEP_COLUMNS} for row in rows],
    )


@functools.cache
def _steps_statement(dialect: str) -> Any:
    # Built once: building an upsert costs more CPU than the database takes to run it.
    # Several rows go as SQLAlchemy's "insertmanyvalues", a single multi-row INSERT.
    return dialect_insert(dialect)(table(FollowUp)).on_conflict_do_nothing(
        index_elements=["task_id", "step"]
    )


def _close(session: Session, task: Task, now: datetime) -> None:
    current = TaskStatus(task.status)
    try:
        check_transition(current, TaskStatus.CLOSED_NO_RESPONSE)
    except ValueError:
        return  # e.g. a task that is waiting on insurance: staff close it
    change_status(session, task, TaskStatus.CLOSED_NO_RESPONSE, now=now)


ENQUEUE_LEASE = delivery.ENQUEUE_LEASE


# What stopped a cadence without the patient having been spoken to: a reply, a call that
# rang out, a call-back request. An agent who then calls and misses the patient resumes it.
# An opt-out, a booking or a conversation keep it stopped.
RESUMABLE_STOPS = frozenset({"reply", "inbound_call", "callback_requested"})
_ATTEMPT_STATUSES = frozenset(
    {
        TaskStatus.NEW,
        TaskStatus.FIRST_ATTEMPTED,
        TaskStatus.LEFT_VOICEMAIL,
        TaskStatus.SECOND_ATTEMPT_SCHEDULED,
    }
)


def follow_agent(
    session: Session,
    practice: Practice,
    task: Task,
    contact: Contact | None,
    *,
    now: datetime,
    next_at: datetime,
) -> bool:
    """After an agent's call that missed the patient, the automated follow-ups go on from
    the next attempt time the agent set: the task's next step moves to it (a closing step
    to the end of that day, so the task never closes at the agent's own attempt). A
    cadence stopped by a reply, an inbound call or a call-back request resumes there.

    The caller holds the contact's and the task's locks. Returns whether the schedule
    changed.
    """
    if TaskStatus(task.status) not in _ATTEMPT_STATUSES:
        return False
    if contact is not None and contact.opted_out_at is not None:
        return False
    resumed = task.cadence_stopped_at is not None
    if resumed and task.cadence_stop_reason not in RESUMABLE_STOPS:
        return False
    # The step that was next when the cadence stopped (canceled by the stop), or the one
    # pending now.
    state = "canceled" if resumed else "pending"
    step = session.scalar(
        select(FollowUp)
        .where(FollowUp.task_id == task.id, FollowUp.state == state)
        .order_by(FollowUp.step.desc())
        .limit(1)
        .with_for_update()
    )
    if step is None:
        return False
    due = next_at
    if step.action == Action.CLOSE.value:
        due = max(step.due_at, calendar_for(practice).close_of_day(next_at))
    step.state = "pending"
    step.due_at = due
    step.enqueued_at = None
    step.done_at = None
    if resumed:
        task.cadence_stopped_at = None
        task.cadence_stop_reason = None
        task.updated_at = now
        session.add(
            TaskEvent(task_id=task.id, at=now, kind="cadence_resumed", data={"step": step.step})
        )
    return True


# Pauses after a step's job failed, before it is offered again; after the last, a person.
STEP_RETRY_PAUSES = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
)
MAX_STEP_FAILURES = len(STEP_RETRY_PAUSES) + 1


def step_failed(session: Session, followup_id: int, *, now: datetime) -> bool:
    """A step's job failed: it is offered again after a growing pause, or, its failures
    run out, the task's cadence stops and a person calls. Commits. True if offered again.

    Without a count a step failing for good (a bug, bad data) was offered every lease,
    forever, and the patient heard nothing more.
    """
    task_id = session.scalar(
        select(FollowUp.task_id).where(FollowUp.id == followup_id, FollowUp.state == "pending")
    )
    if task_id is None:
        session.rollback()
        return False
    _, task, followup = _lock_step(session, task_id, followup_id)
    if followup.state != "pending":
        session.rollback()
        return False
    followup.failures += 1
    if followup.failures < MAX_STEP_FAILURES:
        # Offered again once the lease has run out, which it will at the end of the pause.
        followup.enqueued_at = now + STEP_RETRY_PAUSES[followup.failures - 1] - ENQUEUE_LEASE
        session.commit()
        return True
    followup.state = "failed"
    followup.done_at = now
    consent.stop_cadence(session, task, at=now, reason="step_failed")
    if is_open(TaskStatus(task.status)):
        task.next_action, task.next_action_at = NEXT_CALL_BACK, now
    session.add(
        TaskEvent(
            task_id=task.id,
            at=now,
            kind="cadence_failed",
            text="an automated follow-up kept failing: call the patient",
            data={"step": followup.step},
        )
    )
    session.commit()
    return False


def claim_due(session: Session, *, now: datetime, limit: int = 500) -> list[int]:
    """Due steps to hand to RQ, marked enqueued (offered again only if RQ lost them)."""
    ids = list(
        session.scalars(
            select(FollowUp.id)
            .where(
                FollowUp.state == "pending",
                FollowUp.due_at <= now,
                or_(
                    FollowUp.enqueued_at.is_(None),
                    and_(FollowUp.enqueued_at < now - ENQUEUE_LEASE),
                ),
            )
            .order_by(FollowUp.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        session.rollback()
        return []
    session.execute(
        update(FollowUp).where(FollowUp.id.in_(ids)).values(enqueued_at=now),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return ids
