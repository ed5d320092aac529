"""The callback queue service: ordering, role views, filters, lanes, pages, take next."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from telephony_service.models import AuditEntry, Practice, Task, TaskEvent, User
from telephony_service.services.lanes import add_lane
from telephony_service.services.links import (
    callback_slots,
    create_link,
    find_link,
    request_callback,
)
from telephony_service.services.queue import (
    COUNT_CAP,
    BadQueueFilter,
    QueueCounts,
    QueueFilters,
    QueuePage,
    age_text,
    countdown_text,
    parse_filters,
    queue_page,
    take_next,
)
from telephony_service.wiring import Services
from tests.helpers import HARBOR_NUMBER, make_practice
from tests.queue_support import add_call_attempt, add_text, make_task, owner_of
from tests.workspace_support import make_user

MIN = timedelta(minutes=1)


@pytest.fixture
def riverside(services: Services) -> int:
    return make_practice(services).id


@pytest.fixture
def alice(services: Services, riverside: int) -> int:
    return make_user(services, riverside).id


@pytest.fixture
def bob(services: Services, riverside: int) -> int:
    return make_user(services, riverside, email="bob@clinic.example", name="Bob").id


def page(
    services: Services,
    user_id: int,
    *,
    filters: QueueFilters | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> QueuePage:
    with services.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        practice = session.get(Practice, user.practice_id)
        assert practice is not None
        return queue_page(
            session,
            practice=practice,
            user=user,
            now=services.clock(),
            filters=filters or QueueFilters(),
            cursor=cursor,
            limit=limit,
        )


def ids(result: QueuePage) -> list[int]:
    return [row.id for row in result.rows]


def take(
    services: Services, user_id: int, *, lanes_only: bool = False, nonce: str | None = None
) -> int | None:
    with services.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        practice = session.get(Practice, user.practice_id)
        assert practice is not None
        task = take_next(
            session,
            practice=practice,
            user=user,
            now=services.clock(),
            lanes_only=lanes_only,
            nonce=nonce,
        )
        return None if task is None else task.id


def owned_by(services: Services, user_id: int) -> list[int]:
    with services.session() as session:
        return list(session.scalars(select(Task.id).where(Task.owner_id == user_id)))


def lane(services: Services, practice_id: int, user_id: int, categories: str, hours: str) -> None:
    with services.session() as session:
        add_lane(
            session,
            practice_id=practice_id,
            user_id=user_id,
            name="Front desk",
            categories=categories,
            hours=hours,
            now=services.clock(),
        )
        session.commit()


# --- ordering and role views ------------------------------------------------------------


def test_it_lists_overdue_tasks_first_then_by_deadline(services, riverside, alice):
    later = make_task(services, riverside, due_in=90 * MIN)
    soon = make_task(services, riverside, due_in=5 * MIN)
    long_overdue = make_task(services, riverside, due_in=-120 * MIN)
    just_overdue = make_task(services, riverside, due_in=-1 * MIN)
    tied = make_task(services, riverside, due_in=5 * MIN)

    result = page(services, alice)

    assert ids(result) == [long_overdue, just_overdue, soon, tied, later]
    assert [row.overdue for row in result.rows] == [True, True, False, False, False]
    assert result.rows[0].countdown == "overdue 2:00:00"
    assert result.rows[2].countdown == "05:00"


def test_it_leaves_closed_tasks_out_of_the_queue(services, riverside, alice):
    open_task = make_task(services, riverside)
    make_task(services, riverside, status="closed_resolved", due_in=-60 * MIN)
    make_task(services, riverside, status="merged", due_in=-60 * MIN)

    assert ids(page(services, alice)) == [open_task]


def test_it_keeps_clinical_escalations_out_of_the_agents_queue(services, riverside, alice):
    routine = make_task(services, riverside, due_in=10 * MIN)
    make_task(services, riverside, status="needs_clinical_escalation", due_in=-10 * MIN)

    result = page(services, alice)

    assert ids(result) == [routine]
    assert result.counts.open == 1
    assert "needs_clinical_escalation" not in result.status_choices
    with pytest.raises(BadQueueFilter):
        parse_filters({"status": ["needs_clinical_escalation"]}, role="agent")


def test_it_shows_clinicians_the_clinician_queue(services, riverside):
    nurse = make_user(services, riverside, email="nurse@clinic.example", role="clinician").id
    make_task(services, riverside, due_in=-30 * MIN)
    escalated = make_task(services, riverside, status="needs_clinical_escalation")

    result = page(services, nurse)

    assert ids(result) == [escalated]
    assert result.view == "clinician"
    assert result.counts.open == 1


def test_it_lets_managers_filter_any_status(services, riverside):
    boss = make_user(services, riverside, email="boss@clinic.example", role="manager").id
    make_task(services, riverside)
    closed = make_task(services, riverside, status="closed_no_response")
    escalated = make_task(services, riverside, status="needs_clinical_escalation")

    closed_only = parse_filters({"status": ["closed_no_response"]}, role="manager")
    both = parse_filters(
        {"status": ["closed_no_response,needs_clinical_escalation"]}, role="manager"
    )

    assert ids(page(services, boss, filters=closed_only)) == [closed]
    assert sorted(ids(page(services, boss, filters=both))) == sorted([closed, escalated])


# --- filters ------------------------------------------------------------------------------


def test_it_filters_my_tasks_and_unassigned_ones(services, riverside, alice, bob):
    mine = make_task(services, riverside, owner_id=alice, due_in=1 * MIN)
    make_task(services, riverside, owner_id=bob, due_in=2 * MIN)
    nobodys = make_task(services, riverside, due_in=3 * MIN)

    assert ids(page(services, alice, filters=QueueFilters(owner="mine"))) == [mine]
    assert ids(page(services, alice, filters=QueueFilters(owner="unassigned"))) == [nobodys]
    assert len(ids(page(services, alice))) == 3


def test_it_filters_by_one_or_several_categories(services, riverside, alice):
    voicemail = make_task(services, riverside, category="voicemail", due_in=1 * MIN)
    referral = make_task(services, riverside, category="referral", due_in=2 * MIN)
    make_task(services, riverside, category="web_form", due_in=3 * MIN)

    one = parse_filters({"category": ["referral"]}, role="agent")
    several = parse_filters({"category": ["voicemail", "referral"]}, role="agent")

    assert ids(page(services, alice, filters=one)) == [referral]
    assert ids(page(services, alice, filters=several)) == [voicemail, referral]


def test_it_filters_by_status(services, riverside, alice):
    make_task(services, riverside, status="new")
    voicemail_left = make_task(services, riverside, status="left_voicemail")

    filters = parse_filters({"status": ["left_voicemail"]}, role="agent")

    assert ids(page(services, alice, filters=filters)) == [voicemail_left]


def test_it_refuses_filters_it_does_not_know(services):
    for args in ({"category": ["lunch"]}, {"owner": ["everyone"]}, {"status": ["open"]}):
        with pytest.raises(BadQueueFilter):
            parse_filters(args, role="agent")
    assert parse_filters({"mine": ["1"]}, role="agent").owner == "mine"


# --- lanes ----------------------------------------------------------------------------------


def test_it_shows_my_lanes_only_while_they_are_on(services, clock, riverside, alice):
    # The clock starts on a Tuesday at 10:00 in New York, the practice's zone.
    lane(services, riverside, alice, "new_patient_request,web_form", "mon-fri 08:00-12:00")
    new_patient = make_task(services, riverside, category="new_patient_request")
    form = make_task(services, riverside, category="web_form", due_in=40 * MIN)
    make_task(services, riverside, category="referral", due_in=-5 * MIN)
    in_lanes = QueueFilters(my_lanes=True)

    morning = page(services, alice, filters=in_lanes)
    assert ids(morning) == [new_patient, form]
    assert [found.name for found in morning.lanes] == ["Front desk"]

    clock.advance(hours=2)  # 12:00: the lane has ended
    afternoon = page(services, alice, filters=in_lanes)
    assert ids(afternoon) == []
    assert afternoon.no_active_lane
    assert afternoon.lanes == []
    assert len(ids(page(services, alice))) == 3


def test_it_reads_lane_hours_in_the_practices_zone(services, clock, alice, riverside):
    lane(services, riverside, alice, "referral", "tue 14:00-15:00")
    referral = make_task(services, riverside, category="referral")
    in_lanes = QueueFilters(my_lanes=True)

    assert ids(page(services, alice, filters=in_lanes)) == []  # 10:00 in New York
    clock.advance(hours=4)  # 14:00 New York, 19:00 UTC
    assert ids(page(services, alice, filters=in_lanes)) == [referral]


# --- rows ---------------------------------------------------------------------------------


def test_it_shows_a_first_name_or_a_masked_number(services, riverside, alice):
    make_task(services, riverside, name="Ana Lopez", due_in=1 * MIN)
    make_task(services, riverside, phone="+13125550188", due_in=2 * MIN)
    make_task(services, riverside, phone=None, due_in=3 * MIN)

    rows = page(services, alice).rows

    assert [row.who for row in rows] == ["Ana", "+*******0188", "No callback number"]


def test_it_counts_calls_and_sent_texts_as_attempts(services, riverside, alice):
    task = make_task(services, riverside)
    other = make_task(services, riverside, due_in=60 * MIN)
    add_call_attempt(services, task, "call-1")
    add_call_attempt(services, task, "call-2")
    add_text(services, task, "text-1", sent=True)
    add_text(services, task, "text-2", sent=False)  # still in the outbox
    add_text(services, task, "help-reply", sent=True, kind="reply")

    rows = {row.id: row for row in page(services, alice).rows}

    assert rows[task].attempts == 3
    assert rows[other].attempts == 0


def test_it_shows_age_and_owner(services, riverside, alice, bob):
    make_task(services, riverside, owner_id=bob, created_ago=timedelta(hours=3, minutes=5))

    row = page(services, alice).rows[0]

    assert row.age == "3 h"
    assert row.owner == "Bob"
    assert not row.owned_by_me
    assert row.due_iso.endswith("Z")


def test_it_writes_ages_and_countdowns_as_people_read_them():
    assert age_text(timedelta(minutes=12, seconds=40)) == "12 min"
    assert age_text(timedelta(hours=3, minutes=59)) == "3 h"
    assert age_text(timedelta(days=2, hours=5)) == "2 d"
    assert countdown_text(timedelta(minutes=12, seconds=4)) == "12:04"
    assert countdown_text(-timedelta(minutes=12, seconds=4)) == "overdue 12:04"
    assert countdown_text(timedelta(days=3, hours=4)) == "3 d 4 h"


# --- counts and pages -----------------------------------------------------------------------


def test_it_counts_open_overdue_and_unassigned_tasks(services, riverside, alice):
    make_task(services, riverside, due_in=-5 * MIN)
    make_task(services, riverside, due_in=-5 * MIN, owner_id=alice)
    make_task(services, riverside, due_in=5 * MIN)
    make_task(services, riverside, status="closed_resolved", due_in=-5 * MIN)

    counts = page(services, alice, filters=QueueFilters(owner="mine")).counts

    assert (counts.open, counts.overdue, counts.unassigned) == (3, 2, 2)


def test_it_caps_the_counts_it_shows():
    assert QueueCounts.shown(COUNT_CAP + 1) == "1,000+"
    assert QueueCounts.shown(COUNT_CAP) == "1,000"


def test_it_pages_with_a_stable_cursor(services, riverside, alice):
    # Two tasks share a deadline across the page boundary: the id breaks the tie.
    tasks = [make_task(services, riverside, due_in=minutes * MIN) for minutes in (1, 2, 3, 3, 4)]

    first = page(services, alice, limit=3)
    assert ids(first) == tasks[:3]
    assert first.next_cursor is not None
    # New urgent work arrives while the agent reads page one: page two is unchanged.
    make_task(services, riverside, due_in=-30 * MIN)
    second = page(services, alice, cursor=first.next_cursor, limit=3)

    assert ids(second) == tasks[3:]
    assert second.next_cursor is None


def test_it_refuses_a_cursor_it_did_not_give_out(services, riverside, alice):
    with pytest.raises(BadQueueFilter):
        page(services, alice, cursor="not-a-cursor")


def test_it_never_shows_another_practices_tasks(services, riverside, alice):
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    ).id
    ours = make_task(services, riverside)
    make_task(services, harbor, due_in=-60 * MIN)

    result = page(services, alice)

    assert ids(result) == [ours]
    assert result.counts.open == 1
    assert take(services, alice) == ours
    assert take(services, alice) is None


# --- take next ----------------------------------------------------------------------------


def test_it_takes_the_most_urgent_unowned_task(services, riverside, alice, bob):
    make_task(services, riverside, due_in=-60 * MIN, owner_id=bob)
    make_task(services, riverside, due_in=-90 * MIN, status="needs_clinical_escalation")
    most_urgent = make_task(services, riverside, due_in=-10 * MIN)
    make_task(services, riverside, due_in=10 * MIN)

    taken = take(services, alice)

    assert taken == most_urgent
    assert owner_of(services, most_urgent) == alice
    with services.session() as session:
        entry = session.scalars(select(TaskEvent).where(TaskEvent.task_id == taken)).one()
        assert (entry.kind, entry.data) == ("assigned", {"user_id": alice})
        audit = session.scalars(select(AuditEntry).where(AuditEntry.task_id == taken)).one()
        assert (audit.action, audit.user_id) == ("took_task", alice)


def ask_for_a_call(services: Services, task_id: int, pick: int) -> datetime:
    """The patient opens the task's link and asks for a call at the `pick`th slot offered."""
    now = services.clock()
    with services.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        practice = session.get(Practice, task.practice_id)
        assert practice is not None
        token = create_link(session, practice_id=practice.id, task_id=task_id, now=now)
        link = find_link(session, token)
        assert link is not None
        slot = request_callback(session, link, callback_slots(practice, now)[pick], now)
        session.commit()
        return slot


