"""`telephony lane add` and `telephony lane list`, and the lane rules behind them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from telephony_service.cli import main
from telephony_service.models import Lane
from telephony_service.services.lanes import describe_hours, parse_hours
from telephony_service.services.practices import InvalidInput
from telephony_service.wiring import Services
from tests.helpers import HARBOR_NUMBER, make_practice
from tests.workspace_support import make_user


@pytest.fixture
def telephony(services: Services, tmp_path):
    runner = CliRunner()
    env = {
        "DATABASE_URL": services.settings.database_url,
        "REDIS_URL": services.settings.redis_url or "",
        "SECRET_KEY": services.settings.secret_key,
        "TELEPHONY_INSTANCE_PATH": str(tmp_path),
    }

    def invoke(*args: str):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def riverside(services: Services) -> int:
    return make_practice(services).id


@pytest.fixture
def alice(services: Services, riverside: int) -> int:
    return make_user(services, riverside).id


def add(telephony, practice: int, user: int, *extra: str):
    return telephony(
        "lane",
        "add",
        "--practice",
        str(practice),
        "--user",
        str(user),
        "--name",
        "New patients",
        *extra,
    )


def test_it_adds_a_lane_and_prints_its_id(telephony, services, riverside, alice):
    result = add(
        telephony,
        riverside,
        alice,
        "--categories",
        "new_patient_request, web_form",
        "--hours",
        "mon-fri 08:00-12:00",
    )

    assert result.exit_code == 0, result.output
    with services.session() as session:
        lane = session.scalars(select(Lane)).one()
    assert int(result.output.strip()) == lane.id
    assert (lane.practice_id, lane.user_id, lane.name) == (riverside, alice, "New patients")
    assert lane.categories == {"categories": ["new_patient_request", "web_form"]}
    weekday = [["08:00", "12:00"]]
    assert lane.hours == dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), weekday)


def test_it_lists_a_practices_lanes(telephony, riverside, alice):
    add(telephony, riverside, alice, "--categories", "referral", "--hours", "tue 13:00-15:00")
    add(telephony, riverside, alice, "--categories", "voicemail")

    result = telephony("lane", "list", "--practice", str(riverside))

    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].split("\t")[1:] == [
        f"user {alice}",
        "New patients",
        "referral",
        "tue 13:00-15:00",
    ]
    assert lines[1].endswith("voicemail\talways")


def test_it_refuses_an_unknown_category(telephony, riverside, alice):
    result = add(telephony, riverside, alice, "--categories", "lunch")

    assert result.exit_code == 1
    assert "'lunch' is not a category" in result.output
    assert "new_patient_request" in result.output


def test_it_refuses_a_user_of_another_practice(telephony, services, riverside):
    harbor = make_practice(
        services, name="Harbor Pediatrics", number=HARBOR_NUMBER, timezone="America/Los_Angeles"
    ).id
    stranger = make_user(services, harbor, email="sam@harbor.example").id

    result = add(telephony, riverside, stranger, "--categories", "referral")

    assert result.exit_code == 1
    assert f"practice {riverside} has no user {stranger}" in result.output


def test_it_refuses_hours_it_cannot_read(telephony, riverside, alice):
    for hours, complaint in (
        ("weekdays 08:00-12:00", "is not a day"),
        ("mon-fri 8-12", "not a time in HH:MM form"),
        ("mon 12:00-08:00", "must be before closing time"),
        ("mon", "HH:MM-HH:MM"),
    ):
        result = add(telephony, riverside, alice, "--categories", "referral", "--hours", hours)
        assert result.exit_code == 1, hours
        assert complaint in result.output, (hours, result.output)


def test_it_reads_hours_as_an_operator_writes_them():
    assert parse_hours("always") == {}
    assert parse_hours("fri-mon 09:00-11:00") == {
        day: [["09:00", "11:00"]] for day in ("mon", "fri", "sat", "sun")
    }
    week = parse_hours("mon,wed 08:00-10:00,13:00-15:00; tue 07:30-09:00")
    assert week["wed"] == [["08:00", "10:00"], ["13:00", "15:00"]]
    assert describe_hours(week) == "mon 08:00-10:00,13:00-15:00; tue 07:30-09:00; " + (
        "wed 08:00-10:00,13:00-15:00"
    )
    assert describe_hours(parse_hours("mon-fri 08:00-12:00")) == "mon-fri 08:00-12:00"
    with pytest.raises(InvalidInput, match="overlap"):
        parse_hours("mon 08:00-12:00; mon 11:00-13:00")
