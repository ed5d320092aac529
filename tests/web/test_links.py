"""The patient's scheduling link: a small page in the practice's name, no login."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select, text

from telephony_service.models import FollowUp, Link, Message, Practice, Task, TaskEvent
from telephony_service.services.delivery import queue_text
from telephony_service.services.intake import create_inquiry_task, parse_inquiry
from telephony_service.services.links import (
    callback_slots,
    create_link,
    hash_token,
    revoke_links,
    revoke_task_links,
)
from telephony_service.services.practices import add_closure, add_practice, calendar_for
from tests.conftest import PUBLIC_BASE_URL
from tests.helpers import ANA, make_practice, timeline_kinds

BOOKING_URL = "https://book.riverside-health.example/schedule?location=2&src=text"
BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
PREVIEWS = (
    "facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # iMessage
    "WhatsApp/2.23.20.0 A",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "",
)
# The clock fixture is Tue 2026-11-17 10:00 in New York; Riverside is open 08:00-17:00.
NY = "America/New_York"


def ny(day: int, hour: int, minute: int = 0, *, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZoneInfo(NY)).astimezone(UTC)


@pytest.fixture
def riverside(services):
    with services.session() as session:
        practice = add_practice(
            session,
            name="Riverside Family Medicine",
            number="+16175550100",
            timezone=NY,
            booking_url=BOOKING_URL,
            now=services.clock(),
        )
        session.commit()
        return practice


def make_task(services, practice) -> Task:
    """Ana's web form, through the intake service (it starts the cadence, too)."""
    inquiry = parse_inquiry(
        {
            "category": "web_form",
            "phone": ANA,
            "name": "Ana Lopez",
            "reason": "knee pain after a fall",
        }
    )
    with services.session() as session:
        task, _ = create_inquiry_task(
            session,
            session.get(Practice, practice.id),
            inquiry,
            idempotency_key=None,
            now=services.clock(),
            base_url=PUBLIC_BASE_URL,
        )
        session.commit()
        return task


def make_link(services, practice, task) -> str:
    with services.session() as session:
        token = create_link(session, practice_id=practice.id, task_id=task.id, now=services.clock())
        session.commit()
    return token


@pytest.fixture
def task(services, riverside):
    return make_task(services, riverside)


@pytest.fixture
def token(services, riverside, task):
    return make_link(services, riverside, task)


def link_of(services, token) -> Link:
    with services.session() as session:
        link = session.scalar(select(Link).where(Link.token_hash == hash_token(token)))
        assert link is not None
        return link


def task_row(services, task_id) -> Task:
    with services.session() as session:
        row = session.get(Task, task_id)
        assert row is not None
        return row


def entries(services, task_id, kind) -> list[TaskEvent]:
    with services.session() as session:
        return list(
            session.scalars(
                select(TaskEvent)
                .where(TaskEvent.task_id == task_id, TaskEvent.kind == kind)
                .order_by(TaskEvent.id)
            )
        )


def pending_followups(services, task_id) -> int:
    with services.session() as session:
        return len(
            session.scalars(
                select(FollowUp).where(FollowUp.task_id == task_id, FollowUp.state == "pending")
            ).all()
        )


def slots_at(services, practice_id, now) -> list[datetime]:
    with services.session() as session:
        practice = session.get(Practice, practice_id)
        assert practice is not None
        return callback_slots(practice, now)


def open_page(client, token, agent=BROWSER):
    return client.get(f"/s/{token}", headers={"User-Agent": agent})


def offered(page) -> list[str]:
    return re.findall(r'name="slot" value="([^"]+)"', page.get_data(as_text=True))


def unchanged(services, task) -> None:
    row = task_row(services, task.id)
    assert row.next_action_at == task.next_action_at
    assert row.cadence_stopped_at is None
    assert entries(services, task.id, "callback_requested") == []
    assert entries(services, task.id, "link_booked") == []
    assert link_action(services, task.id) is None


