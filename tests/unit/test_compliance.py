from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from telephony_service.domain.compliance import (
    Allowed,
    Block,
    Channel,
    ContactFacts,
    Decision,
    Defer,
    History,
    Policy,
    Purpose,
    contact_zones,
    evaluate,
    next_allowed,
    state_for_number,
)

NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")
HONOLULU = ZoneInfo("Pacific/Honolulu")

# The cast: one patient per rule, on fictional 555-01xx numbers where the area code allows.
NY_PATIENT = "+12125550123"  # New York, NY: no state extras
TX_PATIENT = "+12145550123"  # Texas, Central time
AL_PATIENT = "+12055550123"  # Alabama: no Sundays, no state holidays
LA_PATIENT = "+15045550123"  # Louisiana: Mardi Gras is a state holiday
MS_PATIENT = "+16015550123"  # Mississippi: no Sundays, no Mardi Gras
HI_PATIENT = "+18085550123"  # Hawaii
SD_PATIENT = "+16052001234"  # South Dakota exchange in both Mountain and Central time
NL_PATIENT = "+17092001234"  # Newfoundland and Labrador: Atlantic and Newfoundland time
UK_PATIENT = "+442079460018"  # London
TOLL_FREE = "+18005550199"  # no location at all

MONDAY_9_TO_5 = (time(9), time(17))
MANAGER_WEEK: dict[int, tuple[time, time] | None] = {
    0: MONDAY_9_TO_5,
    1: MONDAY_9_TO_5,
    2: MONDAY_9_TO_5,
    3: MONDAY_9_TO_5,
    4: MONDAY_9_TO_5,
    5: (time(10), time(14)),
    6: None,
}


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=zone)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def contact(
    phone: str = NY_PATIENT,
    *,
    timezone: str | None = None,
    state: str | None = None,
    opted_out: bool = False,
) -> ContactFacts:
    return ContactFacts(phone=phone, timezone=timezone, state=state, opted_out=opted_out)


def history(
    attempts: Sequence[datetime] = (),
    automated_texts: Sequence[datetime] = (),
    practice_sent_today: int = 0,
    practice_in_flight: int = 0,
) -> History:
    return History(
        attempts=attempts,
        automated_texts=automated_texts,
        practice_sent_today=practice_sent_today,
        practice_in_flight=practice_in_flight,
    )


def policy(
    practice_timezone: str = "America/New_York",
    texting_window: dict[int, tuple[time, time] | None] | None = None,
    daily_send_cap: int | None = None,
) -> Policy:
    return Policy(
        practice_timezone=practice_timezone,
        texting_window=texting_window,
        daily_send_cap=daily_send_cap,
    )


def gate(
    now: datetime,
    who: ContactFacts | None = None,
    *,
    channel: Channel = Channel.TEXT,
    purpose: Purpose = Purpose.AUTOMATED,
    past: History | None = None,
    rules: Policy | None = None,
) -> Decision:
    return evaluate(
        now,
        channel=channel,
        purpose=purpose,
        contact=who or contact(),
        history=past or history(),
        policy=rules or policy(),
    )


def deferred_until(decision: Decision) -> datetime:
    assert isinstance(decision, Defer), decision
    assert decision.until.tzinfo is UTC
    assert decision.until.second == 0 and decision.until.microsecond == 0
    return decision.until


def assert_defer_lands_allowed(
    decision: Decision,
    who: ContactFacts | None = None,
    *,
    channel: Channel = Channel.TEXT,
    purpose: Purpose = Purpose.AUTOMATED,
    past: History | None = None,
    rules: Policy | None = None,
    sent_today_at_until: int = 0,
) -> None:
    # A deferral is only useful if the gate lets the message go at `until`. The practice count
    # restarts at the practice's midnight, which the caller passes in as sent_today_at_until.
    until = deferred_until(decision)
    past = past or history()
    later = History(
        attempts=past.attempts,
        automated_texts=past.automated_texts,
        practice_sent_today=sent_today_at_until,
    )
    again = gate(until, who, channel=channel, purpose=purpose, past=later, rules=rules)
    assert again == Allowed()


# The contact window


def test_it_allows_a_text_inside_the_window() -> None:
    assert gate(local(NEW_YORK, 2026, 1, 12, 10, 0)) == Allowed()
    assert gate(local(NEW_YORK, 2026, 1, 12, 8, 0)) == Allowed()
    assert gate(local(NEW_YORK, 2026, 1, 12, 19, 59, 59)) == Allowed()


