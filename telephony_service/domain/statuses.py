"""Callback task statuses and the moves allowed between them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

# A task's next action (shown with its time in the queue and the API): what staff or the
# cadence do next. Named once here: intake, links, followups and consent all set them.
NEXT_CALL_BACK = "call_back"
NEXT_AWAIT_REPLY = "await_reply"


class TaskStatus(enum.StrEnum):
    NEW = "new"
    FIRST_ATTEMPTED = "first_attempted"
    LEFT_VOICEMAIL = "left_voicemail"
    SECOND_ATTEMPT_SCHEDULED = "second_attempt_scheduled"
    REACHED = "reached"
    SCHEDULED = "scheduled"
    NEEDS_INSURANCE_FOLLOWUP = "needs_insurance_followup"
    NEEDS_CLINICAL_ESCALATION = "needs_clinical_escalation"
    CLOSED_NO_RESPONSE = "closed_no_response"
    CLOSED_RESOLVED = "closed_resolved"
    CLOSED_OPTED_OUT = "closed_opted_out"
    MERGED = "merged"


CLOSED: frozenset[TaskStatus] = frozenset(
    {
        TaskStatus.CLOSED_NO_RESPONSE,
        TaskStatus.CLOSED_RESOLVED,
        TaskStatus.CLOSED_OPTED_OUT,
        TaskStatus.MERGED,
    }
)
OPEN: frozenset[TaskStatus] = frozenset(TaskStatus) - CLOSED


# What staff pages call each status.
LABELS: Mapping[TaskStatus, str] = MappingProxyType(
    {
        TaskStatus.NEW: "New",
        TaskStatus.FIRST_ATTEMPTED: "First attempt made",
        TaskStatus.LEFT_VOICEMAIL: "Left voicemail",
        TaskStatus.SECOND_ATTEMPT_SCHEDULED: "Second attempt scheduled",
        TaskStatus.REACHED: "Reached",
        TaskStatus.SCHEDULED: "Scheduled",
        TaskStatus.NEEDS_INSURANCE_FOLLOWUP: "Needs insurance follow-up",
        TaskStatus.NEEDS_CLINICAL_ESCALATION: "Needs clinical escalation",
        TaskStatus.CLOSED_NO_RESPONSE: "Closed: no response",
        TaskStatus.CLOSED_RESOLVED: "Closed: resolved",
        TaskStatus.CLOSED_OPTED_OUT: "Closed: opted out",
        TaskStatus.MERGED: "Merged",
    }
)


def label(value: str) -> str:
    try:
        return LABELS[TaskStatus(value)]
    except ValueError:
        return value.replace("_", " ").capitalize()


def is_open(status: TaskStatus) -> bool:
    return status in OPEN


_S = TaskStatus

TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = MappingProxyType(
    {
        _S.NEW: frozenset(
            {
                _S.FIRST_ATTEMPTED,
                _S.LEFT_VOICEMAIL,
                _S.SECOND_ATTEMPT_SCHEDULED,
                _S.REACHED,
                _S.SCHEDULED,
                _S.NEEDS_INSURANCE_FOLLOWUP,
                _S.NEEDS_CLINICAL_ESCALATION,
                _S.CLOSED_NO_RESPONSE,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.FIRST_ATTEMPTED: frozenset(
            {
                _S.SECOND_ATTEMPT_SCHEDULED,
                _S.LEFT_VOICEMAIL,
                _S.REACHED,
                _S.SCHEDULED,
                _S.NEEDS_INSURANCE_FOLLOWUP,
                _S.NEEDS_CLINICAL_ESCALATION,
                _S.CLOSED_NO_RESPONSE,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.LEFT_VOICEMAIL: frozenset(
            {
                _S.SECOND_ATTEMPT_SCHEDULED,
                _S.LEFT_VOICEMAIL,
                _S.REACHED,
                _S.SCHEDULED,
                _S.NEEDS_INSURANCE_FOLLOWUP,
                _S.NEEDS_CLINICAL_ESCALATION,
                _S.CLOSED_NO_RESPONSE,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.SECOND_ATTEMPT_SCHEDULED: frozenset(
            {
                _S.LEFT_VOICEMAIL,
                _S.REACHED,
                _S.SCHEDULED,
                _S.NEEDS_INSURANCE_FOLLOWUP,
                _S.NEEDS_CLINICAL_ESCALATION,
                _S.CLOSED_NO_RESPONSE,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.REACHED: frozenset(
            {
                _S.SCHEDULED,
                _S.NEEDS_INSURANCE_FOLLOWUP,
                _S.NEEDS_CLINICAL_ESCALATION,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.SCHEDULED: frozenset(
            {
                _S.REACHED,
                _S.NEEDS_INSURANCE_FOLLOWUP,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.NEEDS_INSURANCE_FOLLOWUP: frozenset(
            {
                _S.REACHED,
                _S.SCHEDULED,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_NO_RESPONSE,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        _S.NEEDS_CLINICAL_ESCALATION: frozenset(
            {
                _S.REACHED,
                _S.SCHEDULED,
                _S.CLOSED_RESOLVED,
                _S.CLOSED_OPTED_OUT,
                _S.MERGED,
            }
        ),
        # A patient who calls back or opts back in reopens the same task.
        _S.CLOSED_NO_RESPONSE: frozenset({_S.NEW}),
        _S.CLOSED_OPTED_OUT: frozenset({_S.NEW}),
        _S.CLOSED_RESOLVED: frozenset(),
        _S.MERGED: frozenset(),
    }
)


# Clinical escalation routes the task to licensed staff (DESIGN §3), so every move out of it
# is theirs: were "scheduled" or "reached" open to an administrative agent, the close that
# follows them (open to anyone) would end a clinical question in two steps. A patient's
# opt-out is honoured whoever records it, and merging keeps the question alive on the
# surviving task.
_ANYONE_FROM_ESCALATION: frozenset[TaskStatus] = frozenset(
    {TaskStatus.CLOSED_OPTED_OUT, TaskStatus.MERGED}
)
CLINICAL_ONLY = "only licensed staff move a clinical escalation on or close it"


class IllegalTransition(ValueError):
    def __init__(self, current: TaskStatus, target: TaskStatus, reason: str | None = None) -> None:
        message = f"cannot move a task from {current.value} to {target.value}"
        if reason:
            message = f"{message}: {reason}"
        super().__init__(message)
        self.current = current
        self.target = target


def needs_clinical_rights(current: TaskStatus, target: TaskStatus) -> bool:
    return current is TaskStatus.NEEDS_CLINICAL_ESCALATION and target not in _ANYONE_FROM_ESCALATION


def check_transition(current: TaskStatus, target: TaskStatus, *, clinical: bool = False) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    if not clinical and needs_clinical_rights(current, target):
        raise IllegalTransition(current, target, CLINICAL_ONLY)
