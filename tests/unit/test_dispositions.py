"""Outcomes an agent records, mapped onto the status table."""

from __future__ import annotations

import pytest

from telephony_service.domain.dispositions import (
    CLOSING,
    NEEDS_NEXT_ACTION_TIME,
    NOT_REACHED,
    REACHED,
    Disposition,
    available,
    is_clinical_refusal,
    note_only,
    plan,
    stops_cadence,
)
from telephony_service.domain.statuses import TRANSITIONS, IllegalTransition, TaskStatus

D = Disposition
S = TaskStatus


@pytest.mark.parametrize(
    ("disposition", "current", "expected"),
    [
        (D.SCHEDULED, S.NEW, (S.SCHEDULED,)),
        (D.INSURANCE_FOLLOWUP, S.LEFT_VOICEMAIL, (S.NEEDS_INSURANCE_FOLLOWUP,)),
        (D.CLINICAL_ESCALATION, S.FIRST_ATTEMPTED, (S.NEEDS_CLINICAL_ESCALATION,)),
        (D.RESOLVED, S.REACHED, (S.CLOSED_RESOLVED,)),
        (D.WRONG_NUMBER, S.NEW, (S.CLOSED_RESOLVED,)),
        (D.LEFT_VOICEMAIL, S.NEW, (S.LEFT_VOICEMAIL, S.SECOND_ATTEMPT_SCHEDULED)),
        (D.LEFT_VOICEMAIL, S.LEFT_VOICEMAIL, (S.SECOND_ATTEMPT_SCHEDULED,)),
        (
            D.LEFT_VOICEMAIL,
            S.SECOND_ATTEMPT_SCHEDULED,
            (S.LEFT_VOICEMAIL, S.SECOND_ATTEMPT_SCHEDULED),
        ),
        (D.NO_ANSWER, S.NEW, (S.FIRST_ATTEMPTED, S.SECOND_ATTEMPT_SCHEDULED)),
        (D.NO_ANSWER, S.LEFT_VOICEMAIL, (S.SECOND_ATTEMPT_SCHEDULED,)),
        (D.NO_ANSWER, S.SECOND_ATTEMPT_SCHEDULED, ()),
        # A missed follow-up call does not undo having reached the patient.
        (D.NO_ANSWER, S.SCHEDULED, ()),
        (D.LEFT_VOICEMAIL, S.NEEDS_INSURANCE_FOLLOWUP, ()),
        # Recording the status the task already has changes nothing.
        (D.SCHEDULED, S.SCHEDULED, ()),
    ],
)
def test_it_maps_dispositions_to_statuses(
    disposition: Disposition, current: TaskStatus, expected: tuple[TaskStatus, ...]
) -> None:
    assert plan(disposition, current, clinical=False, has_next_time=True) == expected


def test_it_schedules_a_second_attempt_only_with_a_time() -> None:
    assert plan(D.LEFT_VOICEMAIL, S.NEW, clinical=False, has_next_time=False) == (S.LEFT_VOICEMAIL,)
    assert plan(D.NO_ANSWER, S.NEW, clinical=False, has_next_time=False) == (S.FIRST_ATTEMPTED,)


@pytest.mark.parametrize("disposition", list(Disposition))
@pytest.mark.parametrize("current", list(TaskStatus))
def test_it_only_plans_moves_the_table_allows(
    disposition: Disposition, current: TaskStatus
) -> None:
    try:
        moves = plan(disposition, current, clinical=True, has_next_time=True)
    except IllegalTransition:
        return
    at = current
    for target in moves:
        assert target in TRANSITIONS[at]
        at = target


def test_it_refuses_an_agent_closing_a_clinical_escalation() -> None:
    for disposition in (D.RESOLVED, D.WRONG_NUMBER):
        with pytest.raises(IllegalTransition, match="licensed staff"):
            plan(disposition, S.NEEDS_CLINICAL_ESCALATION, clinical=False, has_next_time=False)
        assert is_clinical_refusal(disposition, S.NEEDS_CLINICAL_ESCALATION)
        assert plan(
            disposition, S.NEEDS_CLINICAL_ESCALATION, clinical=True, has_next_time=False
        ) == (S.CLOSED_RESOLVED,)


def test_it_offers_an_agent_only_the_not_reached_outcomes_on_an_escalated_task() -> None:
    assert available(S.NEEDS_CLINICAL_ESCALATION, clinical=False) == (D.LEFT_VOICEMAIL, D.NO_ANSWER)
    offered = available(S.NEEDS_CLINICAL_ESCALATION, clinical=True)
    assert {D.SCHEDULED, D.RESOLVED, D.WRONG_NUMBER, D.NO_ANSWER} <= set(offered)
    assert set(available(S.NEW, clinical=False)) == set(Disposition)


@pytest.mark.parametrize(
    "disposition", [D.SCHEDULED, D.CLINICAL_ESCALATION, D.RESOLVED, D.WRONG_NUMBER]
)
def test_it_refuses_an_agent_moving_an_escalated_task_on(disposition: Disposition) -> None:
    # Scheduling it first and closing it after would end a clinical question in two steps;
    # escalating it again would take it from the clinician who owns it.
    with pytest.raises(IllegalTransition, match="only licensed staff"):
        plan(disposition, S.NEEDS_CLINICAL_ESCALATION, clinical=False, has_next_time=True)
    assert is_clinical_refusal(disposition, S.NEEDS_CLINICAL_ESCALATION)


def test_it_makes_an_agents_missed_call_on_an_escalated_task_a_note_only() -> None:
    assert note_only(S.NEEDS_CLINICAL_ESCALATION, clinical=False)
    assert not note_only(S.NEEDS_CLINICAL_ESCALATION, clinical=True)
    assert not note_only(S.NEW, clinical=False)
    for disposition in (D.LEFT_VOICEMAIL, D.NO_ANSWER):
        assert (
            plan(disposition, S.NEEDS_CLINICAL_ESCALATION, clinical=False, has_next_time=True) == ()
        )


def test_it_refuses_a_move_the_table_forbids_as_a_whole() -> None:
    with pytest.raises(IllegalTransition):
        plan(D.INSURANCE_FOLLOWUP, S.NEEDS_CLINICAL_ESCALATION, clinical=True, has_next_time=True)
    assert not is_clinical_refusal(D.INSURANCE_FOLLOWUP, S.NEEDS_CLINICAL_ESCALATION)


@pytest.mark.parametrize("current", [S.CLOSED_RESOLVED, S.CLOSED_NO_RESPONSE, S.MERGED])
def test_it_records_nothing_on_a_closed_task(current: TaskStatus) -> None:
    assert available(current, clinical=True) == ()
    with pytest.raises(IllegalTransition, match="closed"):
        plan(D.NO_ANSWER, current, clinical=True, has_next_time=True)


def test_it_knows_which_outcomes_need_a_time_and_which_stop_the_cadence() -> None:
    assert {D.LEFT_VOICEMAIL, D.NO_ANSWER, D.INSURANCE_FOLLOWUP} == NEEDS_NEXT_ACTION_TIME
    assert set(Disposition) == REACHED | NOT_REACHED
    assert all(stops_cadence(d) for d in REACHED)
    assert not stops_cadence(D.LEFT_VOICEMAIL)
    assert not stops_cadence(D.NO_ANSWER)
    assert {D.RESOLVED, D.WRONG_NUMBER} == CLOSING