def test_it_defers_an_early_text_to_eight_local() -> None:
    decision = gate(local(NEW_YORK, 2026, 1, 12, 7, 15))

    assert decision == Defer(
        until=utc(2026, 1, 12, 13, 0),
        reason="quiet hours for the patient (America/New_York) until 08:00",
    )


def test_it_defers_a_text_at_twenty_to_eight_the_next_morning() -> None:
    decision = gate(local(NEW_YORK, 2026, 1, 12, 20, 0))

    assert deferred_until(decision) == utc(2026, 1, 13, 13, 0)
    assert isinstance(decision, Defer)
    assert (
        decision.reason == "quiet hours for the patient (America/New_York) until Tue 13 Jan 08:00"
    )


def test_it_uses_the_known_zone_before_the_number() -> None:
    who = contact(NY_PATIENT, timezone="America/Los_Angeles")

    assert deferred_until(gate(utc(2026, 1, 12, 15, 30), who)) == utc(2026, 1, 12, 16, 0)
    assert contact_zones(NY_PATIENT, "America/Los_Angeles") == ("America/Los_Angeles",)


def test_it_allows_only_minutes_inside_both_zones_of_a_two_zone_number() -> None:
    who = contact(SD_PATIENT)
    assert contact_zones(SD_PATIENT, None) == ("America/Denver", "America/North_Dakota/Center")

    # 08:00 Mountain (15:00Z) is the later start; 20:00 Central (02:00Z) the earlier end.
    assert deferred_until(gate(utc(2026, 1, 12, 14, 30), who)) == utc(2026, 1, 12, 15, 0)
    assert gate(utc(2026, 1, 12, 15, 0), who) == Allowed()
    assert gate(utc(2026, 1, 13, 1, 59), who) == Allowed()
    assert deferred_until(gate(utc(2026, 1, 13, 2, 0), who)) == utc(2026, 1, 13, 15, 0)


def test_it_intersects_the_zones_of_a_canadian_number() -> None:
    who = contact(NL_PATIENT)
    assert contact_zones(NL_PATIENT, None) == ("America/Halifax", "America/St_Johns")
    assert state_for_number(NL_PATIENT) is None

    # 08:00 Atlantic (12:00Z) starts later than 08:00 Newfoundland (11:30Z); 20:00 Newfoundland
    # (23:30Z) ends earlier than 20:00 Atlantic.
    assert deferred_until(gate(utc(2026, 1, 12, 11, 45), who)) == utc(2026, 1, 12, 12, 0)
    assert gate(utc(2026, 1, 12, 23, 29), who) == Allowed()
    assert deferred_until(gate(utc(2026, 1, 12, 23, 30), who)) == utc(2026, 1, 13, 12, 0)


def test_it_uses_the_zone_of_a_number_abroad() -> None:
    who = contact(UK_PATIENT)

    assert contact_zones(UK_PATIENT, None) == ("Europe/London",)
    assert deferred_until(gate(utc(2026, 1, 12, 7, 59), who)) == utc(2026, 1, 12, 8, 0)


@pytest.mark.parametrize(
    ("phone", "zone", "night", "morning"),
    [
        # Mainland Spain and the Canaries: 08:00 in Las Palmas is 09:00 in Madrid.
        ("+34612345678", "Europe/Madrid", (2026, 1, 14, 1, 30), (2026, 1, 14, 9, 0)),
        # Mainland Portugal and the Azores: 08:00 in the Azores is 09:00 in Lisbon.
        ("+351912345678", "Europe/Lisbon", (2026, 1, 14, 0, 30), (2026, 1, 14, 9, 0)),
        # An Australian mobile may be on the Cocos Islands: 08:00 there is 12:30 in Sydney.
        ("+61412345678", "Australia/Sydney", (2026, 1, 15, 4, 30), (2026, 1, 15, 12, 30)),
    ],
)
def test_it_keeps_the_window_every_zone_of_a_country_shares(
    phone: str, zone: str, night: tuple[int, ...], morning: tuple[int, ...]
) -> None:
    who = contact(phone)
    assert len(contact_zones(phone, None)) > 1

    decision = gate(local(ZoneInfo(zone), *night), who)

    assert deferred_until(decision) == local(ZoneInfo(zone), *morning).astimezone(UTC)
    assert_defer_lands_allowed(decision, who)


def test_it_texts_an_unplaceable_number_only_from_noon_to_eight_new_york_time() -> None:
    who = contact(TOLL_FREE)
    assert contact_zones(TOLL_FREE, None) == ()

    decision = gate(local(NEW_YORK, 2026, 1, 12, 11, 0), who)

    assert decision == Defer(
        until=utc(2026, 1, 12, 17, 0),
        reason="quiet hours for the patient (time zone unknown, America/New_York assumed) "
        "until 12:00",
    )
    assert gate(local(NEW_YORK, 2026, 1, 12, 19, 59), who) == Allowed()
    assert deferred_until(gate(local(NEW_YORK, 2026, 1, 12, 20, 0), who)) == utc(2026, 1, 13, 17)


