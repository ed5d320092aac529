"""Staff sign-in at /login, sign-out, throttling, rotation and the inactivity logout."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from telephony_service.cli import main
from telephony_service.models import AuditEntry, LoginFailure, User, UserSession
from telephony_service.services import auth as auth_service
from telephony_service.web import create_app, workspace
from telephony_service.web.auth import safe_next
from telephony_service.wiring import Services
from tests.helpers import HARBOR_NUMBER, make_practice
from tests.workspace_support import CSRF, PASSWORD, make_user, sign_in_as

EMAIL = "alice@clinic.example"
BAD_CREDENTIALS = "That email and password don&#39;t match."
PROTECTED = "/_test/protected"


def _add_protected_page(app: Flask) -> None:
    # /queue belongs to another part of the workspace; this stands in for any staff page.
    probe = Blueprint("probe", __name__)
    workspace.install(probe)

    @probe.get(PROTECTED)
    @workspace.login_required()
    def protected() -> str:
        user = workspace.current_user()
        assert user is not None
        return f"hello {user.email}"

    @probe.post(PROTECTED)
    @workspace.login_required()
    def protected_post() -> str:
        return "posted"

    app.register_blueprint(probe)


@pytest.fixture
def app(services: Services) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    _add_protected_page(app)
    return app


@pytest.fixture
def alice(services: Services) -> User:
    practice = make_practice(services)
    return make_user(services, practice.id, email=EMAIL)


def _csrf(client: FlaskClient) -> str:
    """What the sign-in form carries: GET /login puts a token in the cookie session."""
    client.get("/login")
    with client.session_transaction() as cookie:
        return str(cookie["csrf"])


def _sign_in(
    client: FlaskClient,
    email: str = EMAIL,
    password: str = PASSWORD,
    *,
    address: str = "198.51.100.7",
    **extra: str,
) -> TestResponse:
    form = {"csrf_token": _csrf(client), "email": email, "password": password, **extra}
    return client.post("/login", data=form, environ_base={"REMOTE_ADDR": address})


def _sid(client: FlaskClient) -> str | None:
    with client.session_transaction() as cookie:
        sid = cookie.get("sid")
        return None if sid is None else str(sid)


def _logout(client: FlaskClient) -> TestResponse:
    with client.session_transaction() as cookie:
        token = str(cookie["csrf"])
    return client.post("/logout", data={"csrf_token": token})


def _failures(services: Services) -> int:
    with services.session() as session:
        return int(session.scalar(select(func.count(LoginFailure.id))) or 0)


def _sessions(services: Services) -> list[UserSession]:
    with services.session() as session:
        return list(session.scalars(select(UserSession).order_by(UserSession.id)))


def _audit(services: Services) -> list[AuditEntry]:
    with services.session() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def _set_cookie_header(response: TestResponse) -> str:
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    return header


def test_it_signs_in_and_sends_the_browser_where_it_was_going(client, alice):
    response = _sign_in(client, next="/task/12?tab=timeline")

    assert response.status_code == 302
    assert response.headers["Location"] == "/task/12?tab=timeline"
    assert client.get(PROTECTED).get_data(as_text=True) == f"hello {EMAIL}"


def test_it_sets_an_httponly_lax_secure_cookie_when_the_public_url_is_https(client, alice):
    response = _sign_in(client)

    header = _set_cookie_header(response)
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" in header


def test_it_leaves_secure_off_the_cookie_when_the_public_url_is_plain_http(services, alice):
    plain = dataclasses.replace(
        services,
        settings=dataclasses.replace(services.settings, public_base_url="http://localhost:5000"),
    )
    client = create_app(services=plain).test_client()

    response = _sign_in(client)

    assert response.status_code == 302
    header = _set_cookie_header(response)
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" not in header


def test_it_lands_on_the_queue_without_a_local_next(client, alice):
    assert _sign_in(client).headers["Location"] == "/queue"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/queue",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "queue",
        "",
        None,
        "/login?next=/queue",
    ],
)
def test_it_never_redirects_off_the_site(target):
    assert safe_next(target) == "/queue"


def test_it_keeps_a_local_next_with_its_query():
    assert safe_next("/task/5?from=queue") == "/task/5?from=queue"


def test_it_answers_a_wrong_password_and_an_unknown_email_alike(client, alice, services):
    wrong = _sign_in(client, password="not the password")
    unknown = _sign_in(client, email="nobody@clinic.example")

    assert wrong.status_code == unknown.status_code == 401
    assert BAD_CREDENTIALS in wrong.get_data(as_text=True)
    assert BAD_CREDENTIALS in unknown.get_data(as_text=True)
    assert _sid(client) is None
    assert _failures(services) == 2
    assert _sessions(services) == []


def test_it_refuses_a_disabled_user_with_the_same_message(client, alice, services, clock):
    with services.session() as session:
        session.get_one(User, alice.id).disabled_at = clock()
        session.commit()

    response = _sign_in(client)

    assert response.status_code == 401
    assert BAD_CREDENTIALS in response.get_data(as_text=True)
    assert _sessions(services) == []


def test_it_signs_in_with_any_case_in_the_email(client, alice):
    assert _sign_in(client, email="  Alice@Clinic.EXAMPLE ").status_code == 302


def test_it_throttles_an_account_after_five_failures_without_checking_the_password(
    client, alice, services, clock, monkeypatch
):
    for _ in range(auth_service.MAX_ACCOUNT_FAILURES):
        assert _sign_in(client, password="guess again").status_code == 401
    clock.advance(minutes=3)

    def never(*_args: object) -> bool:
        raise AssertionError("the password was checked while throttled")

    with monkeypatch.context() as patched:
        patched.setattr(auth_service, "_password_matches", never)
        refused = _sign_in(client, address="203.0.113.9")  # the right password, elsewhere
    assert refused.status_code == 429
    assert "Too many sign-in attempts. Try again in 12 minutes." in refused.get_data(as_text=True)
    assert _failures(services) == auth_service.MAX_ACCOUNT_FAILURES  # refusals don't pile up

    clock.advance(minutes=11, seconds=30)
    assert "Try again in 1 minute." in _sign_in(client).get_data(as_text=True)
    clock.advance(seconds=30)
    assert _sign_in(client).status_code == 302


def test_it_checks_no_more_passwords_than_the_limit_when_guesses_arrive_at_once(
    app, alice, services, monkeypatch
):
    guesses = 16
    checked = 0
    refused = 0
    decided = threading.Condition()
    real_check = auth_service._password_matches

    def counted(user: User | None, password: str) -> bool:
        nonlocal checked
        # Held here until every other guess has been checked or refused, so each one that
        # got past the throttle is still in flight while the rest decide: the widest race.
        with decided:
            checked += 1
            decided.notify_all()
            decided.wait_for(lambda: checked + refused == guesses, timeout=20)
        return real_check(user, password)

    monkeypatch.setattr(auth_service, "_password_matches", counted)
    start = threading.Barrier(guesses)
    answers: list[int] = []

    def guess(n: int) -> None:
        nonlocal refused
        browser = app.test_client()
        with browser.session_transaction() as cookie:
            cookie["csrf"] = "test-csrf-token"
        form = {"csrf_token": "test-csrf-token", "email": EMAIL, "password": f"guess {n}"}
        start.wait(timeout=30)
        response = browser.post("/login", data=form, environ_base={"REMOTE_ADDR": f"10.0.0.{n}"})
        with decided:
            answers.append(response.status_code)
            if response.status_code == 429:
                refused += 1
                decided.notify_all()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == guesses
    assert sorted(answers) == [401] * checked + [429] * (guesses - checked)
    assert checked <= auth_service.MAX_ACCOUNT_FAILURES
    assert _failures(services) == checked  # a refusal leaves no failure behind


def test_it_words_the_throttle_the_same_for_an_account_nobody_has(client, alice):
    for _ in range(auth_service.MAX_ACCOUNT_FAILURES):
        _sign_in(client, email="ghost@clinic.example")
        _sign_in(client, password="guess again")

    ghost = _sign_in(client, email="ghost@clinic.example")
    real = _sign_in(client)

    assert ghost.status_code == real.status_code == 429
    message = "Too many sign-in attempts. Try again in 15 minutes."
    assert message in ghost.get_data(as_text=True)
    assert message in real.get_data(as_text=True)


def test_it_throttles_an_address_after_twenty_failures(client, alice, services, clock):
    # Twenty guesses at twenty different accounts, from one address.
    with services.session() as session:
        for n in range(auth_service.MAX_ADDRESS_FAILURES - 1):
            session.add(
                LoginFailure(
                    at=clock() - timedelta(minutes=10),
                    account=auth_service.account_key(f"guess{n}@clinic.example"),
                    address="198.51.100.7",
                )
            )
        session.commit()
    assert _sign_in(client, email="last-guess@clinic.example").status_code == 401

    refused = _sign_in(client)
    elsewhere = _sign_in(FlaskClient(client.application), address="203.0.113.9")

    assert refused.status_code == 429
    assert "Try again in 5 minutes." in refused.get_data(as_text=True)
    assert elsewhere.status_code == 302
    clock.advance(minutes=5)
    assert _sign_in(client).status_code == 302


def test_it_forgets_an_accounts_failures_once_its_owner_signs_in(client, alice, services):
    for _ in range(auth_service.MAX_ACCOUNT_FAILURES - 1):
        _sign_in(client, password="typo typo typo")
    assert _sign_in(client).status_code == 302
    _logout(client)
    for _ in range(auth_service.MAX_ACCOUNT_FAILURES - 1):
        _sign_in(client, password="typo typo typo")

    assert _sign_in(client).status_code == 302


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_it_refuses_a_sign_in_without_the_forms_csrf_token(client, alice, services, token):
    _csrf(client)
    form = {"email": EMAIL, "password": PASSWORD}
    if token is not None:
        form["csrf_token"] = token

    response = client.post("/login", data=form)

    assert response.status_code == 400
    assert _sessions(services) == []


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_it_refuses_a_sign_out_without_the_csrf_token(client, alice, services, token):
    _sign_in(client)

    response = client.post("/logout", data={} if token is None else {"csrf_token": token})

    assert response.status_code == 400
    assert client.get(PROTECTED).status_code == 200
    [row] = _sessions(services)
    assert row.ended_at is None


@pytest.mark.parametrize(
    "origin",
    [
        "https://callbacks.example.test",  # PUBLIC_BASE_URL, whatever Host the proxy sent
        "https://Callbacks.Example.Test:443",
        "http://localhost",  # the request's own host
        "null",
        None,
    ],
)
def test_it_accepts_a_post_from_our_own_origin(client, alice, services, origin):
    sign_in_as(client, services, alice)
    headers = {} if origin is None else {"Origin": origin}

    response = client.post(PROTECTED, data=CSRF, headers=headers)

    assert response.status_code == 200
    assert response.get_data(as_text=True) == "posted"


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://callbacks.example.test.evil.example",
        "http://callbacks.example.test",  # not our scheme
        "https://callbacks.example.test:8443",
        "http://localhost:8080",
    ],
)
def test_it_refuses_a_post_from_another_origin(client, alice, services, origin):
    sign_in_as(client, services, alice)

    response = client.post(PROTECTED, data=CSRF, headers={"Origin": origin})

    assert response.status_code == 400
    assert "another site" in response.get_data(as_text=True)


def test_it_rotates_the_session_at_sign_in(client, alice, services):
    _csrf(client)
    with client.session_transaction() as cookie:
        before = dict(cookie)
    copy = FlaskClient(client.application)  # someone holding the pre-sign-in cookie
    with copy.session_transaction() as cookie:
        cookie.update(before)

    _sign_in(client)

    with client.session_transaction() as cookie:
        after = dict(cookie)
    assert after["sid"] and after.get("sid") != before.get("sid")
    assert after["csrf"] != before["csrf"]
    assert copy.get(PROTECTED).status_code == 302


def test_it_ends_the_previous_session_when_signing_in_again(client, alice, services):
    sign_in_as(client, services, alice)
    old_sid = _sid(client)
    assert old_sid is not None

    _sign_in(client)

    new_sid = _sid(client)
    assert new_sid is not None and new_sid != old_sid
    with client.session_transaction() as cookie:
        cookie["sid"] = old_sid
    assert client.get(PROTECTED).status_code == 302
    old, new = _sessions(services)
    assert old.end_reason == "rotated"
    assert new.ended_at is None


def test_it_sends_a_signed_out_browser_to_the_sign_in_page(client):
    response = client.get(PROTECTED + "?tab=1")

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["next"] == [PROTECTED + "?tab=1"]


def test_it_signs_out_after_fifteen_idle_minutes(client, alice, services, clock):
    _sign_in(client)
    clock.advance(minutes=14, seconds=59)
    assert client.get(PROTECTED).status_code == 200
    clock.advance(minutes=15)

    response = client.get(PROTECTED)

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?") and "ended=idle" in location
    [row] = _sessions(services)
    assert row.end_reason == "idle"
    assert row.ended_at == clock()
    page = client.get(location).get_data(as_text=True)
    assert "You were signed out after 15 minutes without activity." in page


def test_it_does_not_count_a_background_request_as_activity(client, alice, services, clock):
    _sign_in(client)
    clock.advance(minutes=10)
    background = client.get(PROTECTED, headers={"X-Background": "1"})
    assert background.status_code == 200
    clock.advance(minutes=5)

    assert client.get(PROTECTED, headers={"X-Background": "1"}).status_code == 401
    [row] = _sessions(services)
    assert row.end_reason == "idle"


def test_it_counts_a_page_request_as_activity(client, alice, clock):
    _sign_in(client)
    clock.advance(minutes=10)
    assert client.get(PROTECTED).status_code == 200
    clock.advance(minutes=10)

    assert client.get(PROTECTED).status_code == 200


def test_it_tells_the_countdown_how_long_is_left_without_extending_it(client, alice, clock):
    _sign_in(client)
    clock.advance(minutes=4)

    status = client.get("/session/status", headers={"X-Background": "1"})
    clock.advance(minutes=11)

    assert status.status_code == 200
    assert status.get_json()["remaining_seconds"] == 11 * 60
    assert client.get("/session/status", headers={"X-Background": "1"}).status_code == 401


def test_it_signs_out_everywhere_the_cookie_was_copied(client, alice, services):
    _sign_in(client)
    old_sid = _sid(client)

    response = _logout(client)

    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert _sid(client) is None
    assert "You are signed out." in client.get("/login").get_data(as_text=True)
    with client.session_transaction() as cookie:
        cookie["sid"] = old_sid
    assert client.get(PROTECTED).status_code == 302
    [row] = _sessions(services)
    assert row.end_reason == "logout"


def test_it_sends_a_signed_in_browser_on_from_the_sign_in_page(client, alice):
    _sign_in(client)

    response = client.get("/login?next=/task/3")

    assert response.status_code == 302
    assert response.headers["Location"] == "/task/3"


def test_it_audits_sign_in_and_sign_out_without_the_email(client, alice, services, clock):
    _sign_in(client)
    _sign_in(FlaskClient(client.application), password="wrong password!")
    _logout(client)
    _sign_in(client)
    clock.advance(minutes=20)
    client.get(PROTECTED)

    entries = [
        (entry.action, entry.user_id, (entry.data or {}).get("reason"))
        for entry in _audit(services)
    ]
    assert entries == [
        ("signed_in", alice.id, None),
        ("signed_out", alice.id, "logout"),
        ("signed_in", alice.id, None),
        ("signed_out", alice.id, "idle"),
    ]
    assert {entry.practice_id for entry in _audit(services)} == {alice.practice_id}
    assert not any(EMAIL in str(entry.data) for entry in _audit(services))


def test_it_rehashes_a_password_stored_with_weaker_settings(client, alice, services):
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with services.session() as session:
        session.get_one(User, alice.id).password_hash = weak
        session.commit()

    assert _sign_in(client).status_code == 302

    with services.session() as session:
        stored = session.get_one(User, alice.id).password_hash
    assert stored != weak
    assert not PasswordHasher().check_needs_rehash(stored)
    assert PasswordHasher().verify(stored, PASSWORD)


def test_it_keeps_the_users_of_other_practices_apart(client, alice, services):
    harbor = make_practice(services, name="Harbor Pediatrics", number=HARBOR_NUMBER)
    make_user(services, harbor.id, email="hana@harbor.example")

    _sign_in(client, email="hana@harbor.example")

    assert client.get(PROTECTED).get_data(as_text=True) == "hello hana@harbor.example"
    assert [entry.practice_id for entry in _audit(services)] == [harbor.id]


def test_it_signs_in_a_user_added_on_the_command_line_with_a_name(client, services, tmp_path):
    practice = make_practice(services)
    env = {
        "DATABASE_URL": services.settings.database_url,
        "REDIS_URL": services.settings.redis_url or "",
        "SECRET_KEY": services.settings.secret_key,
        "TELEPHONY_INSTANCE_PATH": str(tmp_path),
    }
    args = ["user", "add", "--practice", str(practice.id), "--email", "dana@riverside.example"]
    args += ["--role", "agent", "--phone", "+16175550123", "--name", " Dana "]

    result = CliRunner().invoke(main, args, env=env, input="long enough pw\n")

    assert result.exit_code == 0, result.output
    with services.session() as session:
        assert session.scalars(select(User.name)).one() == "Dana"
    assert _sign_in(client, "dana@riverside.example", "long enough pw").status_code == 302
