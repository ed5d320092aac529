"""Recording an outcome: statuses by the domain's table, the cadence, owner and audit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from telephony_service.domain.categories import Category
from telephony_service.models import AuditEntry, FollowUp, Practice, Task, TaskEvent, User
from telephony_service.services import consent, followups, outcomes
from telephony_service.services.intake import Inquiry, create_inquiry_task
from telephony_service.services.outcomes import OutcomeForm, OutcomeInvalid
from telephony_service.wiring import Services
from tests.helpers import ANA, make_practice
from tests.workspace_support import make_user

NOTE = "Booked a follow-up visit with Dr. Ortiz for Thursday 2 pm; reminder text to go."
VOICEMAIL_NOTE = "Left voicemail re: referral scheduling; second attempt set for tomorrow morning."
ESCALATION_NOTE = "Patient asks whether the new rash needs a visit; routed to the nurses."
# Wednesday 18 November 2026, 09:00 in New York (the clock stands at Tuesday 10:00 there).
TOMORROW_9AM = "2026-11-18T09:00"


@pytest.fixture
def practice(services: Services) -> Practice:
    return make_practice(services)


@pytest.fixture
def agent(services: Services, practice: Practice) -> User:
    return make_user(services, practice.id)


@pytest.fixture
def clinician(services: Services, practice: Practice) -> User:
    return make_user(
        services, practice.id, email="nina@clinic.example", role="clinician", name="Nina"
    )


@pytest.fixture
def referral(services: Services, practice: Practice) -> int:
    """A referral from the API, its cadence scheduled."""
    return _inquiry(
        services,
        practice,
        Inquiry(Category.REFERRAL, ANA, "Ana Lima", "Referral from Dr. Lee", "ehr"),
    )


def _inquiry(services: Services, practice: Practice, inquiry: Inquiry) -> int:
    with services.session() as session:
        task, _ = create_inquiry_task(
            session,
            session.get_one(Practice, practice.id),
            inquiry,
            idempotency_key=None,
            now=services.clock(),
            base_url="https://callbacks.example.test",
        )
        return task.id


def record(
    services: Services,
    user: User,
    task_id: int,
    disposition: str,
    note: str = NOTE,
    next_action_at: str = "",
    nonce: str = "",
) -> outcomes.Recorded:
    with services.session() as session:
        return outcomes.record_outcome(
            session,
            practice=session.get_one(Practice, user.practice_id),
            user=session.get_one(User, user.id),
            task_id=task_id,
            form=OutcomeForm(disposition, note, next_action_at, nonce),
            now=services.clock(),
        )


def task_row(services: Services, task_id: int) -> Task:
    with services.session() as session:
        task = session.get_one(Task, task_id)
        session.expunge(task)
        return task


def pending_steps(session: Session, task_id: int) -> list[FollowUp]:
    return list(
        session.scalars(
            select(FollowUp).where(FollowUp.task_id == task_id, FollowUp.state == "pending")
        )
    )


def test_it_stops_the_cadence_when_the_patient_is_reached(
    services: Services, agent: User, referral: int
) -> None:
    with services.session() as session:
        assert pending_steps(session, referral)

    recorded = record(services, agent, referral, "scheduled")

    assert (recorded.previous, recorded.status) == ("new", "scheduled")
    task = task_row(services, referral)
    assert task.cadence_stopped_at is not None
    with services.session() as session:
        assert pending_steps(session, referral) == []


def test_it_leaves_the_cadence_running_when_the_patient_is_not_reached(
    services: Services, agent: User, referral: int
) -> None:
    record(services, agent, referral, "no_answer", VOICEMAIL_NOTE, TOMORROW_9AM)

    task = task_row(services, referral)
    assert task.status == "second_attempt_scheduled"
    assert task.cadence_stopped_at is None
    assert task.next_action == "call_back"
    assert task.next_action_at is not None
    assert task.next_action_at.isoformat() == "2026-11-18T14:00:00+00:00"
    with services.session() as session:
        assert pending_steps(session, referral)
        moves = [
            event.data
            for event in session.scalars(
                select(TaskEvent)
                .where(TaskEvent.task_id == referral, TaskEvent.kind == "status_changed")
                .order_by(TaskEvent.id)
            )
        ]
    assert moves == [
        {"from": "new", "to": "first_attempted"},
        {"from": "first_attempted", "to": "second_attempt_scheduled"},
    ]


def test_it_moves_the_next_follow_up_to_the_agents_next_attempt_time(
    services: Services, agent: User, referral: int
) -> None:
    record(services, agent, referral, "no_answer", VOICEMAIL_NOTE, TOMORROW_9AM)

    with services.session() as session:
        (step,) = pending_steps(session, referral)
    # 09:00 in New York, as the agent typed it.
    assert step.due_at.isoformat() == "2026-11-18T14:00:00+00:00"
    assert step.enqueued_at is None


@pytest.mark.parametrize("reason", ["reply", "inbound_call", "callback_requested"])
def test_it_resumes_a_cadence_stopped_without_reaching_the_patient(
    services: Services, agent: User, referral: int, reason: str
) -> None:
    with services.session() as session:
        task = session.get_one(Task, referral)
        consent.stop_cadence(session, task, at=services.clock(), reason=reason)
        session.commit()
        assert pending_steps(session, referral) == []

    record(services, agent, referral, "left_voicemail", VOICEMAIL_NOTE, TOMORROW_9AM)

    task = task_row(services, referral)
    assert task.status == "second_attempt_scheduled"
    assert (task.cadence_stopped_at, task.cadence_stop_reason) == (None, None)
    with services.session() as session:
        (step,) = pending_steps(session, referral)
        assert step.due_at.isoformat() == "2026-11-18T14:00:00+00:00"
        kinds = list(
            session.scalars(
                select(TaskEvent.kind).where(TaskEvent.task_id == referral).order_by(TaskEvent.id)
            )
        )
    assert "cadence_resumed" in kinds
    # The scheduler offers it at the agent's time, not before.
    with services.session() as session:
        assert followups.claim_due(session, now=services.clock()) == []
        at_nine = datetime(2026, 11, 18, 14, 0, tzinfo=UTC)
        assert followups.claim_due(session, now=at_nine) == [step.id]


@pytest.mark.parametrize("reason", ["opted_out", "booked_online"])
def test_it_keeps_stopped_a_cadence_the_patient_ended(
    services: Services, agent: User, referral: int, reason: str
) -> None:
    with services.session() as session:
        task = session.get_one(Task, referral)
        consent.stop_cadence(session, task, at=services.clock(), reason=reason)
        session.commit()

    record(services, agent, referral, "left_voicemail", VOICEMAIL_NOTE, TOMORROW_9AM)

    task = task_row(services, referral)
    assert task.status == "second_attempt_scheduled"
    assert task.cadence_stop_reason == reason
    with services.session() as session:
        assert pending_steps(session, referral) == []


def test_it_writes_the_note_on_the_timeline_and_audits_without_it(
    services: Services, agent: User, referral: int
) -> None:
    record(services, agent, referral, "scheduled", f"  {NOTE}  ")

    with services.session() as session:
        [note] = session.scalars(
            select(TaskEvent).where(TaskEvent.task_id == referral, TaskEvent.kind == "note")
        ).all()
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "changed_task")
        ).all()
    assert note.text == NOTE
    assert note.data == {"disposition": "scheduled", "user_id": agent.id}
    assert (entry.user_id, entry.task_id) == (agent.id, referral)
    assert entry.data == {"disposition": "scheduled", "from": "new", "to": "scheduled"}


def test_it_gives_an_unowned_task_to_the_agent_and_keeps_someone_elses(
    services: Services, agent: User, practice: Practice, referral: int
) -> None:
    record(services, agent, referral, "no_answer", VOICEMAIL_NOTE, TOMORROW_9AM)
    assert task_row(services, referral).owner_id == agent.id

    bob = make_user(services, practice.id, email="bob@clinic.example", name="Bob")
    record(services, bob, referral, "scheduled")
    assert task_row(services, referral).owner_id == agent.id


def test_it_sends_an_escalation_to_the_clinicians_who_alone_can_close_it(
    services: Services, agent: User, clinician: User, referral: int
) -> None:
    # The agent owns it now.
    record(services, agent, referral, "no_answer", VOICEMAIL_NOTE, TOMORROW_9AM)
    record(services, agent, referral, "needs_clinical_escalation", ESCALATION_NOTE)
    task = task_row(services, referral)
    assert (task.status, task.owner_id) == ("needs_clinical_escalation", None)
    assert task.next_action == "clinical_review"

    with pytest.raises(OutcomeInvalid) as refused:
        record(services, agent, referral, "resolved")
    assert refused.value.status == 403
    assert "clinical staff" in refused.value.errors["disposition"]
    assert task_row(services, referral).status == "needs_clinical_escalation"

    record(services, clinician, referral, "resolved", "Nurse called back: rash advice given.")
    task = task_row(services, referral)
    assert (task.status, task.owner_id) == ("closed_resolved", clinician.id)
    assert task.next_action is None


def notes(services: Services, task_id: int) -> list[TaskEvent]:
    with services.session() as session:
        return list(
            session.scalars(
                select(TaskEvent)
                .where(TaskEvent.task_id == task_id, TaskEvent.kind == "note")
                .order_by(TaskEvent.id)
            )
        )


def test_it_refuses_an_agent_the_two_step_close_of_an_escalation(
    services: Services, agent: User, referral: int
) -> None:
    record(services, agent, referral, "needs_clinical_escalation", ESCALATION_NOTE)

    # "Scheduled" first, "resolved" after would close it without a clinician.
    for disposition in ("scheduled", "resolved", "needs_clinical_escalation"):
        with pytest.raises(OutcomeInvalid) as refused:
            record(services, agent, referral, disposition)
        assert refused.value.status == 403
        assert "Only clinical staff" in refused.value.errors["disposition"]

    task = task_row(services, referral)
    assert (task.status, task.owner_id, task.next_action) == (
        "needs_clinical_escalation",
        None,
        "clinical_review",
    )
    assert len(notes(services, referral)) == 1


def test_it_keeps_an_escalated_task_with_the_care_team_when_an_agent_misses_the_patient(
    services: Services, agent: User, clinician: User, referral: int
) -> None:
    record(services, agent, referral, "needs_clinical_escalation", ESCALATION_NOTE)
    before = task_row(services, referral)

    record(services, agent, referral, "no_answer", VOICEMAIL_NOTE, TOMORROW_9AM)

    task = task_row(services, referral)
    assert (task.status, task.owner_id) == ("needs_clinical_escalation", None)
    assert (task.next_action, task.next_action_at) == ("clinical_review", before.next_action_at)
    assert [n.data["disposition"] for n in notes(services, referral) if n.data] == [
        "needs_clinical_escalation",
        "no_answer",
    ]

    # Nor does it take the task from the clinician who has it (no time needed either).
    with services.session() as session:
        session.get_one(Task, referral).owner_id = clinician.id
        session.commit()
    record(services, agent, referral, "left_voicemail", VOICEMAIL_NOTE)
    task = task_row(services, referral)
    assert (task.owner_id, task.next_action) == (clinician.id, "clinical_review")


def test_it_records_one_outcome_for_a_form_sent_twice(
    services: Services, agent: User, referral: int
) -> None:
    first = record(services, agent, referral, "scheduled", nonce="form-1")
    again = record(services, agent, referral, "scheduled", nonce="form-1")

    assert (first.duplicate, again.duplicate) == (False, True)
    assert len(notes(services, referral)) == 1
    with services.session() as session:
        audited = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "changed_task")
        ).all()
    assert len(audited) == 1
    # Another form (a later outcome) is recorded.
    record(
        services, agent, referral, "scheduled", "Moved the visit to Friday 10 am.", nonce="form-2"
    )
    assert len(notes(services, referral)) == 2


def test_it_refuses_a_move_the_table_forbids_with_words(
    services: Services, clinician: User, referral: int
) -> None:
    record(services, clinician, referral, "needs_clinical_escalation", ESCALATION_NOTE)

    with pytest.raises(OutcomeInvalid) as refused:
        record(services, clinician, referral, "needs_insurance_followup", NOTE, TOMORROW_9AM)

    assert refused.value.status == 422
    assert "Needs insurance follow-up can't be recorded" in refused.value.errors["disposition"]


def test_it_closes_a_wrong_number_with_a_flag(
    services: Services, agent: User, referral: int
) -> None:
    record(
        services, agent, referral, "wrong_number", "Number belongs to a bakery; no other number."
    )

    task = task_row(services, referral)
    assert (task.status, task.flag) == ("closed_resolved", "wrong_number")
    assert task.cadence_stopped_at is not None
    with services.session() as session:
        assert pending_steps(session, referral) == []


def _second_task(services: Services, practice: Practice) -> int:
    """Another open task of Ana's, a web form, with its own cadence."""
    return _inquiry(
        services,
        practice,
        Inquiry(Category.WEB_FORM, ANA, "Ana Lima", "Question about hours", "website"),
    )