def test_it_keeps_texas_hours() -> None:
    who = contact(TX_PATIENT)
    saturday = local(CHICAGO, 2026, 1, 17, 8, 30)
    sunday = local(CHICAGO, 2026, 1, 18, 11, 0)
    monday_evening = local(CHICAGO, 2026, 1, 19, 20, 0)

    assert deferred_until(gate(saturday, who)) == local(CHICAGO, 2026, 1, 17, 9, 0)
    assert deferred_until(gate(sunday, who)) == local(CHICAGO, 2026, 1, 18, 12, 0)
    assert gate(local(CHICAGO, 2026, 1, 18, 19, 59), who) == Allowed()
    assert deferred_until(gate(monday_evening, who)) == local(CHICAGO, 2026, 1, 20, 9, 0)


def test_it_sends_nothing_on_sunday_in_a_no_sunday_state() -> None:
    decision = gate(local(CHICAGO, 2026, 1, 11, 10, 0), contact(MS_PATIENT))

    assert decision == Defer(
        until=utc(2026, 1, 12, 14, 0),
        reason="no texts on Sundays in MS for the patient (America/Chicago) until Mon 12 Jan 08:00",
    )


def test_it_sends_nothing_on_a_state_holiday_in_a_no_holiday_state() -> None:
    mardi_gras = local(CHICAGO, 2026, 2, 17, 10, 0)

    decision = gate(mardi_gras, contact(LA_PATIENT))

    assert deferred_until(decision) == local(CHICAGO, 2026, 2, 18, 8, 0)
    assert isinstance(decision, Defer)
    assert decision.reason.startswith("state holiday in LA (Mardi Gras)")
    # Mardi Gras is no holiday in Mississippi, next door.
    assert gate(mardi_gras, contact(MS_PATIENT)) == Allowed()


def test_it_takes_the_state_on_file_before_the_number() -> None:
    who = contact(NY_PATIENT, state="tx")

    # Texas's Sunday noon, on Texas clocks (El Paso's Mountain time the latest), not on the
    # New York number's.
    assert deferred_until(gate(local(NEW_YORK, 2026, 1, 18, 11, 0), who)) == local(
        ZoneInfo("America/Denver"), 2026, 1, 18, 12, 0
    )


@pytest.mark.parametrize(
    ("phone", "state"),
    [
        (AL_PATIENT, "AL"),  # geocoded as "Alabama"
        ("+14155550123", "CA"),  # geocoded as "San Francisco, CA"
        ("+12025550123", "DC"),  # "Washington D.C."
        ("+15095550123", "WA"),  # "Washington State"
        (NL_PATIENT, None),  # Canada
        ("+17875550123", None),  # Puerto Rico: a territory of its own region
        ("+16715550123", None),  # Guam
        (UK_PATIENT, None),
        (TOLL_FREE, None),
        ("+1212555012", None),  # too short to be a number
    ],
)
def test_it_finds_the_state_of_a_number(phone: str, state: str | None) -> None:
    assert state_for_number(phone) == state


def test_it_narrows_the_window_to_the_managers_hours() -> None:
    rules = policy(texting_window=MANAGER_WEEK)

    assert deferred_until(gate(local(NEW_YORK, 2026, 1, 12, 8, 30), rules=rules)) == utc(
        2026, 1, 12, 14, 0
    )
    assert gate(local(NEW_YORK, 2026, 1, 12, 16, 59), rules=rules) == Allowed()
    assert deferred_until(gate(local(NEW_YORK, 2026, 1, 12, 17, 0), rules=rules)) == utc(
        2026, 1, 13, 14, 0
    )


def test_it_lets_an_agent_call_outside_the_managers_texting_hours() -> None:
    rules = policy(texting_window=MANAGER_WEEK)
    evening = local(NEW_YORK, 2026, 1, 12, 18, 0)

    assert gate(evening, channel=Channel.CALL, purpose=Purpose.MANUAL, rules=rules) == Allowed()
    # The legal window still holds for calls.
    late = gate(local(NEW_YORK, 2026, 1, 12, 20, 30), channel=Channel.CALL, purpose=Purpose.MANUAL)
    assert deferred_until(late) == utc(2026, 1, 13, 13, 0)


