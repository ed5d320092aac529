"""The queue page: /queue, its refresh (/queue/rows) and the "Take next" button."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from telephony_service.models import User
from telephony_service.services.lanes import add_lane
from telephony_service.wiring import Services
from tests.helpers import ANA, HARBOR_NUMBER, make_practice
from tests.queue_support import make_task, owner_of
from tests.workspace_support import CSRF, make_user, sign_in_as

MIN = timedelta(minutes=1)
BACKGROUND = {"X-Background": "1"}


@pytest.fixture
def riverside(services: Services) -> int:
    return make_practice(services).id


@pytest.fixture
def alice(services: Services, riverside: int) -> User:
    return make_user(services, riverside)


@pytest.fixture
def browser(client: FlaskClient, services: Services, alice: User) -> FlaskClient:
    sign_in_as(client, services, alice)
    return client


def row_ids(html: str) -> list[int]:
    return [
        int(found) for found in re.findall(r'data-testid="queue-row" data-task-id="(\d+)"', html)
    ]


def test_it_sends_visitors_without_a_session_to_sign_in(client, riverside):
    response = client.get("/queue?owner=mine")

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == ["/queue?owner=mine"]
    assert client.get("/queue/rows", headers=BACKGROUND).status_code == 401
    assert client.post("/queue/take-next", data=CSRF).status_code == 400  # no session, no token


def test_it_sends_the_front_door_to_the_queue(client):
    response = client.get("/")

    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/queue"


def test_it_lists_the_queue_most_urgent_first(browser, services, riverside):
    later = make_task(services, riverside, due_in=45 * MIN, name="Ben Ortiz")
    overdue = make_task(services, riverside, due_in=-12 * MIN, name="Ana Lopez")

    response = browser.get("/queue")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert row_ids(html) == [overdue, later]
    assert f'href="/tasks/{overdue}"' in html
    assert 'class="countdown overdue" data-due-at="2026-11-17T14:48:00Z"' in html
    assert "overdue 12:00" in html
    assert 'data-testid="take-next"' in html
    assert "queue.js" in html
    assert "Ana" in html and "Lopez" not in html


def test_it_never_shows_a_full_phone_number(browser, services, riverside):
    make_task(services, riverside, phone=ANA)

    html = browser.get("/queue").get_data(as_text=True)
    rows = browser.get("/queue/rows", headers=BACKGROUND).get_json()["html"]

    assert "+*******0143" in html
    for text in (html, rows):
        for spelling in ("2025550143", "202-555-0143", "(202) 555-0143", "555-0143"):
            assert spelling not in text


def test_it_shows_only_the_signed_in_users_practice(browser, services, riverside):
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    ).id
    ours = make_task(services, riverside)
    theirs = make_task(services, harbor, due_in=-60 * MIN, name="Zed")

    html = browser.get("/queue").get_data(as_text=True)
    refreshed = browser.get("/queue/rows", headers=BACKGROUND).get_json()

    assert row_ids(html) == [ours]
    assert refreshed["task_ids"] == [ours]
    assert "Zed" not in html
    browser.post("/queue/take-next", data=CSRF)
    assert browser.post("/queue/take-next", data=CSRF).headers["Location"].startswith("/queue")
    assert owner_of(services, theirs) is None


def test_it_applies_the_filters_of_the_get_form(browser, services, riverside, alice):
    mine = make_task(services, riverside, owner_id=alice.id, category="referral")
    voicemail = make_task(services, riverside, category="voicemail", due_in=5 * MIN)
    make_task(services, riverside, category="web_form", status="left_voicemail")

    def shown(query: str) -> list[int]:
        return row_ids(browser.get(f"/queue?{query}").get_data(as_text=True))

    assert shown("owner=mine") == [mine]
    assert shown("category=voicemail&category=referral") == [voicemail, mine]
    assert len(shown("owner=unassigned")) == 2
    assert len(shown("status=left_voicemail")) == 1
    assert browser.get("/queue?category=lunch").status_code == 400


def test_it_shows_my_active_lanes(browser, services, riverside, alice):
    with services.session() as session:
        add_lane(
            session,
            practice_id=riverside,
            user_id=alice.id,
            name="New patients",
            categories="new_patient_request",
            hours="mon-fri 08:00-12:00",
            now=services.clock(),
        )
        session.commit()
    in_lane = make_task(services, riverside, category="new_patient_request")
    make_task(services, riverside, category="referral", due_in=-10 * MIN)

    html = browser.get("/queue?lanes=1").get_data(as_text=True)

    assert 'data-testid="active-lanes"' in html
    assert "New patients" in html
    assert row_ids(html) == [in_lane]


def test_it_links_to_the_next_page_with_the_filters(browser, services, riverside):
    for minutes in range(55):
        make_task(services, riverside, due_in=minutes * MIN)

    html = browser.get("/queue?owner=unassigned").get_data(as_text=True)
    link = re.search(r'href="([^"]+)" data-testid="next-page"', html)
    assert link is not None
    second = browser.get(link.group(1).replace("&amp;", "&")).get_data(as_text=True)

    assert len(row_ids(html)) == 50
    assert len(row_ids(second)) == 5
    assert not set(row_ids(html)) & set(row_ids(second))
    assert "owner=unassigned" in link.group(1)


def test_it_refreshes_rows_with_tasks_created_since(browser, services, riverside):
    first = make_task(services, riverside)
    assert row_ids(browser.get("/queue").get_data(as_text=True)) == [first]

    arrived = make_task(services, riverside, due_in=-1 * MIN)
    response = browser.get("/queue/rows", headers=BACKGROUND)
    data = response.get_json()

    assert response.status_code == 200
    assert data["task_ids"] == [arrived, first]
    assert row_ids(data["html"]) == [arrived, first]
    assert data["counts"] == {"open": "2", "overdue": "1", "unassigned": "2"}
    assert data["server_now"] == "2026-11-17T15:00:00Z"


def test_it_takes_the_next_task_and_opens_it(browser, services, riverside, alice):
    make_task(services, riverside, due_in=30 * MIN)
    urgent = make_task(services, riverside, due_in=-30 * MIN)

    response = browser.post("/queue/take-next", data=CSRF)

    assert response.status_code == 302
    assert response.headers["Location"] == f"/tasks/{urgent}"
    assert owner_of(services, urgent) == alice.id


def test_it_says_when_nothing_is_left_to_take(browser, services, riverside):
    response = browser.post("/queue/take-next", data={**CSRF, "owner": "unassigned"})

    assert response.status_code == 302
    assert response.headers["Location"] == "/queue?owner=unassigned"
    assert "Nothing left to take" in browser.get("/queue").get_data(as_text=True)


def test_it_refuses_take_next_without_the_csrf_token(browser, services, riverside):
    task = make_task(services, riverside)

    response = browser.post("/queue/take-next")

    assert response.status_code == 400
    assert owner_of(services, task) is None


def test_it_takes_one_task_when_take_next_is_sent_twice(browser, services, riverside, alice):
    urgent = make_task(services, riverside, due_in=-30 * MIN)
    later = make_task(services, riverside, due_in=30 * MIN)
    html = browser.get("/queue").get_data(as_text=True)
    [nonce] = re.findall(r'name="nonce" value="([^"]+)"', html)

    first = browser.post("/queue/take-next", data={**CSRF, "nonce": nonce})
    second = browser.post("/queue/take-next", data={**CSRF, "nonce": nonce})

    assert first.headers["Location"] == second.headers["Location"] == f"/tasks/{urgent}"
    assert owner_of(services, urgent) == alice.id
    assert owner_of(services, later) is None


def test_it_gives_every_queue_page_a_fresh_take_next_nonce(browser, riverside):
    pages = [browser.get("/queue").get_data(as_text=True) for _ in range(2)]

    nonces = [re.findall(r'name="nonce" value="([^"]+)"', html) for html in pages]

    assert len(nonces[0]) == len(nonces[1]) == 1
    assert nonces[0] != nonces[1]
