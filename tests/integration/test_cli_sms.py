"""`telephony practice quiet-hours` and `telephony simulate sms`."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from werkzeug.serving import make_server

from telephony_service.cli import main
from telephony_service.domain.cadence import DEFAULT_CADENCES
from telephony_service.models import Cadence, Contact, Practice, WebhookEvent
from telephony_service.services import delivery
from telephony_service.services.inbound import KIND as SMS_INCOMING
from telephony_service.services.practices import InvalidInput, parse_texting_window
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE_URL
from tests.helpers import (
    ANA,
    RIVERSIDE_NUMBER,
    call_ended,
    make_practice,
    new_sid,
    practice_row,
    run_jobs,
)

FLOOR = {day: ["08:00", "20:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@pytest.fixture
def telephony(services, tmp_path):
    runner = CliRunner()
    env = {
        "DATABASE_URL": services.settings.database_url,
        "REDIS_URL": services.settings.redis_url or "",
        "SECRET_KEY": services.settings.secret_key,
        "TELEPHONY_INSTANCE_PATH": str(tmp_path),
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }

    def invoke(*args: str, **overrides: str):
        return runner.invoke(main, list(args), env={**env, **overrides}, catch_exceptions=False)

    return invoke


@pytest.fixture
def riverside(services) -> int:
    return make_practice(services).id


def quiet_hours(telephony, practice_id: int, *args: str):
    return telephony("practice", "quiet-hours", "--practice", str(practice_id), *args)


# --- quiet hours -----------------------------------------------------------------------


def test_it_prints_the_legal_floor_when_the_manager_set_no_window(telephony, services, riverside):
    result = quiet_hours(telephony, riverside)
    assert result.exit_code == 0, result.output
    assert "legal floor alone" in result.output
    assert "mon  08:00-20:00" in result.output
    assert "sun  08:00-20:00" in result.output
    assert "daily send cap  500" in result.output
    assert practice_row(services, riverside).texting_hours is None  # printing changes nothing


def test_it_narrows_the_texting_window_per_weekday(telephony, services, riverside):
    result = quiet_hours(
        telephony, riverside, "--weekdays", "09:00-19:00", "--fri", "09:00-17:00", "--sun", "off"
    )
    assert result.exit_code == 0, result.output
    assert "mon  09:00-19:00" in result.output
    assert "fri  09:00-17:00" in result.output
    assert "sat  08:00-20:00" in result.output
    assert "sun  off" in result.output

    practice = practice_row(services, riverside)
    assert practice.texting_hours == {
        **FLOOR,
        "mon": ["09:00", "19:00"],
        "tue": ["09:00", "19:00"],
        "wed": ["09:00", "19:00"],
        "thu": ["09:00", "19:00"],
        "fri": ["09:00", "17:00"],
        "sun": None,
    }
    # What the compliance gate reads.
    window = delivery.policy_for(practice).texting_window
    assert window is not None
    assert window[0] == (time(9), time(19))
    assert window[4] == (time(9), time(17))
    assert window[5] == (time(8), time(20))
    assert window[6] is None


def test_it_keeps_the_days_a_change_leaves_out(telephony, services, riverside):
    assert quiet_hours(telephony, riverside, "--mon", "10:00-18:00").exit_code == 0
    result = quiet_hours(telephony, riverside, "--weekend", "off", "--tue", "09:00-12:00")
    assert result.exit_code == 0, result.output
    assert practice_row(services, riverside).texting_hours == {
        **FLOOR,
        "mon": ["10:00", "18:00"],
        "tue": ["09:00", "12:00"],
        "sat": None,
        "sun": None,
    }

    shown = quiet_hours(telephony, riverside)
    assert shown.exit_code == 0
    assert "mon  10:00-18:00" in shown.output and "sat  off" in shown.output


def test_it_refuses_to_loosen_the_legal_floor(telephony, services, riverside):
    result = quiet_hours(telephony, riverside, "--mon", "07:00-21:00")
    assert result.exit_code != 0
    assert "legal floor of 08:00-20:00" in result.output
    assert "can only narrow it" in result.output
    assert practice_row(services, riverside).texting_hours is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mon", "9-5"], "'9' is not a time"),
        (["--mon", "noon"], "write HH:MM-HH:MM or off"),
        (["--tue", "19:00-09:00"], "must start before it ends"),
        (["--wed", "12:00-12:00"], "must start before it ends"),
        (["--thu", "24:00-25:00"], "is not a time"),
        (["--fri", "09:00-20:30"], "legal floor"),
        (["--weekend", "07:30-12:00"], "--weekend: 07:30-12:00 reaches outside the legal floor"),
    ],
)
def test_it_refuses_a_bad_window(telephony, services, riverside, args, message):
    result = quiet_hours(telephony, riverside, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert practice_row(services, riverside).texting_hours is None


def test_it_clears_the_window_back_to_the_legal_floor(telephony, services, riverside):
    assert quiet_hours(telephony, riverside, "--weekdays", "09:00-17:00").exit_code == 0
    result = quiet_hours(telephony, riverside, "--clear")
    assert result.exit_code == 0, result.output
    assert "legal floor alone" in result.output
    with services.session() as session:
        # SQL NULL, not a JSON null: "no window" must be one thing in the database.
        cleared = session.scalar(
            select(func.count(Practice.id)).where(
                Practice.id == riverside, Practice.texting_hours.is_(None)
            )
        )
        assert cleared == 1
    assert delivery.policy_for(practice_row(services, riverside)).texting_window is None


def test_it_refuses_clear_with_day_options(telephony, services, riverside):
    result = quiet_hours(telephony, riverside, "--clear", "--mon", "09:00-17:00")
    assert result.exit_code == 2
    assert "--clear" in result.output
    assert practice_row(services, riverside).texting_hours is None


def test_it_says_so_when_every_day_is_off(telephony, riverside):
    result = quiet_hours(telephony, riverside, "--weekdays", "off", "--weekend", "off")
    assert result.exit_code == 0, result.output
    assert "every day is off" in result.output


def test_it_sets_the_daily_send_cap(telephony, services, riverside):
    result = quiet_hours(telephony, riverside, "--daily-cap", "50")
    assert result.exit_code == 0, result.output
    assert "daily send cap  50" in result.output
    practice = practice_row(services, riverside)
    assert practice.daily_send_cap == 50
    assert practice.texting_hours is None  # a cap alone leaves the window as it was


@pytest.mark.parametrize("cap", ["0", "100001", "-5"])
def test_it_refuses_a_daily_send_cap_out_of_range(telephony, services, riverside, cap):
    result = quiet_hours(telephony, riverside, "--daily-cap", cap)
    assert result.exit_code != 0
    assert "1 to 100,000" in result.output
    assert practice_row(services, riverside).daily_send_cap == 500


def test_it_refuses_an_unknown_practice(telephony):
    result = quiet_hours(telephony, 999, "--mon", "09:00-17:00")
    assert result.exit_code != 0
    assert "no practice with id 999" in result.output


def test_it_parses_a_window_as_a_manager_types_it():
    assert parse_texting_window(" 09:00 - 17:30 ", "Monday") == ("09:00", "17:30")
    assert parse_texting_window("OFF", "Monday") is None
    with pytest.raises(InvalidInput, match=r"^Monday: '9:00' is not a time"):
        parse_texting_window("9:00-17:00", "Monday")
    assert issubclass(InvalidInput, ValueError)


def test_it_gives_a_new_practice_its_own_copy_of_the_default_cadences(telephony, services):
    result = telephony(
        "practice",
        "add",
        "--name",
        "Harbor Pediatrics",
        "--number",
        "+14155550111",
        "--timezone",
        "America/Los_Angeles",
    )
    assert result.exit_code == 0, result.output
    practice_id = int(result.output.strip())
    with services.session() as session:
        categories = set(
            session.scalars(select(Cadence.category).where(Cadence.practice_id == practice_id))
        )
    assert categories == {category.value for category in DEFAULT_CADENCES}


# --- simulate sms ----------------------------------------------------------------------


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app on a real port, as `telephony simulate` expects to find it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def simulate_sms(telephony, target: str, body: str, **overrides: str):
    return telephony(
        "simulate", "sms", "--from", ANA, "--to", RIVERSIDE_NUMBER, "--body", body,
        "--target", target, **overrides,
    )  # fmt: skip


def stored_texts(services) -> list[WebhookEvent]:
    with services.session() as session:
        return list(session.scalars(select(WebhookEvent).where(WebhookEvent.kind == SMS_INCOMING)))


def test_it_simulates_a_stop_text_that_opts_the_patient_out(telephony, services, live_server):
    make_practice(services)
    result = simulate_sms(telephony, live_server, "Stop")
    assert result.exit_code == 0, result.output
    assert "POST /twilio/sms/incoming -> 200" in result.output

    twiml = next(line for line in result.output.splitlines() if line.startswith("<?xml"))
    reply = ElementTree.fromstring(twiml).find("Message")
    assert reply is not None and "unsubscribed" in (reply.text or "")
    with services.session() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == ANA)).one()
        assert contact.opted_out_at is not None


def test_it_sends_the_fields_twilio_sends(telephony, services, live_server):
    make_practice(services)
    result = simulate_sms(telephony, live_server, "STOP")
    assert result.exit_code == 0, result.output
    [event] = stored_texts(services)
    params = event.params
    assert re.fullmatch(r"SM[0-9a-f]{32}", params["MessageSid"])
    assert params["SmsSid"] == params["SmsMessageSid"] == params["MessageSid"] == event.sid
    assert params["AccountSid"] == ACCOUNT_SID
    assert (params["From"], params["To"], params["Body"]) == (ANA, RIVERSIDE_NUMBER, "STOP")
    assert params["NumMedia"] == "0"
    assert params["NumSegments"] == "1"
    assert params["SmsStatus"] == "received"
    assert params["ApiVersion"] == "2010-04-01"
    assert "MessagingServiceSid" not in params
    assert f"simulated text {event.sid}" in result.output


def test_it_simulates_a_reply_that_waits_for_the_worker(telephony, services, live_server):
    make_practice(services)
    result = simulate_sms(telephony, live_server, "Can you call me after 3pm?")
    assert result.exit_code == 0, result.output
    twiml = next(line for line in result.output.splitlines() if line.startswith("<?xml"))
    assert ElementTree.fromstring(twiml).find("Message") is None
    [event] = stored_texts(services)
    assert event.processed_at is None  # a worker attaches it to the patient's task


def test_it_fails_loudly_when_the_service_rejects_the_signature(telephony, services, live_server):
    make_practice(services)
    result = simulate_sms(
        telephony, live_server, "STOP", TWILIO_AUTH_TOKEN="not-the-token-the-service-checks"
    )
    assert result.exit_code != 0
    assert "POST /twilio/sms/incoming -> 403" in result.output
    assert stored_texts(services) == []


def test_it_refuses_a_number_that_is_not_a_phone_number(telephony, live_server):
    result = telephony(
        "simulate", "sms", "--from", "12345", "--to", RIVERSIDE_NUMBER, "--body", "HELP",
        "--target", live_server,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "'12345' is not a valid phone number" in result.output


def test_it_still_simulates_a_missed_call_on_the_shared_plumbing(telephony, services, live_server):
    make_practice(services)
    result = telephony(
        "simulate", "missed-call", "--from", ANA, "--to", RIVERSIDE_NUMBER, "--target", live_server
    )
    assert result.exit_code == 0, result.output
    assert "POST /twilio/voice/incoming -> 200" in result.output
    assert "POST /twilio/voice/status -> 200" in result.output
    assert f"GET {live_server}/api/v1/tasks" in result.output
    with services.session() as session:
        kinds = list(session.scalars(select(WebhookEvent.kind)))
    assert kinds == ["voice.status"]


def test_it_revokes_a_tasks_links_for_staff(
    telephony, services, client, clock, twilio_messages
) -> None:
    from telephony_service.models import Link, Task, TaskEvent
    from telephony_service.services.links import create_link

    # The command reads the system's clock: the links must be live by it.
    clock.now = datetime.now(UTC)
    practice = make_practice(services)
    other = make_practice(services, name="Harbor Pediatrics", number="+14155550111")
    call_ended(client, new_sid("CA"))
    run_jobs(services, services.redis)
    with services.session() as session:
        task = session.scalars(select(Task)).one()
        token = create_link(session, practice_id=practice.id, task_id=task.id, now=clock())
        session.commit()
    assert client.get(f"/s/{token}").status_code == 200

    refused = telephony("link", "revoke", "--practice", str(other.id), "--task", str(task.id))
    assert refused.exit_code != 0 and "no task" in refused.output
    result = telephony("link", "revoke", "--practice", str(practice.id), "--task", str(task.id))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2 link(s) revoked"  # the text-back's and this one

    page = client.get(f"/s/{token}")
    assert page.status_code == 410
    assert "no longer active" in page.get_data(as_text=True)
    with services.session() as session:
        assert all(link.revoked_at is not None for link in session.scalars(select(Link)))
        [line] = session.scalars(select(TaskEvent).where(TaskEvent.kind == "links_revoked"))
        assert line.data == {"links": 2}