def test_it_sends_no_texts_on_a_day_the_manager_closed() -> None:
    rules = policy(texting_window=MANAGER_WEEK)

    decision = gate(local(NEW_YORK, 2026, 1, 18, 12, 0), rules=rules)

    assert decision == Defer(
        until=utc(2026, 1, 19, 14, 0),
        reason="the practice sends no texts on Sundays for the patient (America/New_York) "
        "until Mon 19 Jan 09:00",
    )


def test_it_treats_a_weekday_missing_from_the_managers_hours_as_closed() -> None:
    rules = policy(texting_window={0: MONDAY_9_TO_5})

    decision = gate(local(NEW_YORK, 2026, 1, 13, 10, 0), rules=rules)

    assert deferred_until(decision) == utc(2026, 1, 19, 14, 0)


def test_it_defers_across_a_weekend_for_a_no_sunday_state_and_manager_hours() -> None:
    rules = policy(texting_window={**MANAGER_WEEK, 6: (time(12), time(16))})
    saturday_afternoon = local(CHICAGO, 2026, 1, 17, 15, 0)

    decision = gate(saturday_afternoon, contact(AL_PATIENT), rules=rules)

    # Sunday is shut in Alabama whatever the manager says, and Monday 19 January is a state
    # holiday there (Martin Luther King Jr. and Robert E. Lee's birthday).
    assert decision == Defer(
        until=local(CHICAGO, 2026, 1, 20, 9, 0).astimezone(UTC),
        reason="quiet hours for the patient (America/Chicago) until Tue 20 Jan 09:00",
    )
    assert_defer_lands_allowed(decision, contact(AL_PATIENT), rules=rules)


def test_it_blocks_when_the_window_never_opens() -> None:
    rules = policy(texting_window=dict.fromkeys(range(7)))
    now = local(NEW_YORK, 2026, 1, 12, 10, 0)

    assert gate(now, rules=rules) == Block("no contact window for the patient in the next 14 days")
    assert next_allowed(now, contact(), rules) is None


# Daylight saving time: 8 March and 1 November 2026


@pytest.mark.parametrize(
    ("zone", "phone", "state", "opens", "closes"),
    [
        ("America/New_York", NY_PATIENT, "NY", utc(2026, 3, 8, 12), utc(2026, 3, 9, 0)),
        ("America/Chicago", "+15155550123", "IA", utc(2026, 3, 8, 13), utc(2026, 3, 9, 1)),
        ("America/Denver", "+13035550123", "CO", utc(2026, 3, 8, 14), utc(2026, 3, 9, 2)),
        ("America/Phoenix", "+16025550123", "AZ", utc(2026, 3, 8, 15), utc(2026, 3, 9, 3)),
        ("America/Los_Angeles", "+15035550123", "OR", utc(2026, 3, 8, 15), utc(2026, 3, 9, 3)),
    ],
)
def test_it_moves_the_window_with_the_clocks_in_spring(
    zone: str, phone: str, state: str, opens: datetime, closes: datetime
) -> None:
    who = contact(phone, timezone=zone, state=state)
    half_past_one = datetime(2026, 3, 8, 1, 30, tzinfo=ZoneInfo(zone))

    assert deferred_until(gate(half_past_one, who)) == opens
    assert deferred_until(gate(opens - timedelta(minutes=1), who)) == opens
    assert gate(opens, who) == Allowed()
    assert gate(closes - timedelta(minutes=1), who) == Allowed()
    # Monday 9 March opens at 08:00 daylight time in all but Phoenix, which has none.
    assert deferred_until(gate(closes, who)) == opens + timedelta(days=1)


@pytest.mark.parametrize(
    ("zone", "phone", "state", "opens", "closes", "opens_next"),
    [
        (
            "America/New_York",
            NY_PATIENT,
            "NY",
            utc(2026, 11, 1, 13),
            utc(2026, 11, 2, 1),
            utc(2026, 11, 2, 13),
        ),
        (
            "America/Chicago",
            "+15155550123",
            "IA",
            utc(2026, 11, 1, 14),
            utc(2026, 11, 2, 2),
            utc(2026, 11, 2, 14),
        ),
        (
            "America/Denver",
            "+13035550123",
            "CO",
            utc(2026, 11, 1, 15),
            utc(2026, 11, 2, 3),
            utc(2026, 11, 2, 15),
        ),
        (
            "America/Phoenix",
            "+16025550123",
            "AZ",
            utc(2026, 11, 1, 15),
            utc(2026, 11, 2, 3),
            utc(2026, 11, 2, 15),
        ),
        (
            "America/Los_Angeles",
            "+15035550123",
            "OR",
            utc(2026, 11, 1, 16),
            utc(2026, 11, 2, 4),
            utc(2026, 11, 2, 16),
        ),
    ],
)
def test_it_moves_the_window_with_the_clocks_in_autumn(
    zone: str, phone: str, state: str, opens: datetime, closes: datetime, opens_next: datetime
) -> None:
    who = contact(phone, timezone=zone, state=state)
    # 01:30 happens twice where the clocks go back; both readings are before the window.
    for fold in (0, 1):
        repeated = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo(zone), fold=fold)
        assert deferred_until(gate(repeated, who)) == opens
    assert gate(opens, who) == Allowed()
    assert gate(closes - timedelta(minutes=1), who) == Allowed()
    assert deferred_until(gate(closes, who)) == opens_next


