"""Opt-outs and opt-ins: honoured at once, kept with time and source."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from telephony_service.db import locked
from telephony_service.domain.statuses import NEXT_AWAIT_REPLY, NEXT_CALL_BACK, OPEN
from telephony_service.models import ConsentChange, Contact, FollowUp, Message, Task, TaskEvent

# Texts that have not left yet; a claimed one is mid-send and holds the contact's lock
# (see delivery.send_message), so an opt-out waits for it rather than racing it. An
# "unknown" one may have reached the patient (Twilio's answer was lost): reconciliation
# settles it from Twilio's list, and one it puts back to send meets the send's own checks
# (opted out, cadence stopped, task closed) before anything goes. Canceled here, a text
# the patient did get would drop out of the caps' history and could not be set right.
UNSENT = ("pending",)


def lock_contact(session: Session, contact_id: int) -> Contact:
    """The contact row, locked against a send in flight (which holds it shared)."""
    return locked(session, Contact, contact_id)


def opt_out(
    session: Session,
    contact: Contact,
    *,
    at: datetime,
    source: str,
    message_sid: str | None = None,
    task_id: int | None = None,
) -> bool:
    """Mark the contact opted out, cancel every text not yet sent and stop the automated
    follow-ups of every open task (whatever the source: a keyword, a revocation, the
    carrier's 21610). False if the contact already was opted out.

    A cadence left running would only write texts for the gate to block, and then close
    the task "no response" with nothing on its timeline to say why.
    """
    cancel_unsent(session, contact_id=contact.id, at=at, reason="opted out")
    newly = contact.opted_out_at is None
    if newly:
        contact.opted_out_at = at
        session.add(
            ConsentChange(
                contact_id=contact.id,
                at=at,
                action="opt_out",
                source=source,
                message_sid=message_sid,
                task_id=task_id,
            )
        )
    for task in open_tasks(session, contact.id):
        if newly:
            session.add(
                TaskEvent(task_id=task.id, at=at, kind="opted_out", data={"source": source})
            )
        stop_cadence(session, task, at=at, reason="opted_out")
    return newly


def opt_in(
    session: Session,
    contact: Contact,
    *,
    at: datetime,
    source: str,
    message_sid: str | None = None,
) -> bool:
    """Texts may go to the contact again. False if it was not opted out."""
    if contact.opted_out_at is None:
        return False
    contact.opted_out_at = None
    session.add(
        ConsentChange(
            contact_id=contact.id, at=at, action="opt_in", source=source, message_sid=message_sid
        )
    )
    for task in open_tasks(session, contact.id):
        session.add(TaskEvent(task_id=task.id, at=at, kind="opted_in", data={"source": source}))
    return True


def cancel_unsent(
    session: Session,
    *,
    at: datetime,
    reason: str,
    contact_id: int | None = None,
    task_id: int | None = None,
    automated_only: bool = False,
) -> int:
    """Cancel texts that have not left, of a contact or of a task."""
    query = update(Message).where(Message.status.in_(UNSENT))
    if contact_id is not None:
        query = query.where(Message.contact_id == contact_id)
    if task_id is not None:
        query = query.where(Message.task_id == task_id)
    if automated_only:
        query = query.where(Message.kind == "automated")
    result = session.execute(
        query.values(status="canceled", defer_reason=reason[:200], updated_at=at),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def contact_made(
    session: Session, task: Task, *, at: datetime, reason: str, by_patient: bool = False
) -> None:
    """Real contact with the patient (a reply, a call from them, a link they acted on, an
    agent who reached them) ends the automated follow-ups of this task and of every other
    open task of theirs: a patient who has just written or spoken to the practice must not
    go on getting "we tried to reach you" texts about another subject. The other tasks stay
    open for staff, with the cause on their timelines.

    A task left waiting for a reply (its closing step went with the cadence) gets a call
    back due now instead: the other tasks, and this one when the patient reached out
    (`by_patient`: a reply, a call) rather than an agent, whose outcome sets its own.
    """
    stop_cadence(session, task, at=at, reason=reason)
    if by_patient:
        _call_back_if_waiting(task, at)
    if task.contact_id is None:
        return
    for other in open_tasks(session, task.contact_id):
        if other.id == task.id:
            continue
        if stop_cadence(session, other, at=at, reason=reason, via_task=task.id):
            _call_back_if_waiting(other, at)


def _call_back_if_waiting(task: Task, at: datetime) -> None:
    if task.next_action in (None, NEXT_AWAIT_REPLY):
        task.next_action, task.next_action_at = NEXT_CALL_BACK, at


def stop_cadence(
    session: Session, task: Task, *, at: datetime, reason: str, via_task: int | None = None
) -> bool:
    """Real contact (or an opt-out) ends the automated follow-ups of a task.

    The task stays open for staff; pending steps and automated texts are canceled.
    `via_task`: the contact was made on that other task of the patient's. False if the
    cadence had already stopped.
    """
    if task.cadence_stopped_at is not None:
        return False
    task.cadence_stopped_at = at
    task.cadence_stop_reason = reason[:32]
    task.updated_at = at
    session.execute(
        update(FollowUp)
        .where(FollowUp.task_id == task.id, FollowUp.state == "pending")
        .values(state="canceled", done_at=at),
        execution_options={"synchronize_session": False},
    )
    cancel_unsent(session, task_id=task.id, at=at, reason=reason, automated_only=True)
    data: dict[str, object] = {"reason": reason}
    if via_task is not None:
        data["task_id"] = via_task
    session.add(TaskEvent(task_id=task.id, at=at, kind="cadence_stopped", data=data))
    return True


def open_tasks(session: Session, contact_id: int) -> list[Task]:
    return list(
        session.scalars(
            select(Task).where(
                Task.contact_id == contact_id, Task.status.in_([s.value for s in OPEN])
            )
        )
    )
