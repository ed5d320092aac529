"""First-response deadlines per category."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from telephony_service.domain.calendar import BusinessCalendar
from telephony_service.domain.categories import Category

_BUSINESS_MINUTES: dict[Category, int] = {
    Category.NEW_PATIENT_REQUEST: 15,
    Category.WEB_FORM: 30,
    Category.MISSED_CALL: 60,
    Category.VOICEMAIL: 60,
    Category.SMS_INQUIRY: 60,
    Category.CANCELLATION: 60,
    Category.INCOMPLETE_SCHEDULING: 120,
}

_REFERRAL_LAST_HOUR = timedelta(minutes=60)
_INSURANCE_CUTOFF = time(15, 0)
_INSURANCE_NEXT_DAY = time(10, 0)

SLA_DESCRIPTIONS: dict[Category, str] = {
    Category.NEW_PATIENT_REQUEST: "15 business minutes",
    Category.WEB_FORM: "30 business minutes",
    Category.MISSED_CALL: "1 business hour",
    Category.VOICEMAIL: "1 business hour",
    Category.SMS_INQUIRY: "1 business hour",
    Category.CANCELLATION: "1 business hour",
    Category.INCOMPLETE_SCHEDULING: "2 business hours",
    Category.REFERRAL: "same business day (next business day if received in the last hour)",
    Category.INSURANCE_DOCS: "same business day if received before 3 pm, else 10 am the next",
    Category.POST_VISIT: "within 2 business days",
}


def _referral_due(received_at: datetime, calendar: BusinessCalendar) -> datetime:
    intervals = calendar.intervals_on(calendar.to_local(received_at).date())
    if intervals:
        close = intervals[-1][1]
        if received_at < close - _REFERRAL_LAST_HOUR:
            return close
    return calendar.business_day_close_after(received_at, 1)


def _insurance_docs_due(received_at: datetime, calendar: BusinessCalendar) -> datetime:
    local = calendar.to_local(received_at)
    intervals = calendar.intervals_on(local.date())
    # After the day's close the same-day deadline has passed, so even a 2 pm arrival on a
    # short day rolls over to the next morning.
    if intervals and local.time() < _INSURANCE_CUTOFF and received_at < intervals[-1][1]:
        return intervals[-1][1]
    morning = calendar.next_business_day_at(received_at, _INSURANCE_NEXT_DAY)
    return calendar.next_open(morning)


def first_response_due(
    category: Category, received_at: datetime, calendar: BusinessCalendar
) -> datetime:
    minutes = _BUSINESS_MINUTES.get(category)
    if minutes is not None:
        return calendar.add_business_minutes(received_at, minutes)
    if category is Category.REFERRAL:
        return _referral_due(received_at, calendar)
    if category is Category.INSURANCE_DOCS:
        return _insurance_docs_due(received_at, calendar)
    if category is Category.POST_VISIT:
        return calendar.business_day_close_after(received_at, 2)
    raise ValueError(f"no first-response rule for category {category!r}")
