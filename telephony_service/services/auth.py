"""Staff sign-in sessions: one row per signed-in browser, ended by sign-out or inactivity.

The browser holds a random token (inside Flask's signed cookie); only its SHA-256 is
stored, so a leaked database cannot be replayed as a session. Signing in always makes a
new row and token (session rotation: a token planted before sign-in is worthless after).

Sign-in attempts are throttled from the database (LoginFailure rows), so the limits hold
across every web process and survive a restart. Each attempt's row is committed before the
limits are counted, so guesses sent in parallel see each other (see sign_in).
"""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from telephony_service.models import LoginFailure, User, UserSession
from telephony_service.services import audit
from telephony_service.services.practices import password_hasher

# last_seen_at is written at most this often, not on every request: a queue page polling
# every few seconds would otherwise write a row each time.
TOUCH_EVERY = timedelta(seconds=30)

# Guessing one account's password stops after a handful of tries; one address may mistype
# a little across a shared front desk (many staff behind one office IP) before it stops.
MAX_ACCOUNT_FAILURES = 5
MAX_ADDRESS_FAILURES = 20
FAILURE_WINDOW = timedelta(minutes=15)

# LoginFailure.address is 64 characters: enough for any IPv6 text form.
_ADDRESS_LENGTH = 64


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def account_key(email: str) -> str:
    """How failures are counted per account: also for emails that belong to nobody, and
    without keeping the typed email (which may be someone's password typed in the wrong box)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def start_session(session: Session, user: User, *, now: datetime) -> str:
    """A new session for a user who just proved who they are; returns the browser's token."""
    token, _row = _start(session, user, now=now)
    return token


def _start(session: Session, user: User, *, now: datetime) -> tuple[str, UserSession]:
    token = secrets.token_urlsafe(32)
    row = UserSession(
        token_hash=_token_hash(token), user_id=user.id, created_at=now, last_seen_at=now
    )
    session.add(row)
    session.flush()
    return token, row


@dataclass(frozen=True)
class Resumed:
    user: User
    session_id: int
    # When the session ends if nothing else happens: the page counts down to it.
    expires_at: datetime