def test_it_keeps_the_navajo_nation_inside_both_of_its_clocks() -> None:
    # Tuba City numbers map to Denver (daylight time) and Phoenix (none): in summer 08:00
    # Phoenix is 09:00 Denver, and 20:00 Denver is 19:00 Phoenix.
    who = contact("+19282831234")
    assert contact_zones("+19282831234", None) == ("America/Denver", "America/Phoenix")

    assert deferred_until(gate(utc(2026, 7, 1, 14, 30), who)) == utc(2026, 7, 1, 15, 0)
    assert gate(utc(2026, 7, 2, 1, 59), who) == Allowed()
    assert deferred_until(gate(utc(2026, 7, 2, 2, 0), who)) == utc(2026, 7, 2, 15, 0)
    # In winter both clocks agree, so the full 08:00-20:00 Mountain standard window is open.
    assert gate(utc(2026, 1, 13, 2, 59), who) == Allowed()


# Caps


def test_it_defers_a_fourth_attempt_until_the_oldest_is_24_hours_old() -> None:
    past = history(attempts=[utc(2026, 1, 12, 15), utc(2026, 1, 12, 17), utc(2026, 1, 12, 19)])

    for channel, purpose in [
        (Channel.TEXT, Purpose.AUTOMATED),
        (Channel.TEXT, Purpose.MANUAL),
        (Channel.CALL, Purpose.AUTOMATED),
        (Channel.CALL, Purpose.MANUAL),
    ]:
        decision = gate(utc(2026, 1, 12, 20), channel=channel, purpose=purpose, past=past)
        assert decision == Defer(until=utc(2026, 1, 13, 15), reason="3 attempts in 24 h")

    assert deferred_until(gate(utc(2026, 1, 13, 14, 59), past=past)) == utc(2026, 1, 13, 15)
    assert gate(utc(2026, 1, 13, 15), past=past) == Allowed()


def test_it_counts_from_the_third_newest_attempt_when_there_are_more() -> None:
    past = history(
        attempts=[
            utc(2026, 1, 12, 16),
            utc(2026, 1, 12, 14),
            utc(2026, 1, 12, 15),
            utc(2026, 1, 12, 17),
        ]
    )

    decision = gate(utc(2026, 1, 12, 18), purpose=Purpose.MANUAL, past=past)

    assert deferred_until(decision) == utc(2026, 1, 13, 15)


def test_it_allows_one_automated_text_a_day() -> None:
    sent = utc(2026, 1, 12, 15)
    past = history(attempts=[sent], automated_texts=[sent])

    decision = gate(utc(2026, 1, 12, 20), past=past)

    assert decision == Defer(until=utc(2026, 1, 13, 15), reason="1 automated text in 24 h")
    assert gate(utc(2026, 1, 12, 20), purpose=Purpose.MANUAL, past=past) == Allowed()


def test_it_allows_three_automated_texts_a_week() -> None:
    texts = [utc(2026, 1, 12, 15), utc(2026, 1, 13, 15), utc(2026, 1, 14, 15)]
    past = history(attempts=texts[-1:], automated_texts=texts)

    decision = gate(utc(2026, 1, 15, 15), past=past)

    assert decision == Defer(until=utc(2026, 1, 19, 15), reason="3 automated texts in 7 days")
    assert gate(utc(2026, 1, 15, 15), purpose=Purpose.MANUAL, past=past) == Allowed()


