"""The `telephony` command an operator uses to set a practice up."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from telephony_service.cli import main
from telephony_service.models import Practice, User
from telephony_service.services.practices import practice_for_api_key


@pytest.fixture
def telephony(services, tmp_path):
    runner = CliRunner()
    env = {
        "DATABASE_URL": services.settings.database_url,
        "REDIS_URL": services.settings.redis_url or "",
        "SECRET_KEY": services.settings.secret_key,
        "TELEPHONY_INSTANCE_PATH": str(tmp_path),
    }

    def invoke(*args: str, stdin: str | None = None):
        return runner.invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)

    return invoke


def _add_practice(telephony) -> int:
    result = telephony(
        "practice",
        "add",
        "--name",
        "Riverside Family Medicine",
        "--number",
        "+1 617 555 0100",
        "--timezone",
        "America/New_York",
        "--booking-url",
        "https://book.example.test/riverside",
    )
    assert result.exit_code == 0, result.output
    return int(result.output.strip())


def test_it_migrates_the_database(telephony):
    result = telephony("db", "upgrade")
    assert result.exit_code == 0
    assert "up to date" in result.output


def test_it_adds_a_practice_and_prints_its_id(telephony, services):
    practice_id = _add_practice(telephony)
    with services.session() as session:
        practice = session.get(Practice, practice_id)
        assert practice is not None
        assert practice.twilio_number == "+16175550100"
        assert practice.booking_url == "https://book.example.test/riverside"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--number", "12345", "--timezone", "America/New_York"], "not a valid phone number"),
        (["--number", "+16175550100", "--timezone", "Mars/Olympus"], "not a known time zone"),
    ],
)
def test_it_refuses_a_bad_practice(telephony, args, message):
    result = telephony("practice", "add", "--name", "X", *args)
    assert result.exit_code != 0
    assert message in result.output


# 90 characters: its texts fit two segments beside the links of a short host only.
LONG_NAME = (
    "Riverside Family Medicine and Community Health Partners of Greater Boston, North Shore Inc"
)


def test_it_checks_a_practice_name_against_the_services_own_links(services, tmp_path):
    def add(public_base_url: str, number: str):
        env = {
            "DATABASE_URL": services.settings.database_url,
            "SECRET_KEY": services.settings.secret_key,
            "TELEPHONY_INSTANCE_PATH": str(tmp_path),
            "PUBLIC_BASE_URL": public_base_url,
        }
        return CliRunner().invoke(
            main,
            [
                "practice",
                "add",
                "--name",
                LONG_NAME,
                "--number",
                number,
                "--timezone",
                "America/New_York",
            ],
            env=env,
        )

    long_host = "https://patient-callbacks.riversidefamilymedicine-boston.org"
    refused = add(long_host, "+16175550101")
    assert refused.exit_code != 0
    assert "longer than two SMS segments" in refused.output
    assert add("https://cb.example.org", "+16175550102").exit_code == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://book.example.test",
        "https://book.example.test/a b",
        "https://x.test/\nSet",
        "https://",  # no host: the patient would land on a browser error
        "https:///book",
        "https://book.example.test/" + "a" * 500,  # longer than the column
        "https://[clinic.example.test/book",  # a malformed [IPv6] host
    ],
)
def test_it_refuses_a_booking_url_that_could_not_be_a_redirect(telephony, url):
    result = telephony(
        "practice",
        "add",
        "--name",
        "X",
        "--number",
        "+16175550100",
        "--timezone",
        "America/New_York",
        "--booking-url",
        url,
    )
    assert result.exit_code != 0
    assert "the booking URL must start with https://" in result.output


def test_it_refuses_a_second_practice_on_the_same_number(telephony):
    _add_practice(telephony)
    result = telephony(
        "practice",
        "add",
        "--name",
        "Copy",
        "--number",
        "+16175550100",
        "--timezone",
        "America/New_York",
    )
    assert result.exit_code != 0
    assert "already uses" in result.output


def test_it_adds_a_user_with_a_password_from_stdin(telephony, services):
    practice_id = _add_practice(telephony)
    result = telephony(
        "user",
        "add",
        "--practice",
        str(practice_id),
        "--email",
        "Dana@Riverside.example",
        "--role",
        "agent",
        "--phone",
        "+16175550142",
        stdin="correct horse battery\n",
    )
    assert result.exit_code == 0, result.output
    with services.session() as session:
        user = session.scalars(select(User)).one()
        assert user.email == "dana@riverside.example"
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash


def test_it_refuses_a_short_password_and_an_unknown_practice(telephony):
    practice_id = _add_practice(telephony)
    common = ["--email", "a@b.example", "--role", "agent", "--phone", "+16175550142"]
    short = telephony("user", "add", "--practice", str(practice_id), *common, stdin="short\n")
    assert short.exit_code != 0 and "at least 10" in short.output
    unknown = telephony("user", "add", "--practice", "999", *common, stdin="long enough pw\n")
    assert unknown.exit_code != 0 and "no practice" in unknown.output


def test_it_prints_an_api_key_once_and_keeps_only_its_hash(telephony, services):
    practice_id = _add_practice(telephony)
    result = telephony("apikey", "add", "--practice", str(practice_id))
    key = result.output.strip()
    assert key.startswith("tsk_") and len(key) > 40
    with services.session() as session:
        found = practice_for_api_key(session, key)
        assert found is not None and found.id == practice_id
        assert practice_for_api_key(session, key + "x") is None


def test_it_changes_business_hours_and_deadlines_follow(telephony, services, clock):
    from telephony_service.domain.categories import Category
    from telephony_service.domain.sla import first_response_due
    from telephony_service.services.practices import calendar_for

    practice_id = _add_practice(telephony)
    result = telephony(
        "practice", "hours", "--practice", str(practice_id), "tue=12:00-18:00", "sat=09:00-12:00"
    )
    assert result.exit_code == 0, result.output
    assert "tue  12:00-18:00" in result.output
    assert "sat  09:00-12:00" in result.output
    with services.session() as session:
        practice = session.get(Practice, practice_id)
        assert practice is not None
        # Tuesday 10:00 New York: opens at noon now, so a missed call is due at 13:00.
        due = first_response_due(Category.MISSED_CALL, clock(), calendar_for(practice))
        assert due.isoformat() == "2026-11-17T18:00:00+00:00"


@pytest.mark.parametrize("change", ["tue=17:00-09:00", "funday=09:00-10:00", "tue", "tue=9-5"])
def test_it_refuses_bad_business_hours(telephony, change):
    practice_id = _add_practice(telephony)
    result = telephony("practice", "hours", "--practice", str(practice_id), change)
    assert result.exit_code != 0


def test_it_closes_a_practice_for_a_day(telephony, services):
    from datetime import date

    practice_id = _add_practice(telephony)
    result = telephony(
        "practice",
        "closure",
        "--practice",
        str(practice_id),
        "--date",
        "2026-12-24",
        "--reason",
        "Christmas Eve",
    )
    assert result.exit_code == 0, result.output
    again = telephony("practice", "closure", "--practice", str(practice_id), "--date", "2026-12-24")
    assert again.exit_code != 0 and "already" in again.output
    with services.session() as session:
        from telephony_service.services.practices import calendar_for

        practice = session.get(Practice, practice_id)
        assert practice is not None
        assert not calendar_for(practice).is_business_day(date(2026, 12, 24))


def test_it_hands_stuck_events_back_to_the_relay(telephony, services, clock, client):
    from sqlalchemy import update

    from telephony_service.models import WebhookEvent
    from telephony_service.services.events import MAX_ATTEMPTS
    from tests.conftest import flush_redis
    from tests.helpers import call_ended, events, make_practice, new_sid
    from workers.relay import relay_once

    make_practice(services)
    call_ended(client, new_sid("CA"))
    services.dispatcher.flush()
    with services.session() as session:
        session.execute(update(WebhookEvent).values(attempts=MAX_ATTEMPTS, error="Boom"))
        session.commit()
    clock.advance(hours=2)
    assert relay_once(services) == 0

    result = telephony("events", "retry")
    assert result.exit_code == 0, result.output
    assert "1 event(s)" in result.output
    assert events(services)[0].attempts == 0
    flush_redis(services.redis)  # the webhook's own job ran (and failed) long ago
    assert relay_once(services) == 1


def test_it_refuses_a_practice_name_with_control_characters(telephony):
    """It would go into the greeting's TwiML, which Twilio could then not parse."""
    result = telephony(
        "practice",
        "add",
        "--name",
        "Riverside\x1bFamily Medicine",
        "--number",
        "+16175550100",
        "--timezone",
        "America/New_York",
    )
    assert result.exit_code != 0
    assert "the practice name must be 1 to 200 printable characters" in result.output


@pytest.mark.parametrize(
    ("database", "message"),
    [
        ("sqlite:///{tmp}/fresh.sqlite3", "(run `telephony db upgrade` first)"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "database error: OperationalError"),
    ],
    ids=["not_migrated", "down"],
)
def test_it_says_what_is_wrong_with_the_database_instead_of_a_traceback(
    services, tmp_path, database, message
):
    env = {
        "DATABASE_URL": database.format(tmp=tmp_path),
        "SECRET_KEY": services.settings.secret_key,
        "TELEPHONY_INSTANCE_PATH": str(tmp_path),
    }
    for command in (
        ["practice", "add", "--name", "X", "--number", "+16175550100", "--timezone", "UTC"],
        ["practice", "quiet-hours", "--practice", "1", "--weekdays", "09:00-19:00"],
        ["link", "revoke", "--practice", "1", "--task", "1"],
    ):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        assert message in result.output
