"""The agent workspace in headless Chromium: sign in, take the next task, call the patient
through the bridge, record the outcome, and see the queue change, while another practice's
agent, signed in beside them, sees none of it.

The app runs on the test's database and Redis (tests/e2e/browser_support.py), with the
console gateway: the call is played through by the development outbox's "Simulate answer",
which posts signed bridge webhooks to the app exactly as Twilio would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from telephony_service.wiring import Services
from tests.e2e.browser_support import browser, live_server, live_url, settings  # noqa: F401
from tests.helpers import ANA, BEN, HARBOR_NUMBER, make_api_key, make_practice
from tests.workspace_support import PASSWORD, make_user

pytestmark = pytest.mark.slow

TIMEOUT_MS = 15_000
GOOD_NOTE = (
    "Reached Ana, booked a new-patient visit Tuesday 9:00 with Dr. Lee; nothing else needed."
)


def _inquiry(app: Flask, key: str, **fields: str) -> int:
    response = app.test_client().post(
        "/api/v1/inquiries", json=fields, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    task_id: int = response.get_json()["id"]
    return task_id


def _sign_in(browser: Any, url: str, email: str, clock_now: Any) -> Any:  # noqa: F811
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    # The server runs on the tests' frozen clock; the page's countdowns must agree with it.
    page.clock.install(time=clock_now)
    page.goto(f"{url}/queue")
    assert "/login" in page.url
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/queue"))
    return page


def test_it_lets_an_agent_take_call_and_close_a_task_while_another_practice_sees_none_of_it(
    services: Services,
    app: Flask,
    live_url: str,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    riverside = make_practice(services)
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    )
    make_user(services, riverside.id, email="sam@riverside.example", name="Sam")
    make_user(
        services, riverside.id, email="dana@riverside.example", name="Dana", phone="+16175550142"
    )
    make_user(services, harbor.id, email="kim@harbor.example", name="Kim", phone="+14155550123")
    riverside_key = make_api_key(services, riverside.id)
    harbor_key = make_api_key(services, harbor.id)
    urgent = _inquiry(
        app,
        riverside_key,
        category="new_patient_request",
        phone=ANA,
        name="Ana Diaz",
        reason="new patient visit",
        source="web",
    )
    later = _inquiry(
        app,
        riverside_key,
        category="web_form",
        phone=BEN,
        name="Ben Ortiz",
        reason="question about hours",
        source="web",
    )
    harbor_task = _inquiry(
        app,
        harbor_key,
        category="web_form",
        phone="+14155550177",
        name="Hana Lee",
        reason="records request",
        source="web",
    )
    now = services.clock()

    sam = _sign_in(browser, live_url, "sam@riverside.example", now)
    kim = _sign_in(browser, live_url, "kim@harbor.example", now)
    # Dana, Sam's colleague, keeps the queue open and never reloads it.
    dana = _sign_in(browser, live_url, "dana@riverside.example", now)

    # Sam's queue: Riverside's two tasks, the new patient (15-minute deadline) first.
    rows = sam.locator("[data-testid=queue-row]")
    rows.first.wait_for()
    assert [int(r.get_attribute("data-task-id")) for r in rows.all()] == [urgent, later]
    assert ANA not in sam.content()  # masked in the list

    # Take next: the most urgent unowned task, on its page, with the script filled in.
    sam.click("[data-testid=take-next]")
    sam.wait_for_url(re.compile(rf"/tasks/{urgent}$"))
    script = sam.locator("[data-testid=call-script]")
    assert "Hi, this is Sam calling from Riverside Family Medicine" in script.inner_text()
    assert sam.locator("[data-testid=task-owner]").inner_text().strip() == "Sam"
    # Dana's queue shows, without a reload, that Sam has it.
    dana_row = dana.locator(f"[data-testid=queue-row][data-task-id='{urgent}']")
    expect(dana_row).to_contain_text("Sam", timeout=TIMEOUT_MS)

    # Call: the agent's phone is dialled first (the console gateway records the call).
    sam.click("[data-testid=call-button]")
    status = sam.locator("[data-testid=call-status]")
    status.locator("[data-call-label]").wait_for()
    first_label = status.inner_text()
    assert "ring" in first_label.lower() or "calling" in first_label.lower(), first_label

    # The call is answered and bridged (the development outbox plays Twilio's part); the
    # task page follows it without a reload.
    _simulate_answer(sam, live_url)
    sam.wait_for_function(
        "() => document.querySelector('[data-testid=call-status]').dataset.ended === 'true'"
    )
    assert "completed" in status.inner_text().lower() or "ended" in status.inner_text().lower()
    # The panel drawn during the call offers another one now.
    expect(sam.locator("[data-call-again]")).to_be_visible()

    # A useless note is refused with help; a useful one closes the task.
    sam.check("input[name=disposition][value=resolved]")
    sam.fill("#outcome-note", "called pt")
    sam.click("[data-testid=record-outcome]")
    assert "what comes next" in sam.locator("[data-testid=error-note]").inner_text()
    sam.check("input[name=disposition][value=resolved]")
    sam.fill("#outcome-note", GOOD_NOTE)
    sam.click("[data-testid=record-outcome]")
    sam.wait_for_url(re.compile(r"/queue"))
    remaining = sam.locator("[data-testid=queue-row]")
    remaining.first.wait_for()
    assert [int(r.get_attribute("data-task-id")) for r in remaining.all()] == [later]

    # Dana's queue drops the closed task on its own refresh.
    expect(dana.locator("[data-testid=queue-row]")).to_have_count(1, timeout=TIMEOUT_MS)
    assert dana.locator("[data-testid=queue-row]").get_attribute("data-task-id") == str(later)

    # Kim, at Harbor, saw only Harbor's task throughout; a new Harbor inquiry appears in her
    # queue without a reload, and in no Riverside queue; Riverside's task is not found.
    kim_rows = kim.locator("[data-testid=queue-row]")
    assert [int(r.get_attribute("data-task-id")) for r in kim_rows.all()] == [harbor_task]
    newer = _inquiry(
        app,
        harbor_key,
        category="cancellation",
        phone="+14155550178",
        name="Ian Park",
        reason="cancel visit",
        source="web",
    )
    expect(kim_rows).to_have_count(2, timeout=TIMEOUT_MS)
    assert {int(r.get_attribute("data-task-id")) for r in kim_rows.all()} == {harbor_task, newer}
    # Two of Dana's refreshes later (the first one's answer has surely been applied when the
    # second is asked for), Harbor's task is still not there.
    for _ in range(2):
        with dana.expect_request(lambda r: "/queue/rows" in r.url, timeout=TIMEOUT_MS):
            pass
    assert dana.locator(f"[data-testid=queue-row][data-task-id='{newer}']").count() == 0
    response = kim.goto(f"{live_url}/tasks/{urgent}")
    assert response is not None and response.status == 404
    assert "Ana" not in kim.content()


def _simulate_answer(page: Any, url: str) -> None:
    """What a newcomer does without a phone: the outbox's "Simulate answer" for the call."""
    outbox = page.context.new_page()
    outbox.set_default_timeout(TIMEOUT_MS)
    outbox.goto(f"{url}/dev/outbox")
    form = outbox.locator("form", has=outbox.locator("button", has_text="Simulate answer"))
    form.locator("select[name=outcome]").select_option("completed")
    form.locator("button").click()
    outbox.wait_for_load_state()
    outbox.close()