def test_it_does_not_hand_out_a_call_before_the_time_the_patient_asked_for(
    services, clock, riverside, alice, bob
):
    waiting = make_task(services, riverside, due_in=-30 * MIN)
    later = make_task(services, riverside, due_in=3 * 60 * MIN, phone="+12025550177")
    asked_for = ask_for_a_call(services, waiting, pick=-1)
    assert asked_for - clock() > 3 * 60 * MIN

    # A deadline ahead may be worked early; the patient's own time may not.
    assert take(services, alice) == later
    assert take(services, bob) is None

    clock.now = asked_for - 10 * MIN
    assert take(services, bob) == waiting


def test_it_takes_nothing_when_the_queue_is_empty(services, riverside, alice, bob):
    make_task(services, riverside, owner_id=bob)
    make_task(services, riverside, status="closed_resolved")

    assert take(services, alice) is None
    with services.session() as session:
        assert session.scalars(select(AuditEntry)).all() == []


def test_it_takes_from_my_lanes_first(services, riverside, alice):
    lane(services, riverside, alice, "referral", "always")
    make_task(services, riverside, category="voicemail", due_in=-60 * MIN)
    referral = make_task(services, riverside, category="referral", due_in=30 * MIN)

    assert take(services, alice) == referral
    # Nothing is left in the lane: with lanes_only nothing is taken, else the rest is.
    assert take(services, alice, lanes_only=True) is None
    assert take(services, alice) is not None


