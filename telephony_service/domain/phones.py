"""Phone number clean-up for caller IDs and patient-entered numbers."""

from __future__ import annotations

import functools

import phonenumbers
from phonenumbers import timezone as phone_timezone

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


def number_timezones(e164: str) -> tuple[str, ...]:
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = phone_timezone.time_zones_for_number(number)
    return tuple(zone for zone in zones if zone != _UNKNOWN_ZONE)


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