def link_action(services, task_id) -> str | None:
    with services.session() as session:
        actions = session.scalars(select(Link.action).where(Link.task_id == task_id)).all()
    return next((action for action in actions if action is not None), None)


# --- opening the link ----------------------------------------------------------------------


def test_it_records_a_click_on_the_task_timeline(client, services, clock, task, token):
    response = open_page(client, token)

    assert response.status_code == 200
    link = link_of(services, token)
    assert link.opens == 1
    assert link.opened_at == clock.now
    [opened] = entries(services, task.id, "link_opened")
    assert opened.at == clock.now
    assert opened.data == {"link_id": link.id, "opens": 1}


def test_it_counts_a_reload_without_a_second_timeline_entry(client, services, clock, task, token):
    open_page(client, token)
    clock.advance(minutes=2)
    open_page(client, token)
    assert link_of(services, token).opens == 2
    assert len(entries(services, task.id, "link_opened")) == 1

    clock.advance(hours=3)
    open_page(client, token)
    assert link_of(services, token).opens == 3
    assert len(entries(services, task.id, "link_opened")) == 2
    assert link_of(services, token).opened_at == clock.now - timedelta(hours=3, minutes=2)


@pytest.mark.parametrize("agent", PREVIEWS)
def test_it_does_not_count_a_link_preview(client, services, task, token, agent):
    response = open_page(client, token, agent)

    assert response.status_code == 200
    assert link_of(services, token).opens == 0
    assert link_of(services, token).opened_at is None
    assert "link_opened" not in timeline_kinds(services, task.id)


def test_it_does_not_count_a_head_request(client, services, task, token):
    response = client.head(f"/s/{token}", headers={"User-Agent": BROWSER})

    assert response.status_code == 200
    assert link_of(services, token).opens == 0
    assert "link_opened" not in timeline_kinds(services, task.id)


def test_it_shows_the_practice_name_and_number_and_no_patient_data(client, task, token):
    page = open_page(client, token).get_data(as_text=True)

    assert "<h1>Riverside Family Medicine</h1>" in page
    assert 'href="tel:+16175550100"' in page
    assert "(617) 555-0100" in page
    assert "Book online" in page
    for patient_detail in ("Ana", "Lopez", "knee", "fall", "555-0143", "0143", "web_form"):
        assert patient_detail not in page
    assert BOOKING_URL not in page  # the button posts to us; the URL is never on the page
    assert '<meta name="viewport"' in page


def test_it_offers_times_in_business_hours_in_the_practice_time(client, token):
    response = open_page(client, token)
    page = response.get_data(as_text=True)

    assert offered(response) == [
        slot.isoformat()
        for slot in (
            ny(17, 10, 30),
            ny(17, 13, 30),
            ny(17, 16, 30),
            ny(18, 8),
            ny(18, 12),
            ny(18, 16, 30),
        )
    ]
    for label in ("Tue 10:30 AM", "Tue 1:30 PM", "Tue 4:30 PM", "Wed 8:00 AM", "Wed 12:00 PM"):
        assert label in page
    assert "(EST)" in page


def test_it_names_each_times_zone_when_the_offer_spans_a_clock_change(
    client, services, clock, riverside
):
    clock.now = ny(30, 10, month=10)  # Fri 2026-10-30, EDT; clocks go back on Sunday
    token = make_link(services, riverside, make_task(services, riverside))

    page = open_page(client, token).get_data(as_text=True)

    assert "Fri 10:30 AM EDT" in page
    assert "Mon 8:00 AM EST" in page
    assert "(EDT)" not in page and "(EST)" not in page


# --- booking online --------------------------------------------------------------------------


