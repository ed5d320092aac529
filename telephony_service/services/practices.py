"""Practices, their users and API keys."""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import event, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session, sessionmaker

from telephony_service.cache import TtlCache
from telephony_service.db import attach_inserted, table
from telephony_service.domain.calendar import (
    DAY_KEYS,
    DEFAULT_HOURS,
    BusinessCalendar,
    dump_weekly_hours,
    parse_weekly_hours,
)
from telephony_service.domain.phones import display_number, normalise_phone
from telephony_service.models import ApiKey, Practice, PracticeClosure, User
from telephony_service.wording import TemplateTooLong, render_sms

ROLES = ("agent", "clinician", "manager")
MAX_BOOKING_URL = 500  # the column's length
API_KEY_PREFIX = "tsk_"


class InvalidInput(ValueError):
    """Bad input from an operator or a client, with a message fit to show them."""


# As long as any link the service writes (https://host/s/ and an 11-character token).
_LONGEST_LINK = "https://callbacks.example-medical-group.com/s/" + "x" * 11
SMS_TEMPLATES = (
    "text_back",
    "second_attempt",
    "final_message",
    "opt_out_confirmation",
    "opt_in_confirmation",
    "help_reply",
)


def check_name_fits_texts(name: str, number: str, base_url: str | None = None) -> None:
    """Every text names the practice and must stay within two segments: a name too long
    (or with characters that force UCS-2) is refused here, not discovered at send time.
    Checked with the service's own links (`base_url`, PUBLIC_BASE_URL) where they are
    longer than the allowance for any host."""
    link = _LONGEST_LINK
    if base_url is not None:
        link = max(link, f"{base_url.rstrip('/')}/s/" + "x" * 11, key=len)
    for template in SMS_TEMPLATES:
        try:
            render_sms(
                template,
                practice=name,
                practice_number=display_number(number),
                link=link,
                first_text=True,
            )
        except TemplateTooLong:
            raise InvalidInput(
                f"the practice name {name!r} makes the {template.replace('_', ' ')} text longer "
                "than two SMS segments; use a shorter name (plain letters, no accents, keep a "
                "text at two segments)"
            ) from None


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a malformed [IPv6] part
        return None


def add_practice(
    session: Session,
    *,
    name: str,
    number: str,
    timezone: str,
    booking_url: str | None,
    now: datetime,
    base_url: str | None = None,
) -> Practice:
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        # A control character would also break the greeting's TwiML: every call fails.
        raise InvalidInput("the practice name must be 1 to 200 printable characters")
    e164 = normalise_phone(number)
    if e164 is None:
        raise InvalidInput(f"{number!r} is not a valid phone number (use E.164, e.g. +14155550123)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"{timezone!r} is not a known time zone (e.g. America/Chicago)"
        ) from None
    if booking_url is not None and (
        not booking_url.startswith(("https://", "http://"))
        or any(ch.isspace() or not ch.isprintable() for ch in booking_url)
        or not _host_of(booking_url)
        or len(booking_url) > MAX_BOOKING_URL
    ):
        raise InvalidInput(
            "the booking URL must start with https:// (or http://) and a host name, hold no "
            f"spaces or control characters, and be at most {MAX_BOOKING_URL} characters"
        )
    if session.scalar(select(Practice.id).where(Practice.twilio_number == e164)) is not None:
        raise InvalidInput(f"another practice already uses {e164}")
    check_name_fits_texts(name, e164, base_url)
    practice = Practice(
        name=name,
        twilio_number=e164,
        timezone=timezone,
        booking_url=booking_url,
        business_hours=dump_weekly_hours(DEFAULT_HOURS),
        observe_us_holidays=True,
        created_at=now,
    )
    session.add(practice)
    session.flush()
    # Imported here: followups imports this module (calendar_for) at load time.
    from telephony_service.services import followups

    # The practice's own copy, so a later change to the defaults never rewrites what a
    # manager has already seen and perhaps tuned.
    followups.store_default_cadences(session, practice.id, now)
    session.flush()
    return practice