def test_it_lets_clinicians_take_clinical_escalations(services, riverside):
    nurse = make_user(services, riverside, email="nurse@clinic.example", role="clinician").id
    make_task(services, riverside, due_in=-60 * MIN)
    escalated = make_task(services, riverside, status="needs_clinical_escalation")

    assert take(services, nurse) == escalated
    assert take(services, nurse) is None


def test_it_gives_agents_pressing_at_once_different_tasks(services, riverside, alice, bob):
    tasks = {make_task(services, riverside, due_in=minutes * MIN) for minutes in range(10)}
    start = threading.Barrier(2)
    taken: dict[int, list[int | None]] = {alice: [], bob: []}

    def agent(user_id: int) -> None:
        for _ in range(6):
            start.wait(timeout=30)
            taken[user_id].append(take(services, user_id))

    threads = [threading.Thread(target=agent, args=(user,)) for user in (alice, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    claims = [task for got in taken.values() for task in got if task is not None]
    assert sorted(claims) == sorted(tasks)  # each task once, none twice, none lost
    for user_id, got in taken.items():
        assert all(owner_of(services, task) == user_id for task in got if task is not None)


def test_it_skips_a_task_another_agent_is_claiming(services, riverside, alice, bob):
    first = make_task(services, riverside, due_in=-10 * MIN)
    second = make_task(services, riverside, due_in=10 * MIN)
    result: list[int | None] = []
    postgres = services.engine.dialect.name == "postgresql"

    with services.session() as bobs:
        # Bob's claim of the first task is in flight: locked, not yet committed.
        bobs.execute(select(Task.id).where(Task.id == first).with_for_update())
        bobs.execute(update(Task).where(Task.id == first).values(owner_id=bob))
        alices = threading.Thread(target=lambda: result.append(take(services, alice)))
        alices.start()
        if postgres:
            # SKIP LOCKED: Alice does not wait for Bob's transaction.
            alices.join(timeout=10)
            assert not alices.is_alive()
            bobs.commit()
        else:
            # SQLite lets one writer at a time in: Alice waits, then sees Bob's claim.
            bobs.commit()
            alices.join(timeout=10)

    assert result == [second]
    assert owner_of(services, first) == bob
    assert owner_of(services, second) == alice


def test_it_takes_one_task_for_a_press_sent_twice(services, riverside, alice, clock):
    first = make_task(services, riverside, due_in=-10 * MIN)
    make_task(services, riverside, due_in=10 * MIN)

    assert take(services, alice, nonce="press-1") == first
    clock.advance(minutes=2)
    assert take(services, alice, nonce="press-1") == first

    assert owned_by(services, alice) == [first]
    with services.session() as session:
        assert (
            len(session.scalars(select(TaskEvent).where(TaskEvent.kind == "assigned")).all()) == 1
        )


def test_it_takes_another_task_for_another_press_or_after_a_while(
    services, riverside, alice, bob, clock
):
    first = make_task(services, riverside, due_in=-10 * MIN)
    second = make_task(services, riverside, due_in=10 * MIN)
    third = make_task(services, riverside, due_in=20 * MIN)

    assert take(services, alice, nonce="press-1") == first
    assert take(services, bob, nonce="press-1") == second  # one browser's press is not another's
    clock.advance(minutes=10)
    assert take(services, alice, nonce="press-1") == third


def test_it_refuses_a_press_id_it_did_not_give_out(services, riverside, alice):
    task = make_task(services, riverside)

    with pytest.raises(BadQueueFilter):
        take(services, alice, nonce="x" * 65)
    assert owner_of(services, task) is None


def test_it_takes_one_task_for_a_press_sent_twice_at_once(services, riverside, alice):
    tasks = [make_task(services, riverside, due_in=minutes * MIN) for minutes in range(4)]
    start = threading.Barrier(2)
    taken: list[int | None] = []

    def press() -> None:
        start.wait(timeout=30)
        taken.append(take(services, alice, nonce="press-1"))

    threads = [threading.Thread(target=press) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert taken == [tasks[0], tasks[0]]
    assert owned_by(services, alice) == [tasks[0]]
