"""What the service asks of a telephony provider, and how a failed request is described."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from telephony_service.domain.phones import mask_phone

# Codes after which the same request can never succeed: resending would only annoy the
# carrier (and, for an opted-out patient, break the law).
PERMANENT_CODES = frozenset(
    {
        21610,  # the recipient replied STOP
        21211,  # invalid To number
        21614,  # To is not a mobile number
        21408,  # permission to send to that region is not enabled
        21608,  # trial account, unverified number
        21606,  # From is not a number this account may send from
        21212,  # invalid From number
    }
)
TOO_MANY_REQUESTS_CODE = 20429
# Refusals of a request that the same request gets past later: too many requests, the
# sending number's queue full, credentials refused while they are being rotated. A
# refusal not named here or above is taken as permanent.
RETRYABLE_CODES = frozenset(
    {
        TOO_MANY_REQUESTS_CODE,
        21611,  # the From number's queue of messages is full
        20003,  # authentication failed (a rotation of the auth token in progress)
    }
)

_DIGIT_RUN = re.compile(r"\+?\d{7,}")


class GatewayError(Exception):
    """A request the provider refused, or whose answer we never got.

    `permanent` tells the caller not to try again. `outcome_unknown` means the request may
    have been accepted (the connection failed after it was sent), so the caller must look it
    up (`list_messages`) before sending again, or the patient may get the text twice.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: int | None = None,
        status: int | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.status = status
        self.outcome_unknown = outcome_unknown

    def __repr__(self) -> str:
        return (
            f"GatewayError({self.message!r}, permanent={self.permanent}, code={self.code}, "
            f"status={self.status}, outcome_unknown={self.outcome_unknown})"
        )


def is_permanent(code: int | None, status: int | None) -> bool:
    if code in PERMANENT_CODES:
        return True
    if code in RETRYABLE_CODES or status == 429:
        return False
    # Any other refusal of the request itself will be refused again.
    return status is not None and 400 <= status < 500


def redact(text: str) -> str:
    """Mask anything that looks like a phone number.

    Provider error messages quote the number ("The 'To' number +1... is not valid"), and
    they end up in logs and in the failed-job registry.
    """
    return _DIGIT_RUN.sub(lambda match: mask_phone(match.group()), text)


@dataclass(frozen=True)
class OutboundSms:
    to: str
    from_: str
    body: str
    status_callback: str | None


@dataclass(frozen=True)
class SentMessage:
    sid: str
    status: str


@dataclass(frozen=True)
class OutboundCall:
    to: str
    from_: str
    url: str
    status_callback: str | None
    status_callback_events: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")
    timeout_seconds: int = 25
    machine_detection: str | None = None


@dataclass(frozen=True)
class PlacedCall:
    sid: str
    status: str


@dataclass(frozen=True)
class MessageRecord:
    sid: str
    to: str
    from_: str
    body: str
    status: str
    date_created: datetime | None


class TelephonyGateway(Protocol):
    def send_sms(self, sms: OutboundSms) -> SentMessage: ...

    def place_call(self, call: OutboundCall) -> PlacedCall: ...

    def list_messages(self, *, to: str, from_: str, sent_after: datetime) -> list[MessageRecord]:
        """Messages from `from_` to `to` created at or after `sent_after` (to the second).

        Used to settle a send whose outcome is unknown. Callers should allow for clock skew
        between this machine and the provider by passing a slightly earlier time.
        """
        ...
