"""Staff users and signed-in browsers for the workspace tests."""

from __future__ import annotations

from flask.testing import FlaskClient

from telephony_service.models import User
from telephony_service.services.auth import start_session
from telephony_service.services.practices import add_user
from telephony_service.wiring import Services

PASSWORD = "correct horse battery"


def make_user(
    services: Services,
    practice_id: int,
    *,
    email: str = "alice@clinic.example",
    role: str = "agent",
    phone: str = "+14155550199",
    name: str | None = "Alice",
    password: str = PASSWORD,
) -> User:
    with services.session() as session:
        user = add_user(
            session,
            practice_id=practice_id,
            email=email,
            role=role,
            phone=phone,
            password=password,
            now=services.clock(),
        )
        user.name = name
        session.commit()
        session.refresh(user)
        session.expunge(user)
        return user


def sign_in_as(client: FlaskClient, services: Services, user: User) -> None:
    """A browser with a live session for `user`, without going through /login."""
    with services.session() as session:
        row = session.get(User, user.id)
        assert row is not None
        token = start_session(session, row, now=services.clock())
        session.commit()
    with client.session_transaction() as cookie:
        cookie["sid"] = token
        cookie["csrf"] = "test-csrf-token"


CSRF = {"csrf_token": "test-csrf-token"}
