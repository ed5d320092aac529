"""Staff sign-in sessions: one row per signed-in browser, ended by sign-out or inactivity.

The browser holds a random token (inside Flask's signed cookie); only its SHA-256 is
stored, so a leaked database cannot be replayed as a session. Signing in always makes a
new row and token (session rotation: a token planted before sign-in is worthless after).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from telephony_service.models import User, UserSession

# last_seen_at is written at most this often, not on every request: a queue page polling
# every few seconds would otherwise write a row each time.
TOUCH_EVERY = timedelta(seconds=30)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: User, *, now: datetime) -> str:
    """A new session for a user who just proved who they are; returns the browser's token."""
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            token_hash=_token_hash(token), user_id=user.id, created_at=now, last_seen_at=now
        )
    )
    session.flush()
    return token


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
        row.ended_at = now
        row.end_reason = "idle"
        session.commit()
        raise SessionEnded("idle")
    user = row.user
    if user.disabled_at is not None:
        raise SessionEnded("unknown")
    if touch and now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        session.commit()
    return Resumed(user=user, session_id=row.id, expires_at=row.last_seen_at + idle)


def end_session(session: Session, token: str, *, now: datetime, reason: str = "logout") -> None:
    session.execute(
        update(UserSession)
        .where(UserSession.token_hash == _token_hash(token), UserSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )
    session.commit()