def test_it_defers_at_the_practice_cap_until_midnight_where_the_practice_is() -> None:
    rules = policy(practice_timezone="America/New_York", daily_send_cap=100)
    who = contact(HI_PATIENT)
    evening_in_hawaii = local(HONOLULU, 2026, 1, 12, 18, 0)

    capped = gate(evening_in_hawaii, who, past=history(practice_sent_today=100), rules=rules)

    # Midnight in New York is 19:00 in Honolulu, inside the patient's window.
    assert capped == Defer(
        until=utc(2026, 1, 13, 5, 0), reason="daily send cap reached (100 texts a day)"
    )
    assert_defer_lands_allowed(capped, who, rules=rules)
    manual = gate(
        evening_in_hawaii,
        who,
        purpose=Purpose.MANUAL,
        past=history(practice_sent_today=100),
        rules=rules,
    )
    assert deferred_until(manual) == utc(2026, 1, 13, 5, 0)
    assert gate(evening_in_hawaii, who, past=history(practice_sent_today=99), rules=rules) == (
        Allowed()
    )
    # The cap counts texts; calls are not part of it.
    assert (
        gate(
            evening_in_hawaii,
            who,
            channel=Channel.CALL,
            purpose=Purpose.MANUAL,
            past=history(practice_sent_today=100),
            rules=rules,
        )
        == Allowed()
    )


def test_it_waits_for_the_practices_texts_on_the_wire_before_the_last_under_the_cap() -> None:
    """Another worker's text may be the 100th: this one waits for it to settle, briefly,
    rather than both going (101) or this one waiting for midnight (it may yet fit)."""
    rules = policy(practice_timezone="America/New_York", daily_send_cap=100)
    who = contact(NY_PATIENT)
    now = local(NEW_YORK, 2026, 1, 12, 15, 0, 10)

    waiting = gate(
        now, who, past=history(practice_sent_today=99, practice_in_flight=1), rules=rules
    )

    assert waiting == Defer(
        until=local(NEW_YORK, 2026, 1, 12, 15, 1),
        reason="the last texts under the daily send cap (100) are being sent",
    )
    assert gate(
        now, who, past=history(practice_sent_today=98, practice_in_flight=1), rules=rules
    ) == (Allowed())
    over = gate(now, who, past=history(practice_sent_today=100, practice_in_flight=3), rules=rules)
    assert deferred_until(over) == local(NEW_YORK, 2026, 1, 13, 8, 0)


def test_it_finds_practice_midnight_on_days_the_clocks_change_at_midnight() -> None:
    # Havana moves its clocks at midnight: 8 March 2026 starts at 01:00, and 1 November 2026
    # has midnight twice. The count restarts at the first instant of the new day.
    rules = policy(practice_timezone="America/Havana", daily_send_cap=10)
    who = contact(HI_PATIENT)
    capped = history(practice_sent_today=10)

    spring = gate(utc(2026, 3, 8, 4, 30), who, past=capped, rules=rules)
    autumn = gate(utc(2026, 11, 1, 3, 30), who, past=capped, rules=rules)

    assert deferred_until(spring) == utc(2026, 3, 8, 5, 0)
    assert deferred_until(autumn) == utc(2026, 11, 1, 4, 0)


def test_it_defers_a_capped_text_into_the_next_window() -> None:
    rules = policy(texting_window=MANAGER_WEEK)
    # An agent rang three times on Monday evening; the next text may go once the first call is
    # 24 h old (Tuesday 19:00), which is after the practice's texting hours.
    calls = [local(NEW_YORK, 2026, 1, 12, 19, minute) for minute in (0, 20, 40)]
    past = history(attempts=calls)

    decision = gate(local(NEW_YORK, 2026, 1, 12, 19, 50), past=past, rules=rules)

    assert decision == Defer(
        until=local(NEW_YORK, 2026, 1, 14, 9, 0).astimezone(UTC),
        reason="quiet hours for the patient (America/New_York) until Wed 14 Jan 09:00; "
        "3 attempts in 24 h",
    )
    assert_defer_lands_allowed(decision, past=past, rules=rules)


def test_it_waits_for_the_patients_morning_after_practice_midnight() -> None:
    rules = policy(daily_send_cap=50)

    decision = gate(
        local(NEW_YORK, 2026, 1, 12, 15, 0), past=history(practice_sent_today=50), rules=rules
    )

    assert decision == Defer(
        until=utc(2026, 1, 13, 13, 0),
        reason="daily send cap reached (50 texts a day); "
        "quiet hours for the patient (America/New_York) until 08:00",
    )
    assert_defer_lands_allowed(decision, rules=rules)


def test_it_satisfies_every_cap_at_once_when_deferring() -> None:
    # The day cap frees Thursday 10:00 but the weekly cap only the following Monday 10:00;
    # the practice cap is over by then.
    texts = [utc(2026, 1, 12, 15), utc(2026, 1, 13, 15), utc(2026, 1, 14, 15)]
    past = history(attempts=texts, automated_texts=texts, practice_sent_today=5)
    rules = policy(daily_send_cap=5)

    decision = gate(utc(2026, 1, 14, 16), past=past, rules=rules)

    assert deferred_until(decision) == utc(2026, 1, 19, 15)
    assert isinstance(decision, Defer)
    assert "3 automated texts in 7 days" in decision.reason
    assert_defer_lands_allowed(decision, past=past, rules=rules)