def test_it_sends_the_patient_to_the_practice_booking_url(client, services, clock, task, token):
    assert pending_followups(services, task.id) >= 1
    open_page(client, token)
    clock.advance(minutes=1)

    response = client.post(f"/s/{token}/book")

    assert response.status_code == 303
    assert response.headers["Location"] == BOOKING_URL
    assert response.headers["Referrer-Policy"] == "no-referrer"
    row = task_row(services, task.id)
    assert row.cadence_stopped_at == clock.now
    assert row.cadence_stop_reason == "booked_online"
    assert pending_followups(services, task.id) == 0
    [booked] = entries(services, task.id, "link_booked")
    assert booked.at == clock.now
    link = link_of(services, token)
    assert (link.action, link.action_at) == ("booked", clock.now)


def test_it_offers_no_booking_without_a_booking_url(client, services):
    practice = make_practice(services)  # no booking URL
    task = make_task(services, practice)
    token = make_link(services, practice, task)

    page = open_page(client, token).get_data(as_text=True)
    assert "Book online" not in page
    assert "/book" not in page
    assert "Ask us to call you" in page

    response = client.post(f"/s/{token}/book")
    assert response.status_code == 404
    body = response.get_data(as_text=True)
    assert "Online booking isn't available" in body
    assert "(617) 555-0100" in body
    unchanged(services, task)


# --- asking for a call back ------------------------------------------------------------------


def test_it_schedules_a_call_back_at_an_offered_time(client, services, clock, task, token):
    slot = offered(open_page(client, token))[1]
    clock.advance(minutes=3)

    response = client.post(f"/s/{token}/callback", data={"slot": slot})

    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/s/{token}/done")
    row = task_row(services, task.id)
    assert row.next_action == "call_back"
    assert row.next_action_at == ny(17, 13, 30)
    assert row.cadence_stopped_at == clock.now
    assert row.cadence_stop_reason == "callback_requested"
    assert pending_followups(services, task.id) == 0
    [requested] = entries(services, task.id, "callback_requested")
    assert requested.data is not None
    assert requested.data["at"] == ny(17, 13, 30).isoformat()
    assert link_of(services, token).action == "callback"

    done = client.get(response.headers["Location"])
    assert done.status_code == 200
    assert "We'll call you at Tue 1:30 PM" in done.get_data(as_text=True)
    assert link_of(services, token).opens == 1  # the confirmation is not another click
    # Back on the page, the request shows and can be changed.
    assert "We'll call you at Tue 1:30 PM" in open_page(client, token).get_data(as_text=True)


def test_it_accepts_a_time_from_a_page_left_open_for_a_while(client, services, clock, task, token):
    slot = offered(open_page(client, token))[1]  # Tue 1:30 PM, offered at 10:00
    clock.advance(minutes=25)
    assert ny(17, 13, 30) not in slots_at(services, task.practice_id, clock.now)

    response = client.post(f"/s/{token}/callback", data={"slot": slot})

    assert response.status_code == 303
    assert task_row(services, task.id).next_action_at == ny(17, 13, 30)


def test_it_refuses_a_time_from_a_page_open_for_hours(client, services, clock, task, token):
    slot = offered(open_page(client, token))[1]
    clock.advance(hours=2)

    response = client.post(f"/s/{token}/callback", data={"slot": slot})

    assert response.status_code == 400
    assert "that time isn't available" in response.get_data(as_text=True)
    unchanged(services, task)


@pytest.mark.parametrize(
    "slot",
    [
        ny(17, 18).isoformat(),  # after closing
        ny(17, 7, 30).isoformat(),  # before opening
        ny(17, 9).isoformat(),  # earlier today: in the past
        ny(17, 10, 15).isoformat(),  # in 15 minutes, too soon and off the half hour
        ny(17, 11, 15).isoformat(),  # not on the half hour
        ny(21, 10).isoformat(),  # Saturday
        ny(26, 10).isoformat(),  # Thanksgiving
        ny(24, 10).isoformat(),  # a week out: never offered
        "2026-11-17T13:30:00",  # no offset
        "tomorrow at 10",
        "",
        "9" * 500,
    ],
)
def test_it_refuses_a_time_it_did_not_offer(client, services, task, token, slot):
    response = client.post(f"/s/{token}/callback", data={"slot": slot})

    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "that time isn't available" in body
    assert "(617) 555-0100" in body
    assert f'href="/s/{token}"' in body
    unchanged(services, task)