def set_business_hours(session: Session, practice_id: int, changes: list[str]) -> Practice:
    """Change some weekdays' hours, e.g. ["mon=08:00-12:00,13:00-17:00", "sat=closed"]."""
    practice = _practice(session, practice_id)
    week = dict(practice.business_hours)
    for change in changes:
        day, sep, spec = change.partition("=")
        day = day.strip().lower()[:3]
        if not sep or day not in DAY_KEYS:
            raise InvalidInput(f"{change!r}: write it as mon=08:00-17:00 or sat=closed")
        intervals: list[list[str]] = []
        if spec.strip().lower() != "closed":
            for part in spec.split(","):
                opens, dash, closes = part.strip().partition("-")
                if not dash:
                    raise InvalidInput(f"{change!r}: each interval is HH:MM-HH:MM")
                intervals.append([opens.strip(), closes.strip()])
        week[day] = intervals
    try:
        parse_weekly_hours(week)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not any(week.values()):
        raise InvalidInput("a practice needs some business hours: deadlines count them")
    practice.business_hours = week
    session.flush()
    _forget_practices(session)
    return practice


# --- texting window --------------------------------------------------------------------

# A day's texting window as ("09:00", "19:00") in the patient's local time; None: no texts.
TextingWindow = tuple[str, str] | None
TextingHours = dict[str, TextingWindow]

# The compliance gate's legal floor (see domain.compliance): the strictest common state
# window. The gate applies it whatever is stored; it is checked here too so that a manager
# who types a wider window hears that it would not hold, rather than believing it does.
LEGAL_FLOOR: tuple[str, str] = ("08:00", "20:00")
OFF = "off"
MAX_DAILY_SEND_CAP = 100_000

_HHMM = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$")


def parse_texting_window(text: str, label: str) -> TextingWindow:
    """A window as a manager types it: "09:00-19:00", or "off" for no texts that day.

    `label` names the field in the error message ("mon", "--weekdays", "Monday").
    """
    spec = text.strip()
    if spec.lower() == OFF:
        return None
    start, dash, end = spec.partition("-")
    if not dash:
        raise InvalidInput(f"{label}: {text!r} is not a window; write HH:MM-HH:MM or {OFF}")
    return check_texting_window((start.strip(), end.strip()), label)


def check_texting_window(window: TextingWindow, label: str) -> TextingWindow:
    if window is None:
        return None
    start, end = window
    for value in (start, end):
        if not _HHMM.match(value):
            raise InvalidInput(f"{label}: {value!r} is not a time; write HH:MM, e.g. 09:00")
    if start >= end:  # zero-padded HH:MM compares like the times it stands for
        raise InvalidInput(f"{label}: the window must start before it ends ({start}-{end})")
    floor_start, floor_end = LEGAL_FLOOR
    if start < floor_start or end > floor_end:
        raise InvalidInput(
            f"{label}: {start}-{end} reaches outside the legal floor of "
            f"{floor_start}-{floor_end} (the patient's local time), which always applies; "
            "a practice's texting hours can only narrow it"
        )
    return (start, end)


def check_texting_hours(hours: Mapping[str, TextingWindow]) -> TextingHours:
    """Validate some weekdays' windows (keys mon … sun); raises InvalidInput."""
    checked: TextingHours = {}
    for day, window in hours.items():
        if day not in DAY_KEYS:
            raise InvalidInput(f"{day!r} is not a weekday; use one of {', '.join(DAY_KEYS)}")
        checked[day] = check_texting_window(window, day)
    return checked


def texting_hours_of(practice: Practice) -> TextingHours | None:
    """The stored window per weekday; None when the legal floor alone applies."""
    stored = practice.texting_hours
    if stored is None:
        return None
    # A weekday missing from the stored mapping is a day without texts, as the gate reads it.
    return {
        day: None if stored.get(day) is None else (stored[day][0], stored[day][1])
        for day in DAY_KEYS
    }


@dataclass(frozen=True)
class PracticePolicy:
    """What a send needs of its practice: read for every text, so cached briefly (a
    manager's quiet hours made in another process take effect within the cache's time)."""

    id: int
    timezone: str
    texting_hours: dict[str, Any] | None
    daily_send_cap: int


_policies: TtlCache[int, PracticePolicy] = TtlCache(ttl=30.0)


def texting_policy(session: Session, practice_id: int) -> PracticePolicy:
    def load() -> PracticePolicy:
        row = _stored(session, practice_id, "id", "timezone", "texting_hours", "daily_send_cap")
        if row is None:
            raise InvalidInput(f"no practice with id {practice_id}")
        return PracticePolicy(*row)

    return _policies.get(practice_id, load)