def test_it_blocks_texts_when_the_practice_cap_is_zero() -> None:
    rules = policy(daily_send_cap=0)

    assert gate(local(NEW_YORK, 2026, 1, 12, 10), rules=rules) == Block(
        "the practice's daily send cap is 0"
    )


def test_it_rounds_until_up_to_the_next_whole_minute() -> None:
    past = history(
        attempts=[
            utc(2026, 1, 12, 15, 0, 30),
            utc(2026, 1, 12, 16, 0, 0),
            utc(2026, 1, 12, 17, 0, 0),
        ]
    )

    decision = gate(utc(2026, 1, 12, 18, 0, 0), past=past)

    assert deferred_until(decision) == utc(2026, 1, 13, 15, 1)
    assert next_allowed(utc(2026, 1, 12, 15, 0, 30), contact(), policy()) == utc(2026, 1, 12, 15, 1)
    assert next_allowed(utc(2026, 1, 12, 12, 0, 30), contact(), policy()) == utc(2026, 1, 12, 13, 0)


def test_it_gives_the_next_allowed_minute_for_calls_without_the_managers_hours() -> None:
    rules = policy(texting_window=MANAGER_WEEK)
    evening = local(NEW_YORK, 2026, 1, 12, 18, 0)

    assert next_allowed(evening, contact(), rules) == utc(2026, 1, 13, 14, 0)
    assert next_allowed(evening, contact(), rules, channel=Channel.CALL) == utc(2026, 1, 12, 23)


# Opt-out and replies


def test_it_blocks_texts_to_an_opted_out_contact() -> None:
    who = contact(opted_out=True)
    now = local(NEW_YORK, 2026, 1, 12, 10, 0)

    assert gate(now, who, purpose=Purpose.AUTOMATED) == Block("opted out")
    assert gate(now, who, purpose=Purpose.MANUAL) == Block("opted out")
    assert gate(now, who, channel=Channel.CALL, purpose=Purpose.AUTOMATED) == Block("opted out")


def test_it_lets_an_agent_call_an_opted_out_contact_inside_the_window() -> None:
    who = contact(opted_out=True)

    morning = gate(
        local(NEW_YORK, 2026, 1, 12, 10, 0), who, channel=Channel.CALL, purpose=Purpose.MANUAL
    )
    early = gate(
        local(NEW_YORK, 2026, 1, 12, 7, 0), who, channel=Channel.CALL, purpose=Purpose.MANUAL
    )

    assert morning == Allowed()
    assert deferred_until(early) == utc(2026, 1, 12, 13, 0)


def test_it_sends_the_opt_out_confirmation() -> None:
    who = contact(opted_out=True)

    assert gate(local(NEW_YORK, 2026, 1, 12, 10, 0), who, purpose=Purpose.REPLY) == Allowed()


def test_it_answers_a_reply_at_any_hour_and_over_any_cap() -> None:
    small_hours = local(NEW_YORK, 2026, 1, 18, 3, 0)
    recent = [small_hours - timedelta(minutes=n) for n in (5, 10, 15, 20)]
    past = history(attempts=recent, automated_texts=recent, practice_sent_today=1000)
    rules = policy(texting_window=MANAGER_WEEK, daily_send_cap=10)

    decision = gate(small_hours, contact(AL_PATIENT), purpose=Purpose.REPLY, past=past, rules=rules)

    assert decision == Allowed()


def test_it_blocks_anything_to_an_invalid_number() -> None:
    who = contact("+1212555012")
    now = local(NEW_YORK, 2026, 1, 12, 10, 0)

    assert gate(now, who, purpose=Purpose.REPLY) == Block("not a valid phone number")
    assert gate(now, who, purpose=Purpose.AUTOMATED) == Block("not a valid phone number")
    assert gate(now, who, channel=Channel.CALL, purpose=Purpose.MANUAL) == Block(
        "not a valid phone number"
    )


def test_it_refuses_a_call_marked_as_a_reply() -> None:
    with pytest.raises(ValueError, match="reply is a text"):
        gate(local(NEW_YORK, 2026, 1, 12, 10), channel=Channel.CALL, purpose=Purpose.REPLY)


# Inputs