class SessionEnded(Exception):
    """The token is unknown, signed out, or idle too long (reason: unknown | logout | idle)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resume_session(
    session: Session, token: str, *, now: datetime, idle: timedelta, touch: bool = True
) -> Resumed:
    """The user behind a browser's token, if the session is still alive.

    `touch=False` reads without counting as activity (a background poll must not keep an
    unattended screen signed in forever).
    """
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _token_hash(token)))
    if row is None:
        raise SessionEnded("unknown")
    if row.ended_at is not None:
        raise SessionEnded(row.end_reason or "logout")
    if now - row.last_seen_at >= idle:
        _end(session, row, now=now, reason="idle")
        session.commit()
        raise SessionEnded("idle")
    user = row.user
    if user.disabled_at is not None:
        raise SessionEnded("unknown")
    if touch and now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.commit()
    return Resumed(user=user, session_id=row.id, expires_at=row.last_seen_at + idle)


def _end(session: Session, row: UserSession, *, now: datetime, reason: str) -> None:
    row.ended_at = now
    row.end_reason = reason
    audit.record(
        session,
        practice_id=row.user.practice_id,
        user_id=row.user_id,
        action="signed_out",
        now=now,
        data={"session_id": row.id, "reason": reason},
    )


class SignInRefused(Exception):
    """Base of the reasons a sign-in fails; none of them says whether the account exists."""


class BadCredentials(SignInRefused):
    """Unknown email, wrong password or disabled user: deliberately indistinguishable."""


class Throttled(SignInRefused):
    """Too many recent failures for the account or the address; the password was not checked."""

    def __init__(self, retry_at: datetime, now: datetime) -> None:
        super().__init__("throttled")
        self.retry_at = retry_at
        # Rounded up: "try again in 0 minutes" would be a lie for the next 59 seconds.
        self.minutes = max(1, math.ceil((retry_at - now).total_seconds() / 60))


@dataclass(frozen=True)
class SignedIn:
    user: User
    # The new session's token, for the browser's cookie.
    token: str


def sign_in(
    session: Session,
    *,
    email: str,
    password: str,
    address: str,
    now: datetime,
    previous_token: str | None = None,
) -> SignedIn:
    """Check an email and password and start a new session; commits.

    Raises Throttled (before any password check) or BadCredentials. `previous_token` is
    the session the browser carried before, ended here so it cannot outlive the sign-in.
    """
    account = account_key(email)
    address = address[:_ADDRESS_LENGTH]
    # The attempt is recorded (as a failure, until it succeeds) and committed before the
    # limits are counted. Counted first and recorded after the slow password check, guesses
    # sent in parallel all passed the count before any of them was recorded; this way each
    # one sees every attempt committed before its own, so at most the limit get through.
    attempt = LoginFailure(at=now, account=account, address=address)
    session.add(attempt)
    session.commit()
    retry_at = throttled_until(
        session, account=account, address=address, now=now, excluding=attempt.id
    )
    if retry_at is not None:
        # A refused attempt checked nothing: it must not push the retry time further out.
        session.execute(delete(LoginFailure).where(LoginFailure.id == attempt.id))
        session.commit()
        raise Throttled(retry_at, now)

    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    # Ends the read so no pooled connection (nor SQLite's lock) is held through the hash.
    session.commit()
    if not _password_matches(user, password) or user is None or user.disabled_at is not None:
        raise BadCredentials()  # the attempt's row stays: it is the failure

    if password_hasher().check_needs_rehash(user.password_hash):
        user.password_hash = password_hasher().hash(password)
    # The owner got in: their own earlier typos, and this attempt, must not count towards
    # locking them out.
    session.execute(delete(LoginFailure).where(LoginFailure.account == account))
    if previous_token:
        previous = session.scalar(
            select(UserSession).where(
                UserSession.token_hash == _token_hash(previous_token),
                UserSession.ended_at.is_(None),
            )
        )
        if previous is not None:
            _end(session, previous, now=now, reason="rotated")
    token, row = _start(session, user, now=now)
    audit.record(
        session,
        practice_id=user.practice_id,
        user_id=user.id,
        action="signed_in",
        now=now,
        data={"session_id": row.id},
    )
    session.commit()
    return SignedIn(user=user, token=token)


def sign_out(session: Session, token: str, *, now: datetime) -> None:
    """End the browser's session everywhere (a copied cookie stops working too); commits."""
    row = session.scalar(
        select(UserSession).where(
            UserSession.token_hash == _token_hash(token), UserSession.ended_at.is_(None)
        )
    )
    if row is None:
        return
    _end(session, row, now=now, reason="logout")
    session.commit()


def throttled_until(
    session: Session, *, account: str, address: str, now: datetime, excluding: int | None = None
) -> datetime | None:
    """When sign-in is allowed again for this account and address; None if it is now.

    `excluding` is the attempt being decided: every other recorded attempt counts, those
    still in flight too.
    """
    since = now - FAILURE_WINDOW
    limits = (
        (LoginFailure.account == account, MAX_ACCOUNT_FAILURES),
        (LoginFailure.address == address, MAX_ADDRESS_FAILURES),
    )
    others = [] if excluding is None else [LoginFailure.id != excluding]
    retry_at: datetime | None = None
    for matches, limit in limits:
        recent = list(
            session.scalars(
                select(LoginFailure.at)
                .where(matches, LoginFailure.at > since, *others)
                .order_by(LoginFailure.at.desc())
                .limit(limit)
            )
        )
        if len(recent) >= limit:
            # Allowed again once the oldest of the last `limit` failures leaves the window.
            until = recent[-1] + FAILURE_WINDOW
            retry_at = until if retry_at is None else max(retry_at, until)
    return retry_at


def _password_matches(user: User | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    # An unknown email is checked against a hash of nothing in particular, so it takes as
    # long as a known one and the response time does not reveal who has an account.
    stored = user.password_hash if user is not None else _dummy_hash()
    try:
        return bool(password_hasher().verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    # Made with the same hasher (same cost parameters) as real passwords.
    hashed: str = password_hasher().hash(secrets.token_urlsafe(16))
    return hashed