def set_texting_hours(
    session: Session, practice_id: int, hours: Mapping[str, TextingWindow] | None
) -> Practice:
    """Change some weekdays' texting windows; None goes back to the legal floor alone.

    Weekdays left out keep their window (the legal floor's hours if none was set yet).
    """
    practice = _practice(session, practice_id)
    _forget_practices(session)
    if hours is None:
        # SQL NULL, not the JSON null that assigning None would store.
        session.execute(
            update(Practice).where(Practice.id == practice.id).values(texting_hours=null()),
            execution_options={"synchronize_session": False},
        )
        session.expire(practice, ["texting_hours"])
        return practice
    changes = check_texting_hours(hours)
    week: TextingHours = texting_hours_of(practice) or dict.fromkeys(DAY_KEYS, LEGAL_FLOOR)
    week.update(changes)
    # All seven days, always: the gate reads a missing day as a day without texts.
    stored: dict[str, list[str] | None] = {}
    for day in DAY_KEYS:
        window = week[day]
        stored[day] = None if window is None else list(window)
    practice.texting_hours = stored
    session.flush()
    return practice


def set_daily_send_cap(session: Session, practice_id: int, cap: int) -> Practice:
    practice = _practice(session, practice_id)
    if not 1 <= cap <= MAX_DAILY_SEND_CAP:
        raise InvalidInput(f"the daily send cap must be 1 to {MAX_DAILY_SEND_CAP:,}, not {cap}")
    practice.daily_send_cap = cap
    session.flush()
    _forget_practices(session)
    return practice


def add_closure(session: Session, practice_id: int, day: date, reason: str | None) -> None:
    _practice(session, practice_id)
    try:
        with session.begin_nested():
            session.add(PracticeClosure(practice_id=practice_id, day=day, reason=reason))
    except IntegrityError:
        raise InvalidInput(f"{day} is already a closure day") from None
    _forget_practices(session)


# Every missed call, reply and delivery receipt a worker applies starts with the practice
# that owns the called number. Its SELECT, the first statement of the job after a quiet
# moment, cost over a millisecond of the text-back's time (ORM load included); the row's
# values are kept instead, as the calendar and the texting policy are. (Those two are
# built from the database, not from this copy: a change made in another process reaches
# each of the three within the TTL.)
_by_number: TtlCache[str, dict[str, Any] | None] = TtlCache(ttl=30.0)


def practice_by_number(session: Session, number: str) -> Practice | None:
    """The practice that owns an E.164 number, as a row of `session` (its relationships
    load there as usual), read from the database about once per TTL in this process.

    A number no practice owns is not remembered: a practice added since answers at once.
    """
    values = _values_by_number(number, lambda: _practice_values(session, number))
    if values is None:
        return None
    held = session.identity_map.get(session.identity_key(Practice, values["id"]))
    if held is not None:
        return cast(Practice, held)
    # A row of this session's own, as if loaded: no query. Its JSON values are copies, so
    # a change made to them never reaches the cache or another session.
    return attach_inserted(session, Practice(**copy.deepcopy(values)))