def test_it_refuses_a_call_back_request_without_a_slot(client, services, task, token):
    response = client.post(f"/s/{token}/callback")

    assert response.status_code == 400
    unchanged(services, task)


# --- slots ---------------------------------------------------------------------------------


def test_it_spreads_slots_over_business_days_skipping_holidays_and_closures(services, clock):
    practice = make_practice(services)
    with services.session() as session:
        add_closure(session, practice.id, date(2026, 11, 27), "staff training")
        session.commit()

    # Wednesday evening before Thanksgiving: Thursday is a holiday, Friday a closure, then
    # the weekend; Monday and Tuesday get three times each, from opening to closing.
    slots = slots_at(services, practice.id, ny(25, 18))

    assert slots == [
        ny(30, 8),
        ny(30, 12),
        ny(30, 16, 30),
        ny(1, 8, month=12),
        ny(1, 12, month=12),
        ny(1, 16, 30, month=12),
    ]


def test_it_offers_slots_only_inside_hours_and_after_the_lead_time(services):
    practice = make_practice(services)
    with services.session() as session:
        row = session.get(Practice, practice.id)
        assert row is not None
        calendar = calendar_for(row)
        start = ny(17, 0)
        every = [start + timedelta(minutes=m) for m in range(0, 7 * 24 * 60, 37)]
        offers = {now: callback_slots(row, now) for now in every}
    for now, slots in offers.items():
        assert len(slots) == 6
        assert slots == sorted(set(slots))
        for slot in slots:
            assert slot >= now + timedelta(minutes=30)
            assert calendar.is_open(slot)
            assert calendar.to_local(slot).minute in (0, 30)


# --- dead links ------------------------------------------------------------------------------


def test_it_answers_410_for_an_expired_link(client, services, clock, task, token):
    clock.advance(days=7, seconds=1)

    response = open_page(client, token)

    assert response.status_code == 410
    body = response.get_data(as_text=True)
    assert "This link has expired" in body
    assert "Riverside Family Medicine" in body
    assert 'href="tel:+16175550100"' in body
    assert "(617) 555-0100" in body
    assert "Book online" not in body
    assert link_of(services, token).opens == 0
    assert client.post(f"/s/{token}/book").status_code == 410
    slot = ny(18, 12).isoformat()
    assert client.post(f"/s/{token}/callback", data={"slot": slot}).status_code == 410
    assert task_row(services, task.id).cadence_stopped_at is None


def test_it_answers_410_for_a_revoked_link(client, services, clock, task, token):
    with services.session() as session:
        assert revoke_task_links(session, task.id, clock.now) >= 1
        session.commit()

    response = open_page(client, token)

    assert response.status_code == 410
    body = response.get_data(as_text=True)
    assert "no longer active" in body
    assert "(617) 555-0100" in body
    assert client.post(f"/s/{token}/book").status_code == 410
    unchanged(services, task)


def test_it_answers_404_for_an_unknown_token(client, riverside):
    for response in (
        client.get("/s/AAAAAAAAAAA"),
        client.post("/s/AAAAAAAAAAA/book"),
        client.post("/s/AAAAAAAAAAA/callback", data={"slot": ny(18, 12).isoformat()}),
        client.get("/s/AAAAAAAAAAA/done"),
    ):
        assert response.status_code == 404
        body = response.get_data(as_text=True)
        assert "This link isn't valid" in body
        assert "call the practice that texted you" in body
        assert "Traceback" not in body