def test_it_stops_the_patients_other_tasks_when_an_agent_reaches_her(
    services: Services, agent: User, practice: Practice, referral: int
) -> None:
    web_form = _second_task(services, practice)

    record(services, agent, referral, "scheduled")

    assert task_row(services, web_form).cadence_stop_reason == "scheduled"
    with services.session() as session:
        assert pending_steps(session, web_form) == []


def test_it_leaves_the_patients_other_tasks_alone_on_a_wrong_number(
    services: Services, agent: User, practice: Practice, referral: int
) -> None:
    """A wrong number on one task is no contact with the patient of another."""
    web_form = _second_task(services, practice)

    record(
        services, agent, referral, "wrong_number", "Number belongs to a bakery; no other number."
    )

    assert task_row(services, web_form).cadence_stopped_at is None
    with services.session() as session:
        assert pending_steps(session, web_form)


def test_it_records_a_second_reached_outcome_without_a_status_move(
    services: Services, agent: User, referral: int
) -> None:
    record(services, agent, referral, "scheduled")
    record(
        services, agent, referral, "scheduled", "Moved the visit to Friday 10 am at her request."
    )

    with services.session() as session:
        notes = session.scalars(
            select(TaskEvent).where(TaskEvent.task_id == referral, TaskEvent.kind == "note")
        ).all()
    assert len(notes) == 2
    assert task_row(services, referral).status == "scheduled"


def test_it_collects_every_problem_and_changes_nothing(
    services: Services, agent: User, referral: int
) -> None:
    past = "2026-11-17T09:00"  # an hour ago in New York

    with pytest.raises(OutcomeInvalid) as invalid:
        record(services, agent, referral, "left_voicemail", "lvm", past)

    assert set(invalid.value.errors) == {"note", "next_action_at"}
    task = task_row(services, referral)
    assert (task.status, task.owner_id) == ("new", None)
    with pytest.raises(OutcomeInvalid) as unknown:
        record(services, agent, referral, "booked_it")
    assert set(unknown.value.errors) == {"disposition"}


def test_it_does_not_find_another_practices_task(services: Services, referral: int) -> None:
    harbor = make_practice(services, name="Harbor Pediatrics", number="+14155550111")
    stranger = make_user(services, harbor.id, email="hal@harbor.example")

    with pytest.raises(outcomes.TaskNotFound):
        record(services, stranger, referral, "scheduled")
    assert task_row(services, referral).status == "new"