def _values_by_number(
    number: str, read: Callable[[], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """The cached row of the practice that owns `number` (`read` on a miss)."""
    values = _by_number.get(number, read)
    if values is None:
        _by_number.discard(number)
    return values


def _practice_values(session: Session, number: str) -> dict[str, Any] | None:
    practices = table(Practice)
    row = session.execute(
        select(practices).where(practices.c.twilio_number == number)
    ).one_or_none()
    return None if row is None else row._asdict()


def _forget_practices(session: Session) -> None:
    """A practice changed in this process: what the caches hold of any practice goes, now
    and again once `session` commits. Until then another thread still reads the old row
    and could cache it anew, for a whole TTL after the change took effect."""
    _clear_practice_caches()
    if not session.info.get(_FORGET_AT_COMMIT):
        session.info[_FORGET_AT_COMMIT] = True
        event.listen(session, "after_commit", _cleared_at_commit, once=True)


# session.info's key: the session clears the practice caches when it next commits.
_FORGET_AT_COMMIT = "telephony.forget_practices"


def _cleared_at_commit(session: Session) -> None:
    session.info.pop(_FORGET_AT_COMMIT, None)
    _clear_practice_caches()


def _stored(session: Session, practice_id: int, *names: str) -> tuple[Any, ...] | None:
    """Some of a practice's columns as the database has them, not as a row the session
    holds: that may be practice_by_number's copy, itself up to a TTL old. For what the
    policy and calendar caches build, so that each is at most one TTL behind."""
    practices = table(Practice)
    row = session.execute(
        select(*(practices.c[name] for name in names)).where(practices.c.id == practice_id)
    ).one_or_none()
    return None if row is None else tuple(row)


def _clear_practice_caches() -> None:
    _by_number.clear()
    _policies.clear()
    _calendars.clear()


def get_practice(session: Session, practice_id: int) -> Practice:
    """The practice, or InvalidInput naming the id."""
    return _practice(session, practice_id)


def _practice(session: Session, practice_id: int) -> Practice:
    practice = session.get(Practice, practice_id)
    if practice is None:
        raise InvalidInput(f"no practice with id {practice_id}")
    return practice


# Every task and cadence step counts in the calendar, and building it reads the closures
# (a query) and parses the week; a change made elsewhere arrives within the cache's time.
_calendars: TtlCache[int, BusinessCalendar] = TtlCache(ttl=30.0)


def calendar_for(practice: Practice) -> BusinessCalendar:
    """The practice's business calendar."""
    return _calendars.get(practice.id, lambda: _calendar(practice))


def _calendar(practice: Practice) -> BusinessCalendar:
    timezone, hours, observe = (
        practice.timezone,
        practice.business_hours,
        practice.observe_us_holidays,
    )
    session = object_session(practice)
    # A row changed and not yet flushed is taken as it is: the change is what its caller
    # means.
    if session is not None and practice not in session.dirty:
        row = _stored(session, practice.id, "timezone", "business_hours", "observe_us_holidays")
        if row is not None:
            timezone, hours, observe = row
    return BusinessCalendar(
        timezone=timezone,
        hours=parse_weekly_hours(hours),
        observe_us_holidays=observe,
        closures=frozenset(closure.day for closure in practice.closures),
    )


if TYPE_CHECKING:
    from argon2 import PasswordHasher


@functools.cache
def password_hasher() -> PasswordHasher:
    # Imported on first use: the worker, which never hashes a password, is spared argon2
    # and its C bindings.
    from argon2 import PasswordHasher

    return PasswordHasher()


def add_user(
    session: Session,
    *,
    practice_id: int,
    email: str,
    role: str,
    phone: str,
    password: str,
    now: datetime,
) -> User:
    _practice(session, practice_id)
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise InvalidInput(f"{email!r} is not an email address")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    e164 = normalise_phone(phone)
    if e164 is None:
        raise InvalidInput(f"{phone!r} is not a valid phone number")
    if len(password) < 10:
        raise InvalidInput("the password must be at least 10 characters")
    user = User(
        practice_id=practice_id,
        email=email,
        role=role,
        phone=e164,
        password_hash=password_hasher().hash(password),
        created_at=now,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise InvalidInput(f"a user with email {email} already exists") from None
    return user


def _key_hash(key: str) -> str:
    # API keys are long random secrets, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(key.encode()).hexdigest()


def add_api_key(session: Session, *, practice_id: int, now: datetime) -> str:
    _practice(session, practice_id)
    secret = secrets.token_urlsafe(32)
    key = API_KEY_PREFIX + secret
    session.add(
        ApiKey(
            practice_id=practice_id,
            key_hash=_key_hash(key),
            prefix=key[:12],
            created_at=now,
        )
    )
    session.flush()
    return key


def practice_for_api_key(session: Session, key: str) -> Practice | None:
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    row = session.execute(
        select(Practice)
        .join(ApiKey, ApiKey.practice_id == Practice.id)
        .where(ApiKey.key_hash == _key_hash(key), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()
    return row


@dataclass(frozen=True)
class PracticeCard:
    """What the voice webhook needs to answer a call, without a database round trip."""

    id: int
    name: str
    number: str


class PracticeDirectory:
    """Practices by their Twilio number, for the incoming-call webhook.

    It answers every call to every practice; a query per ring would be the slowest part
    of building a few hundred bytes of TwiML. The card comes from this process's copy of
    the practice's row (practice_by_number's), so a change reaches the webhook as it
    reaches the workers, and a session is opened only when that copy is missing.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def by_number(self, raw: str | None) -> PracticeCard | None:
        """The practice that owns a called number, as Twilio wrote it (usually E.164)."""
        number = normalise_phone(raw)  # cached: Twilio writes a number the same way each time
        if number is None:
            return None
        values = _values_by_number(number, lambda: self._read(number))
        if values is None:
            return None
        return PracticeCard(values["id"], values["name"], values["twilio_number"])

    def _read(self, number: str) -> dict[str, Any] | None:
        with self._session_factory() as session:
            return _practice_values(session, number)