def test_it_rejects_naive_datetimes() -> None:
    naive = datetime(2026, 1, 12, 10, 0)

    with pytest.raises(ValueError, match="timezone-aware"):
        gate(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        gate(utc(2026, 1, 12, 15), past=history(attempts=[naive]))
    with pytest.raises(ValueError, match="timezone-aware"):
        gate(utc(2026, 1, 12, 15), past=history(automated_texts=[naive]))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed(naive, contact(), policy())


def test_it_rejects_a_policy_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        policy(practice_timezone="America/Gotham")
    with pytest.raises(ValueError, match="weekday"):
        policy(texting_window={7: MONDAY_9_TO_5})
    with pytest.raises(ValueError, match="before its end"):
        policy(texting_window={0: (time(17), time(9))})
    with pytest.raises(ValueError, match="negative"):
        policy(daily_send_cap=-1)
    with pytest.raises(ValueError, match="unknown time zone"):
        gate(utc(2026, 1, 12, 15), contact(timezone="Mars/Olympus_Mons"))


def test_it_knows_the_state_of_every_us_area_code_it_lists() -> None:
    from telephony_service.domain.states import AREA_CODE_STATES

    assert len(AREA_CODE_STATES) > 300
    assert all(len(code) == 2 and code.isupper() for code in AREA_CODE_STATES.values())
    expected = {"+16175550100": "MA", "+12125550100": "NY", "+18085550100": "HI"}
    expected |= {"+19075550100": "AK", "+17135550100": "TX", "+12025550143": "DC"}
    for phone, state in expected.items():
        assert state_for_number(phone) == state
    assert state_for_number("+18005550100") is None  # toll-free: no state


def test_it_lists_only_area_codes_of_the_united_states() -> None:
    """state_for_number reads the table for any +1 number without asking for its region."""
    import phonenumbers

    from telephony_service.domain.states import AREA_CODE_STATES

    for area_code in AREA_CODE_STATES:
        regions = {
            phonenumbers.region_code_for_number(number)
            for number in (
                phonenumbers.parse(f"+1{area_code}{exchange}0143", None)
                for exchange in ("555", "201", "234", "456", "678", "890")
            )
            if phonenumbers.is_valid_number(number)
        }
        assert regions == {"US"}, area_code


def test_it_keeps_the_clocks_of_the_patients_state_when_only_the_state_is_known() -> None:
    """A form said Texas; the number (toll-free, or from before a move) says nothing or
    something else. Texas's Sunday noon is read on Texas clocks, El Paso's included."""
    denver = ZoneInfo("America/Denver")
    for phone in (TOLL_FREE, NY_PATIENT):
        who = contact(phone, state="TX")
        sunday = local(NEW_YORK, 2026, 1, 18, 12, 0)  # 11:00 in Dallas
        assert deferred_until(gate(sunday, who)) == local(denver, 2026, 1, 18, 12, 0)
        assert gate(local(denver, 2026, 1, 18, 12, 0), who) == Allowed()
    # A known zone still wins over the state's list.
    dallas = contact(TOLL_FREE, timezone="America/Chicago", state="TX")
    assert gate(local(CHICAGO, 2026, 1, 18, 12, 0), dallas) == Allowed()


def test_it_reads_a_nevada_patient_on_west_wendovers_mountain_clock_too() -> None:
    """Nevada's 09:00-20:00 on Pacific clocks and on West Wendover's Mountain ones: a
    patient known only to be in Nevada is texted 09:00-19:00 Pacific."""
    pacific = ZoneInfo("America/Los_Angeles")
    who = contact(TOLL_FREE, state="NV")
    assert gate(local(pacific, 2026, 1, 13, 18, 59), who) == Allowed()
    evening = local(pacific, 2026, 1, 13, 19, 0)  # 20:00 in West Wendover
    assert deferred_until(gate(evening, who)) == local(pacific, 2026, 1, 14, 9, 0)


def test_it_knows_the_clocks_of_every_state() -> None:
    from telephony_service.domain.states import STATE_ZONES, US_STATES

    assert set(STATE_ZONES) == set(US_STATES)
    for zones in STATE_ZONES.values():
        assert zones and all(ZoneInfo(zone) for zone in zones)


def test_it_waits_as_long_as_it_is_told_for_texts_on_the_wire() -> None:
    rules = policy(daily_send_cap=1)
    now = local(NEW_YORK, 2026, 1, 12, 15, 0, 10)
    for wait, until in ((timedelta(seconds=30), 1), (timedelta(minutes=2, seconds=30), 3)):
        decision = evaluate(
            now,
            channel=Channel.TEXT,
            purpose=Purpose.AUTOMATED,
            contact=contact(NY_PATIENT),
            history=history(practice_in_flight=1),
            policy=rules,
            in_flight_wait=wait,
        )
        assert deferred_until(decision) == local(NEW_YORK, 2026, 1, 12, 15, until)
