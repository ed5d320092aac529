from __future__ import annotations

import pytest

from telephony_service.domain.statuses import (
    CLOSED,
    OPEN,
    TRANSITIONS,
    IllegalTransition,
    TaskStatus,
    check_transition,
    is_open,
)

S = TaskStatus


def test_it_uses_the_stored_lowercase_values() -> None:
    assert [s.value for s in TaskStatus] == [
        "new",
        "first_attempted",
        "left_voicemail",
        "second_attempt_scheduled",
        "reached",
        "scheduled",
        "needs_insurance_followup",
        "needs_clinical_escalation",
        "closed_no_response",
        "closed_resolved",
        "closed_opted_out",
        "merged",
    ]


def test_it_splits_statuses_into_open_and_closed() -> None:
    assert {S.CLOSED_NO_RESPONSE, S.CLOSED_RESOLVED, S.CLOSED_OPTED_OUT, S.MERGED} == CLOSED
    assert set(TaskStatus) == OPEN | CLOSED
    assert not OPEN & CLOSED
    assert is_open(S.NEW)
    assert is_open(S.NEEDS_CLINICAL_ESCALATION)
    assert not is_open(S.MERGED)
    assert not is_open(S.CLOSED_RESOLVED)


def test_it_has_a_table_entry_for_every_status() -> None:
    assert set(TRANSITIONS) == set(TaskStatus)


def test_it_never_moves_a_status_onto_itself_except_another_voicemail() -> None:
    loops = {status for status, targets in TRANSITIONS.items() if status in targets}
    assert loops == {S.LEFT_VOICEMAIL}


@pytest.mark.parametrize("status", sorted(OPEN))
def test_it_lets_any_open_task_be_opted_out_or_merged(status: TaskStatus) -> None:
    check_transition(status, S.CLOSED_OPTED_OUT)
    check_transition(status, S.MERGED)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.NEW, S.FIRST_ATTEMPTED),
        (S.NEW, S.REACHED),
        (S.NEW, S.CLOSED_RESOLVED),
        (S.FIRST_ATTEMPTED, S.LEFT_VOICEMAIL),
        (S.FIRST_ATTEMPTED, S.SECOND_ATTEMPT_SCHEDULED),
        (S.LEFT_VOICEMAIL, S.LEFT_VOICEMAIL),
        (S.LEFT_VOICEMAIL, S.CLOSED_NO_RESPONSE),
        (S.SECOND_ATTEMPT_SCHEDULED, S.REACHED),
        (S.SECOND_ATTEMPT_SCHEDULED, S.CLOSED_NO_RESPONSE),
        (S.REACHED, S.SCHEDULED),
        (S.REACHED, S.NEEDS_CLINICAL_ESCALATION),
        (S.SCHEDULED, S.CLOSED_RESOLVED),
        (S.SCHEDULED, S.REACHED),
        (S.NEEDS_INSURANCE_FOLLOWUP, S.CLOSED_NO_RESPONSE),
        (S.CLOSED_NO_RESPONSE, S.NEW),
        (S.CLOSED_OPTED_OUT, S.NEW),
    ],
)
def test_it_allows_workflow_moves(current: TaskStatus, target: TaskStatus) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.NEW, S.NEW),
        (S.SECOND_ATTEMPT_SCHEDULED, S.FIRST_ATTEMPTED),
        (S.REACHED, S.FIRST_ATTEMPTED),
        (S.REACHED, S.CLOSED_NO_RESPONSE),
        (S.SCHEDULED, S.NEW),
        (S.NEEDS_CLINICAL_ESCALATION, S.CLOSED_NO_RESPONSE),
        (S.CLOSED_RESOLVED, S.NEW),
        (S.CLOSED_RESOLVED, S.REACHED),
        (S.MERGED, S.NEW),
        (S.CLOSED_NO_RESPONSE, S.REACHED),
        (S.CLOSED_OPTED_OUT, S.CLOSED_RESOLVED),
    ],
)
def test_it_rejects_illegal_moves(current: TaskStatus, target: TaskStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"cannot move a task from {current} to {target}"):
        check_transition(current, target)


def test_it_makes_illegal_transition_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot move a task from merged to new"):
        check_transition(S.MERGED, S.NEW)


@pytest.mark.parametrize("status", sorted(CLOSED - {S.CLOSED_NO_RESPONSE, S.CLOSED_OPTED_OUT}))
def test_it_keeps_final_statuses_final(status: TaskStatus) -> None:
    assert TRANSITIONS[status] == frozenset()


def test_it_needs_licensed_staff_to_resolve_a_clinical_escalation() -> None:
    with pytest.raises(IllegalTransition, match="licensed staff") as info:
        check_transition(S.NEEDS_CLINICAL_ESCALATION, S.CLOSED_RESOLVED)
    assert info.value.current is S.NEEDS_CLINICAL_ESCALATION
    assert info.value.target is S.CLOSED_RESOLVED
    check_transition(S.NEEDS_CLINICAL_ESCALATION, S.CLOSED_RESOLVED, clinical=True)


def test_it_lets_anyone_record_an_opt_out_or_merge_of_a_clinical_escalation() -> None:
    check_transition(S.NEEDS_CLINICAL_ESCALATION, S.CLOSED_OPTED_OUT)
    check_transition(S.NEEDS_CLINICAL_ESCALATION, S.MERGED)


@pytest.mark.parametrize(
    "target",
    sorted(TRANSITIONS[S.NEEDS_CLINICAL_ESCALATION] - {S.CLOSED_OPTED_OUT, S.MERGED}),
)
def test_it_needs_licensed_staff_for_every_other_move_out_of_a_clinical_escalation(
    target: TaskStatus,
) -> None:
    # "scheduled", then "closed_resolved" (open to anyone) would close it in two steps.
    with pytest.raises(IllegalTransition, match="only licensed staff"):
        check_transition(S.NEEDS_CLINICAL_ESCALATION, target)
    check_transition(S.NEEDS_CLINICAL_ESCALATION, target, clinical=True)


def test_it_offers_clinical_staff_the_ways_on_from_a_clinical_escalation() -> None:
    assert {S.REACHED, S.SCHEDULED, S.CLOSED_RESOLVED} <= TRANSITIONS[S.NEEDS_CLINICAL_ESCALATION]


def test_it_still_rejects_a_table_illegal_move_for_clinical_staff() -> None:
    with pytest.raises(IllegalTransition, match="cannot move"):
        check_transition(S.CLOSED_RESOLVED, S.NEW, clinical=True)


def test_it_keeps_the_queue_index_predicate_in_step_with_the_open_statuses() -> None:
    import re

    from telephony_service.models import OPEN_STATUSES_SQL

    listed = set(re.findall(r"'([a-z_]+)'", OPEN_STATUSES_SQL))
    assert listed == {status.value for status in OPEN}
