"""Phone number clean-up for caller IDs and patient-entered numbers."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

# Carriers and Twilio report withheld caller IDs as words or as these keypad spellings
# (ANONYMOUS, RESTRICTED, BLOCKED, UNKNOWN); some of them are real, dialable numbers.
_WITHHELD_WORDS = frozenset({"anonymous", "restricted", "unknown", "blocked", "private"})
_WITHHELD_DIGITS = frozenset({"266696687", "7378742833", "2562533", "8656696"})

_UNKNOWN_ZONE = "Etc/Unknown"


def _is_withheld(raw: str) -> bool:
    if raw.lower() in _WITHHELD_WORDS:
        return True
    digits = "".join(ch for ch in raw if ch.isdigit())
    # Twilio may prefix the North American "1" to a keypad spelling.
    return digits in _WITHHELD_DIGITS or (digits.startswith("1") and digits[1:] in _WITHHELD_DIGITS)


# Every missed call parses the practice's number and the caller's, more than once.
@functools.lru_cache(maxsize=4096)
def normalise_phone(raw: str | None, default_region: str = "US") -> str | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text or _is_withheld(text):
        return None
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if _is_withheld(e164):
        return None
    return e164


def mask_phone(e164: str | None) -> str:
    if e164 is None:
        return "none"
    digits = [ch for ch in e164 if ch.isdigit()]
    kept = digits[-4:] if len(digits) > 4 else []
    return "+" + "*" * (len(digits) - len(kept)) + "".join(kept)


@dataclass(frozen=True)
class NumberFacts:
    """What the compliance gate needs of a valid number."""

    country_code: int
    national_number: int
    # The zones the number maps to: its area's for a geographic number, else the whole
    # country code's list (every zone of +1 for a toll-free number).
    zones: tuple[str, ...]


# Asked on every send, for a patient the process has often not seen before.
@functools.lru_cache(maxsize=4096)
def number_facts(e164: str) -> NumberFacts | None:
    """A number's facts, or None if phonenumbers does not take it as valid.

    One parse and one search for the number's region. phonenumbers finds the region of a +1
    number by testing the code's regions in turn against the number (Puerto Rico's is the
    nineteenth), and is_valid_number, time_zones_for_number and region_code_for_number
    each search again: three quarters of the gate's time for a number it had not seen.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    # UNKNOWN exactly when is_valid_number is false: both test the number against the
    # patterns of the region it belongs to.
    kind = phonenumbers.number_type(number)
    code, national = number.country_code, number.national_number
    if kind == PhoneNumberType.UNKNOWN or code is None or national is None:
        return None
    if phonenumbers.is_number_type_geographical(kind, code):
        zones = phone_timezone.time_zones_for_geographical_number(number)
    else:
        zones = TIMEZONE_DATA.get(str(code), ())
    return NumberFacts(
        country_code=code,
        national_number=national,
        zones=tuple(zone for zone in zones if zone != _UNKNOWN_ZONE),
    )


def number_timezones(e164: str) -> tuple[str, ...]:
    facts = number_facts(e164)
    return facts.zones if facts is not None else ()


def display_number(e164: str) -> str:
    """A number as a person reads it: "(617) 555-0100" at home, "+44 20 7946 0000" abroad."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    region = phonenumbers.region_code_for_number(number)
    style = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if region in ("US", "CA")
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(number, style)
