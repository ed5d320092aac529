from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers.timezone import time_zones_for_number

from telephony_service.domain.phones import (
    mask_phone,
    normalise_phone,
    number_facts,
    number_timezones,
)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "anonymous",
        "Anonymous",
        "ANONYMOUS",
        "restricted",
        "Restricted",
        "unknown",
        "Unknown",
        "blocked",
        "+266696687",
        "266696687",
        "7378742833",
        "+7378742833",
        "+17378742833",
        "2562533",
        "+2562533",
        "8656696",
        "+8656696",
        "not a number",
        "12",
        "+1 555",
        "+999 1234 5678",
        "1" * 300,
    ],
)
def test_it_treats_withheld_and_unusable_numbers_as_none(raw: str | None) -> None:
    assert normalise_phone(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        "(415) 555-2671",
        "415.555.2671",
        "415-555-2671",
        "+1 415 555 2671",
        " 4155552671 ",
        "14155552671",
    ],
)
def test_it_normalises_us_formats_to_e164(raw: str) -> None:
    assert normalise_phone(raw) == "+14155552671"


def test_it_normalises_international_numbers() -> None:
    assert normalise_phone("+44 20 7946 0958") == "+442079460958"


def test_it_uses_the_default_region_for_national_numbers() -> None:
    assert normalise_phone("020 7946 0958", default_region="GB") == "+442079460958"
    assert normalise_phone("020 7946 0958") is None


def test_it_returns_none_for_an_unknown_default_region() -> None:
    assert normalise_phone("415 555 2671", default_region="ZZ") is None


def test_it_masks_all_but_the_last_four_digits() -> None:
    assert mask_phone("+14155552671") == "+*******2671"
    assert mask_phone("+442079460958") == "+********0958"


def test_it_masks_short_or_missing_numbers() -> None:
    assert mask_phone(None) == "none"
    assert mask_phone("+1234") == "+****"
    assert mask_phone("") == "+"


def test_it_finds_the_time_zone_of_a_geographic_number() -> None:
    assert number_timezones("+14155552671") == ("America/Los_Angeles",)
    assert number_timezones("+12125551234") == ("America/New_York",)
    assert number_timezones("+442079460958") == ("Europe/London",)


def test_it_finds_many_time_zones_for_a_toll_free_number() -> None:
    zones = number_timezones("+18005551234")
    assert len(zones) > 1
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= set(zones)


def test_it_returns_no_time_zones_when_unknown() -> None:
    assert number_timezones("+266696687") == ()
    assert number_timezones("garbage") == ()
    assert number_timezones("") == ()


@pytest.mark.parametrize(
    "e164",
    [
        "+14155552671",  # California
        "+17875550143",  # Puerto Rico: the nineteenth region of +1
        "+16715550143",  # Guam
        "+14165550143",  # Toronto
        "+18085550143",  # Hawaii
        "+18005551234",  # toll-free: the whole of +1
        "+442079460958",  # London
        "+447700900123",  # a UK mobile
        "+61291234567",  # Sydney
        "+12125550000",  # not a valid number
        "+1212555",  # too short
        "+266696687",  # a withheld caller ID's digits
        "garbage",
        "",
    ],
)
def test_it_finds_the_facts_phonenumbers_itself_gives(e164: str) -> None:
    """number_facts searches for the region once; phonenumbers' own calls search anew."""
    facts = number_facts(e164)
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        assert facts is None
        return
    valid = phonenumbers.is_valid_number(number)
    assert (facts is not None) == valid
    expected_zones = tuple(zone for zone in time_zones_for_number(number) if zone != "Etc/Unknown")
    assert number_timezones(e164) == expected_zones
    if facts is not None:
        assert facts.country_code == number.country_code
        assert facts.zones == expected_zones