def test_it_answers_404_for_a_malformed_token_without_a_query(client, services, token):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(services.engine, "before_cursor_execute", count)
    try:
        for path in ("/s/short", "/s/" + "a" * 65, "/s/bad.token!", "/s/%3Cscript%3E", "/s/a%20b"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "This link isn't valid" in response.get_data(as_text=True)
            assert client.post(path + "/book").status_code == 404
    finally:
        event.remove(services.engine, "before_cursor_execute", count)
    assert statements == []


def close_task(services, task, status) -> None:
    with services.session() as session:
        row = session.get(Task, task.id)
        assert row is not None
        row.status = status
        row.next_action = row.next_action_at = None
        session.commit()


def test_it_offers_only_booking_once_the_task_is_taken_care_of(client, services, task, token):
    close_task(services, task, "closed_resolved")

    response = open_page(client, token)

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Riverside Family Medicine" in body
    assert 'href="tel:+16175550100"' in body
    assert "Book online" in body
    assert 'name="slot"' not in body
    slot = ny(18, 12).isoformat()
    assert client.post(f"/s/{token}/callback", data={"slot": slot}).status_code == 409
    assert entries(services, task.id, "callback_requested") == []
    booked = client.post(f"/s/{token}/book")
    assert booked.status_code == 303
    assert booked.headers["Location"] == BOOKING_URL
    assert len(entries(services, task.id, "link_booked")) == 1
    assert task_row(services, task.id).status == "closed_resolved"


def test_the_final_texts_link_still_books_and_reopens_the_task_for_a_call(
    client, services, clock, task, token
):
    # The cadence closed the task after its final text ("you can still book at <link>").
    close_task(services, task, "closed_no_response")
    clock.advance(days=1)  # Wed 10:00

    page = open_page(client, token)
    assert "Book online" in page.get_data(as_text=True)
    slot = offered(page)[0]
    assert slot == ny(18, 10, 30).isoformat()

    response = client.post(f"/s/{token}/callback", data={"slot": slot})

    assert response.status_code == 303
    row = task_row(services, task.id)
    assert row.status == "new"
    assert (row.next_action, row.next_action_at) == ("call_back", ny(18, 10, 30))
    assert row.due_at == ny(18, 10, 30)
    [reopened] = entries(services, task.id, "status_changed")[-1:]
    assert reopened.data == {"from": "closed_no_response", "to": "new"}
    assert len(entries(services, task.id, "callback_requested")) == 1
    assert "We'll call you at Wed 10:30 AM" in client.get(f"/s/{token}/done").get_data(as_text=True)


def test_a_requested_time_is_when_the_task_falls_due(client, services, clock, task, token):
    # The web form was due within 30 minutes; the patient would rather talk on Thursday.
    assert task.due_at == ny(17, 10, 30)
    clock.advance(days=1)
    slots = offered(open_page(client, token))
    thursday = next(slot for slot in slots if slot.startswith("2026-11-19T"))

    assert client.post(f"/s/{token}/callback", data={"slot": thursday}).status_code == 303

    row = task_row(services, task.id)
    assert row.due_at == row.next_action_at == datetime.fromisoformat(thursday)


def test_a_form_target_opened_as_a_page_leads_back_to_the_link(client, token):
    for path in (f"/s/{token}/book", f"/s/{token}/callback"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["Location"].endswith(f"/s/{token}")
        assert response.headers["Cache-Control"] == "no-store"


# --- security --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://callbacks.example.test"},  # not our scheme
        {"Referer": "https://evil.example/phish"},
        {"Origin": "https://callbacks.example.test.evil.example"},
    ],
)
def test_it_refuses_a_post_from_another_site(client, services, task, token, headers):
    book = client.post(f"/s/{token}/book", headers=headers)
    callback = client.post(
        f"/s/{token}/callback", data={"slot": ny(18, 12).isoformat()}, headers=headers
    )

    assert book.status_code == callback.status_code == 403
    assert "another website" in book.get_data(as_text=True)
    unchanged(services, task)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://callbacks.example.test"},
        {"Origin": "https://Callbacks.Example.Test:443"},
        # What browsers send for a post from a page under Referrer-Policy: no-referrer.
        {"Origin": "null"},
        {"Referer": "https://callbacks.example.test/s/whatever"},
        {},
    ],
)
def test_it_accepts_a_post_from_its_own_page(client, services, task, token, headers):
    response = client.post(f"/s/{token}/book", headers=headers)

    assert response.status_code == 303
    assert response.headers["Location"] == BOOKING_URL


