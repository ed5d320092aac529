"""Status changes follow the domain's table and land on the timeline."""

from __future__ import annotations

import pytest

from telephony_service.domain.statuses import IllegalTransition, TaskStatus
from telephony_service.models import Task
from telephony_service.services.tasks import change_status
from tests.helpers import call_ended, make_practice, new_sid, run_jobs, tasks_of, timeline_kinds


@pytest.fixture
def task_id(client, services) -> int:
    make_practice(services)
    call_ended(client, new_sid("CA"))
    run_jobs(services, services.redis)
    return tasks_of(services)[0].id


def test_it_records_a_status_change_on_the_timeline(services, task_id, clock):
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        change_status(session, task, TaskStatus.REACHED, now=clock())
        change_status(session, task, TaskStatus.CLOSED_RESOLVED, now=clock())
        session.commit()
    [task] = tasks_of(services)
    assert task.status == "closed_resolved"
    assert task.next_action is None
    # Reaching the patient also ends the automated texts, once.
    assert timeline_kinds(services, task_id) == [
        "created",
        "status_changed",
        "cadence_stopped",
        "status_changed",
    ]


def test_it_refuses_an_illegal_move_and_changes_nothing(services, task_id, clock):
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        change_status(session, task, TaskStatus.CLOSED_NO_RESPONSE, now=clock())
        with pytest.raises(IllegalTransition):
            change_status(session, task, TaskStatus.SCHEDULED, now=clock())
        session.commit()
    assert tasks_of(services)[0].status == "closed_no_response"


def test_it_keeps_clinical_escalations_for_licensed_staff(services, task_id, clock):
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        change_status(session, task, TaskStatus.NEEDS_CLINICAL_ESCALATION, now=clock())
        with pytest.raises(IllegalTransition, match="licensed"):
            change_status(session, task, TaskStatus.CLOSED_RESOLVED, now=clock())
        change_status(session, task, TaskStatus.CLOSED_RESOLVED, now=clock(), clinical=True)
        session.commit()
    assert tasks_of(services)[0].status == "closed_resolved"


def test_it_opens_a_new_task_when_a_closed_tasks_patient_calls_again(
    client, services, task_id, clock
):
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        change_status(session, task, TaskStatus.REACHED, now=clock())
        change_status(session, task, TaskStatus.CLOSED_RESOLVED, now=clock())
        session.commit()
    call_ended(client, new_sid("CA"))
    run_jobs(services, services.redis)
    assert [t.status for t in tasks_of(services)] == ["closed_resolved", "new"]
