"""Kinds of callback work and their relative urgency."""

from __future__ import annotations

import enum


class Category(enum.StrEnum):
    NEW_PATIENT_REQUEST = "new_patient_request"
    WEB_FORM = "web_form"
    MISSED_CALL = "missed_call"
    VOICEMAIL = "voicemail"
    # A text from a patient with no open task: answered like a missed call.
    SMS_INQUIRY = "sms_inquiry"
    CANCELLATION = "cancellation"
    REFERRAL = "referral"
    INSURANCE_DOCS = "insurance_docs"
    INCOMPLETE_SCHEDULING = "incomplete_scheduling"
    POST_VISIT = "post_visit"


# Missed calls and voicemails come from telephony webhooks, never from API clients.
INQUIRY_CATEGORIES: frozenset[Category] = frozenset(
    {
        Category.NEW_PATIENT_REQUEST,
        Category.INCOMPLETE_SCHEDULING,
        Category.REFERRAL,
        Category.CANCELLATION,
        Category.POST_VISIT,
        Category.INSURANCE_DOCS,
        Category.WEB_FORM,
    }
)

BASE_PRIORITY: dict[Category, int] = {
    Category.NEW_PATIENT_REQUEST: 50,
    Category.VOICEMAIL: 40,
    Category.MISSED_CALL: 35,
    Category.SMS_INQUIRY: 35,
    Category.CANCELLATION: 35,
    Category.WEB_FORM: 30,
    Category.INCOMPLETE_SCHEDULING: 25,
    Category.REFERRAL: 20,
    Category.INSURANCE_DOCS: 10,
    Category.POST_VISIT: 10,
}

LABELS: dict[Category, str] = {
    Category.NEW_PATIENT_REQUEST: "New patient request",
    Category.WEB_FORM: "Web form",
    Category.MISSED_CALL: "Missed call",
    Category.VOICEMAIL: "Voicemail",
    Category.SMS_INQUIRY: "Text message",
    Category.CANCELLATION: "Cancellation",
    Category.REFERRAL: "Referral",
    Category.INSURANCE_DOCS: "Insurance documents",
    Category.INCOMPLETE_SCHEDULING: "Incomplete scheduling",
    Category.POST_VISIT: "Post-visit follow-up",
}


def label(value: str) -> str:
    """A category's name for people; an unknown stored value is shown readably, not hidden."""
    try:
        return LABELS[Category(value)]
    except ValueError:
        return value.replace("_", " ").capitalize()
