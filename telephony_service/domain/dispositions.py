"""What an agent records after a call, and what it does to the task.

A disposition maps onto the status table (domain.statuses.TRANSITIONS); it never adds a
move of its own. Decisions made here:

- Reached outcomes name one target status and must reach it: a move the table forbids (an
  administrative agent closing a clinical escalation, insurance follow-up on an escalated
  task) is refused as a whole, never half applied.
- Not-reached outcomes are a path of statuses (left voicemail, then second attempt
  scheduled) applied as far as the table allows: on a task the patient has already been
  reached on, a missed follow-up call does not undo that, so the status stays and only the
  note and the next action time are recorded.
- A wrong number closes the task as resolved with the flag "wrong_number": nobody can be
  reached on that number, and the flag tells a manager reading closed tasks why. (A clinical
  escalation is still only closed by licensed staff.)
- On a clinical escalation an administrative agent records only a call that did not reach
  the patient, as a note (`note_only`): the status, the owner and the next action stay with
  the care team, whose take-next only finds unowned tasks.
- Nothing is recorded on a closed task: a patient who comes back reopens it (or opens a new
  one) through the webhooks, not through an agent's note.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from telephony_service.domain.statuses import (
    CLINICAL_ONLY,
    IllegalTransition,
    TaskStatus,
    check_transition,
    is_open,
)


class Disposition(enum.StrEnum):
    # Reached: a person spoke with the patient.
    SCHEDULED = "scheduled"
    INSURANCE_FOLLOWUP = "needs_insurance_followup"
    CLINICAL_ESCALATION = "needs_clinical_escalation"
    RESOLVED = "resolved"
    # Not reached.
    LEFT_VOICEMAIL = "left_voicemail"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"


_D = Disposition
_S = TaskStatus

REACHED: frozenset[Disposition] = frozenset(
    {_D.SCHEDULED, _D.INSURANCE_FOLLOWUP, _D.CLINICAL_ESCALATION, _D.RESOLVED}
)
NOT_REACHED: frozenset[Disposition] = frozenset({_D.LEFT_VOICEMAIL, _D.NO_ANSWER, _D.WRONG_NUMBER})

LABELS: Mapping[Disposition, str] = MappingProxyType(
    {
        _D.SCHEDULED: "Scheduled",
        _D.INSURANCE_FOLLOWUP: "Needs insurance follow-up",
        _D.CLINICAL_ESCALATION: "Needs clinical escalation",
        _D.RESOLVED: "Resolved",
        _D.LEFT_VOICEMAIL: "Left voicemail",
        _D.NO_ANSWER: "No answer",
        _D.WRONG_NUMBER: "Wrong number",
    }
)

# Outcomes whose next step is a time someone must act at: without one the task would sit.
NEEDS_NEXT_ACTION_TIME: frozenset[Disposition] = frozenset(
    {_D.LEFT_VOICEMAIL, _D.NO_ANSWER, _D.INSURANCE_FOLLOWUP}
)
# Outcomes that close the task: a next action time means nothing for them.
CLOSING: frozenset[Disposition] = frozenset({_D.RESOLVED, _D.WRONG_NUMBER})

# The task's next_action after the outcome, when a time is given / when none is.
NEXT_ACTION_WITH_TIME: Mapping[Disposition, str] = MappingProxyType(
    {
        _D.SCHEDULED: "follow_up",
        _D.INSURANCE_FOLLOWUP: "insurance_followup",
        _D.CLINICAL_ESCALATION: "clinical_review",
        _D.LEFT_VOICEMAIL: "call_back",
        _D.NO_ANSWER: "call_back",
    }
)
NEXT_ACTION_WITHOUT_TIME: Mapping[Disposition, str] = MappingProxyType(
    {_D.CLINICAL_ESCALATION: "clinical_review"}
)

FLAGS: Mapping[Disposition, str] = MappingProxyType({_D.WRONG_NUMBER: "wrong_number"})

# Reached: the one status the task must end in.
_TARGET: Mapping[Disposition, TaskStatus] = MappingProxyType(
    {
        _D.SCHEDULED: _S.SCHEDULED,
        _D.INSURANCE_FOLLOWUP: _S.NEEDS_INSURANCE_FOLLOWUP,
        _D.CLINICAL_ESCALATION: _S.NEEDS_CLINICAL_ESCALATION,
        _D.RESOLVED: _S.CLOSED_RESOLVED,
        _D.WRONG_NUMBER: _S.CLOSED_RESOLVED,
    }
)
# Not reached: the statuses to pass through, as far as the table allows. The second
# attempt is only "scheduled" when the agent gave a time for it.
_PATH: Mapping[Disposition, tuple[TaskStatus, ...]] = MappingProxyType(
    {
        _D.LEFT_VOICEMAIL: (_S.LEFT_VOICEMAIL, _S.SECOND_ATTEMPT_SCHEDULED),
        _D.NO_ANSWER: (_S.FIRST_ATTEMPTED, _S.SECOND_ATTEMPT_SCHEDULED),
    }
)


def stops_cadence(disposition: Disposition) -> bool:
    """Reached outcomes end the automated follow-ups (the patient has been spoken to), and
    so does a closing one. Not-reached outcomes never stop it: the follow-ups go on from the
    agent's next attempt time, and resume if a reply, an inbound call or a call-back request
    had stopped them (services.followups.follow_agent)."""
    return disposition in REACHED or disposition in CLOSING


def plan(
    disposition: Disposition,
    current: TaskStatus,
    *,
    clinical: bool,
    has_next_time: bool,
) -> tuple[TaskStatus, ...]:
    """The status moves, in order, that record this outcome on a task in `current`.

    Empty when the status stays as it is. Raises IllegalTransition when the outcome cannot
    be recorded (a closed task; a move the table or the clinical rule forbids).
    """
    if not is_open(current):
        target = _TARGET.get(disposition) or _PATH[disposition][0]
        raise IllegalTransition(current, target, "the task is closed")
    if disposition in _TARGET:
        target = _TARGET[disposition]
        if target is current:
            if note_only(current, clinical=clinical):
                # Escalating again would hand a clinician's task back to the unowned queue.
                raise IllegalTransition(current, target, CLINICAL_ONLY)
            return ()
        check_transition(current, target, clinical=clinical)
        return (target,)
    path = _PATH[disposition]
    if not has_next_time:
        path = path[:-1]
    moves: list[TaskStatus] = []
    at = current
    for step in path:
        if step is at:
            continue
        try:
            check_transition(at, step, clinical=clinical)
        except IllegalTransition:
            continue
        moves.append(step)
        at = step
    return tuple(moves)


def note_only(current: TaskStatus, *, clinical: bool) -> bool:
    """True when this user's outcome is only a note on the task: an administrative agent's
    on a clinical escalation (status, owner and next action stay with the care team)."""
    return current is _S.NEEDS_CLINICAL_ESCALATION and not clinical


def available(current: TaskStatus, *, clinical: bool) -> tuple[Disposition, ...]:
    """The outcomes the form offers on a task in `current` for this user: on a clinical
    escalation an agent sees only the not-reached ones."""
    offered = []
    for disposition in Disposition:
        try:
            plan(disposition, current, clinical=clinical, has_next_time=True)
        except IllegalTransition:
            continue
        offered.append(disposition)
    return tuple(offered)


def is_clinical_refusal(disposition: Disposition, current: TaskStatus) -> bool:
    """True when only the clinical rule stands between this outcome and the task: the
    outcome is legal for licensed staff, not for an administrative agent."""
    try:
        plan(disposition, current, clinical=True, has_next_time=True)
    except IllegalTransition:
        return False
    try:
        plan(disposition, current, clinical=False, has_next_time=True)
    except IllegalTransition:
        return True
    return False