def test_it_sends_security_headers_on_every_page(client, services, clock, task, token):
    responses = [
        open_page(client, token),
        client.get("/s/AAAAAAAAAAA"),
        client.get("/s/bad!"),
        client.post(f"/s/{token}/book", headers={"Origin": "https://evil.example"}),
        client.post(f"/s/{token}/callback", data={"slot": "garbage"}),
        client.post(f"/s/{token}/book"),
    ]
    clock.advance(days=8)
    responses.append(open_page(client, token))

    for response in responses:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "noindex" in response.headers["X-Robots-Tag"]
        assert response.headers["X-Frame-Options"] == "DENY"
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
    page = responses[0]
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<style nonce="{nonce.group(1)}">' in page.get_data(as_text=True)
    # The booking post redirects to the booking site, which may redirect on to another
    # host; form-action must allow the whole chain.
    assert "form-action 'self' https:;" in policy
    again = re.search(
        r"'nonce-([^']+)'", open_page(client, token).headers["Content-Security-Policy"]
    )
    assert again is not None and again.group(1) != nonce.group(1)


def test_revoking_a_tasks_links_stops_its_automated_texts(client, services, clock, task, token):
    with services.session() as session:
        row = session.get(Task, task.id)
        assert row is not None and row.contact is not None
        # A text written and waiting (for the patient's morning, say): it carries a link too.
        waiting = queue_text(
            session,
            practice=session.get_one(Practice, task.practice_id),
            contact=row.contact,
            task=row,
            template="second_attempt",
            kind="automated",
            dedupe_key=f"task:{task.id}:test",
            attempt=2,
            now=clock(),
            base_url=PUBLIC_BASE_URL,
        )
        assert waiting is not None
        session.commit()
    assert pending_followups(services, task.id) >= 1
    clock.advance(minutes=5)

    with services.session() as session:
        revoked = revoke_links(session, practice_id=task.practice_id, task_id=task.id, now=clock())
        session.commit()

    assert revoked == 2  # this one and the waiting text's
    assert open_page(client, token).status_code == 410
    row = task_row(services, task.id)
    assert (row.cadence_stopped_at, row.cadence_stop_reason) == (clock.now, "links_revoked")
    assert pending_followups(services, task.id) == 0
    with services.session() as session:
        assert session.get_one(Message, waiting.id).status == "canceled"
    assert timeline_kinds(services, task.id)[-2:] == ["links_revoked", "cadence_stopped"]


def test_it_stores_only_a_hash_of_the_token(services, token):
    with services.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM links")).all()

    assert rows
    assert all(token not in repr(tuple(row)) for row in rows)
    assert link_of(services, token).token_hash == hash_token(token)


def test_it_locks_the_patient_before_the_task_when_acting_on_a_link(
    client, services, riverside, task, token
):
    """The lock order everywhere is contact, then task: a reply applied at the same moment
    takes them in that order, and stops this task's texts too."""
    from tests.helpers import statements

    with statements(services) as seen:
        assert client.post(f"/s/{token}/book").status_code == 303
    locks = [sql.split("FROM")[1].split()[0] for sql in seen if "FOR " in sql]
    if services.engine.dialect.name == "postgresql":  # SQLite takes no row locks
        assert locks[:2] == ["contacts", "tasks"]
        # Not FOR UPDATE: a page view adding to the timeline takes a key-share lock.
        assert "FOR NO KEY UPDATE" in next(
            sql for sql in seen if "FROM tasks" in sql and "FOR " in sql
        )
