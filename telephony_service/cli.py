"""The `telephony` command."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from dotenv import load_dotenv
from sqlalchemy.exc import SQLAlchemyError

from telephony_service.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    import requests


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _session(settings: Settings):  # type: ignore[no-untyped-def]
    from telephony_service.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url))()


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


F = TypeVar("F", bound=Callable[..., Any])


class _Commands(click.Group):
    """A database that is down, or not migrated yet, ends a command with a message, not a
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as exc:
            raise click.ClickException(_database_error(exc)) from None


def _database_error(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    hint = ""
    if type(cause).__name__ == "UndefinedTable" or "no such table" in lines[0]:
        hint = " (run `telephony db upgrade` first)"
    return f"database error: {type(cause).__name__}: {lines[0]}{hint}"


@click.group(cls=_Commands)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def main(verbose: bool) -> None:
    """Patient callback service."""
    load_dotenv(".env")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # RQ logs every job at INFO, which drowns the interesting lines in development.
    logging.getLogger("rq.worker").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations."""
    from telephony_service.migrate import upgrade

    upgrade(_settings().database_url)
    click.echo("database is up to date")


@main.group()
def practice() -> None:
    """Practices."""


@practice.command("add")
@click.option("--name", required=True)
@click.option("--number", required=True, help="The practice's Twilio number, E.164.")
@click.option("--timezone", "timezone", required=True, help="IANA zone, e.g. America/Chicago.")
@click.option("--booking-url", default=None)
def practice_add(name: str, number: str, timezone: str, booking_url: str | None) -> None:
    """Add a practice; prints its id."""
    from telephony_service.clock import system_clock
    from telephony_service.services.practices import InvalidInput, add_practice

    settings = _settings()
    with _session(settings) as session:
        try:
            created = add_practice(
                session,
                name=name,
                number=number,
                timezone=timezone,
                booking_url=booking_url,
                now=system_clock(),
                base_url=settings.public_base_url,
            )
        except InvalidInput as exc:
            raise _fail(exc) from None
        session.commit()
        click.echo(created.id)


@practice.command("hours")
@click.option("--practice", "practice_id", type=int, required=True)
@click.argument("changes", nargs=-1)
def practice_hours(practice_id: int, changes: tuple[str, ...]) -> None:
    """Show or change business hours: mon=08:00-12:00,13:00-17:00 sat=closed ..."""
    from telephony_service.services.practices import InvalidInput, set_business_hours

    with _session(_settings()) as session:
        try:
            updated = set_business_hours(session, practice_id, list(changes))
        except InvalidInput as exc:
            raise _fail(exc) from None
        session.commit()
        for day, intervals in updated.business_hours.items():
            spans = ", ".join(f"{opens}-{closes}" for opens, closes in intervals)
            click.echo(f"{day}  {spans or 'closed'}")


@practice.command("closure")
@click.option("--practice", "practice_id", type=int, required=True)
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), required=True)
@click.option("--reason", default=None)
def practice_closure(practice_id: int, day: datetime, reason: str | None) -> None:
    """Close the practice for a day beyond the federal holidays (deadlines skip it)."""
    from telephony_service.services.practices import InvalidInput, add_closure

    with _session(_settings()) as session:
        try:
            add_closure(session, practice_id, day.date(), reason)
        except InvalidInput as exc:
            raise _fail(exc) from None
        session.commit()
        click.echo(f"closed on {day.date().isoformat()}")


_WINDOW = "HH:MM-HH:MM|off"


def _day_option(day: str) -> Callable[[F], F]:
    return click.option(f"--{day}", day, default=None, metavar=_WINDOW)


@practice.command("quiet-hours")
@click.option("--practice", "practice_id", type=int, required=True)
@_day_option("mon")
@_day_option("tue")
@_day_option("wed")
@_day_option("thu")
@_day_option("fri")
@_day_option("sat")
@_day_option("sun")
@click.option("--weekdays", default=None, metavar=_WINDOW, help="Monday to Friday.")
@click.option("--weekend", default=None, metavar=_WINDOW, help="Saturday and Sunday.")
@click.option("--clear", is_flag=True, help="Back to the legal floor alone.")
@click.option("--daily-cap", type=int, default=None, help="Texts a day at most (1-100000).")
def practice_quiet_hours(
    practice_id: int,
    weekdays: str | None,
    weekend: str | None,
    clear: bool,
    daily_cap: int | None,
    **days: str | None,
) -> None:
    """Show or narrow the texting window, per weekday in the patient's local time.

    Texts go out only inside the window; the rest is quiet hours. The legal floor
    (08:00-20:00, and state rules such as no Sunday texts) always applies: these hours
    can only narrow it. A day's own option wins over --weekdays/--weekend; days not
    given keep their window. With no options, prints the current window.
    """
    from telephony_service.domain.calendar import DAY_KEYS
    from telephony_service.services.practices import (
        LEGAL_FLOOR,
        InvalidInput,
        TextingWindow,
        get_practice,
        parse_texting_window,
        set_daily_send_cap,
        set_texting_hours,
        texting_hours_of,
    )

    specs = [
        ("--weekdays", weekdays, DAY_KEYS[:5]),
        ("--weekend", weekend, DAY_KEYS[5:]),
        *((f"--{day}", days[day], (day,)) for day in DAY_KEYS),
    ]
    changes: dict[str, TextingWindow] = {}
    try:
        for label, spec, members in specs:
            if spec is not None:
                changes.update(dict.fromkeys(members, parse_texting_window(spec, label)))
    except InvalidInput as exc:
        raise _fail(exc) from None
    if clear and changes:
        raise click.UsageError("--clear goes back to the legal floor alone; give no day options")

    with _session(_settings()) as session:
        try:
            updated = get_practice(session, practice_id)
            if clear or changes:
                updated = set_texting_hours(session, practice_id, None if clear else changes)
            if daily_cap is not None:
                updated = set_daily_send_cap(session, practice_id, daily_cap)
        except InvalidInput as exc:
            raise _fail(exc) from None
        session.commit()
        hours = texting_hours_of(updated)
        floor = "-".join(LEGAL_FLOOR)
        if hours is None:
            click.echo(f"texting window: the legal floor alone ({floor}, patient's local time)")
        else:
            click.echo(f"texting window (patient's local time, within the legal {floor}):")
        for day in DAY_KEYS:
            window = LEGAL_FLOOR if hours is None else hours[day]
            click.echo(f"{day}  {'-'.join(window) if window else 'off'}")
        if hours is not None and not any(hours.values()):
            click.echo("note: every day is off, so only answers to STOP and HELP are texted")
        click.echo(f"daily send cap  {updated.daily_send_cap}")


@main.group()
def user() -> None:
    """Staff users."""


@user.command("add")
@click.option("--practice", "practice_id", type=int, required=True)
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["agent", "clinician", "manager"]), required=True)
@click.option("--phone", required=True, help="The phone the service rings for their calls.")
@click.option("--name", default=None, help='How the call script introduces them ("Hi, this is …").')
def user_add(practice_id: int, email: str, role: str, phone: str, name: str | None) -> None:
    """Add a user; the password is read from stdin (or asked for on a terminal)."""
    from telephony_service.clock import system_clock
    from telephony_service.services.practices import InvalidInput, add_user

    name = (name or "").strip() or None
    if name is not None and len(name) > 100:
        raise click.BadParameter("at most 100 characters", param_hint="--name")
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    with _session(_settings()) as session:
        try:
            created = add_user(
                session,
                practice_id=practice_id,
                email=email,
                role=role,
                phone=phone,
                password=password,
                now=system_clock(),
            )
        except InvalidInput as exc:
            raise _fail(exc) from None
        created.name = name
        session.commit()
        click.echo(created.id)


@main.group()
def apikey() -> None:
    """API keys for integrations."""


@apikey.command("add")
@click.option("--practice", "practice_id", type=int, required=True)
def apikey_add(practice_id: int) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    from telephony_service.clock import system_clock
    from telephony_service.services.practices import InvalidInput, add_api_key

    with _session(_settings()) as session:
        try:
            key = add_api_key(session, practice_id=practice_id, now=system_clock())
        except InvalidInput as exc:
            raise _fail(exc) from None
        session.commit()
        click.echo(key)


@main.group()
def link() -> None:
    """Scheduling links sent in texts."""


@link.command("revoke")
@click.option("--practice", "practice_id", type=int, required=True)
@click.option("--task", "task_id", type=int, required=True)
def link_revoke(practice_id: int, task_id: int) -> None:
    """Revoke a task's live links (they open a page with the practice's number instead)
    and stop its automated texts."""
    from telephony_service.clock import system_clock
    from telephony_service.services.links import UnknownTask, revoke_links

    with _session(_settings()) as session:
        try:
            count = revoke_links(
                session, practice_id=practice_id, task_id=task_id, now=system_clock()
            )
        except UnknownTask as exc:
            raise _fail(exc) from None
        session.commit()
    click.echo(f"{count} link(s) revoked")


@main.group()
def events() -> None:
    """Stored Twilio events."""


@events.command("retry")
@click.option("--id", "event_id", type=int, default=None, help="One event (default: all stuck).")
def events_retry(event_id: int | None) -> None:
    """Hand events that failed every attempt back to the worker (after fixing the cause)."""
    from telephony_service.services.events import retry_stranded

    with _session(_settings()) as session:
        count = retry_stranded(session, event_id)
    click.echo(f"{count} event(s) will be retried by the worker's relay")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def run(host: str, port: int) -> None:
    """Development: web + worker on the embedded defaults."""
    from telephony_service.devserver import run as run_dev

    run_dev(_settings(), host, port)


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """An RQ worker, with the relay that re-enqueues stored but unprocessed work."""
    from workers.main import run_worker

    settings = _settings()
    if settings.redis_url is None:
        raise click.ClickException("set REDIS_URL (only `telephony run` embeds a Redis)")
    run_worker(settings, burst=burst)


@main.group()
def simulate() -> None:
    """Send correctly signed Twilio-shaped webhooks to a running service."""


_target = click.option(
    "--target",
    default=None,
    help="Where to send the requests (default: PUBLIC_BASE_URL, which is what gets signed).",
)


@simulate.command("missed-call")
@click.option("--from", "caller", required=True)
@click.option("--to", "number", required=True)
@_target
def simulate_missed_call(caller: str, number: str, target: str | None) -> None:
    """A caller hangs up at the greeting: a missed_call task."""
    _simulate_call(caller, number, target, voicemail=None)


@simulate.command("voicemail")
@click.option("--from", "caller", required=True)
@click.option("--to", "number", required=True)
@click.option("--message", default="Hi, this is a test message, please call me back.")
@_target
def simulate_voicemail(caller: str, number: str, message: str, target: str | None) -> None:
    """A caller leaves a voicemail: a voicemail task with its transcription."""
    _simulate_call(caller, number, target, voicemail=message)


@simulate.command("sms")
@click.option("--from", "sender", required=True, help="The patient's number, E.164.")
@click.option("--to", "number", required=True, help="The practice's Twilio number, E.164.")
@click.option("--body", required=True, help="The text, e.g. STOP, HELP or a reply.")
@_target
def simulate_sms(sender: str, number: str, body: str, target: str | None) -> None:
    """A patient texts the practice: STOP/START/HELP are answered at once, a reply
    goes onto the patient's task."""
    from telephony_service.domain.phones import normalise_phone
    from telephony_service.domain.segments import count_segments

    # Twilio always writes the numbers of a text in E.164.
    sender_e164, number_e164 = normalise_phone(sender), normalise_phone(number)
    if sender_e164 is None:
        raise click.BadParameter(f"{sender!r} is not a valid phone number", param_hint="--from")
    if number_e164 is None:
        raise click.BadParameter(f"{number!r} is not a valid phone number", param_hint="--to")
    service = _Service(target)
    message_sid = "SM" + uuid.uuid4().hex
    # The fields of Twilio's incoming-message webhook (a number outside a Messaging
    # Service, so no MessagingServiceSid).
    params = {
        "SmsMessageSid": message_sid,
        "NumMedia": "0",
        "SmsSid": message_sid,
        "SmsStatus": "received",
        "Body": body,
        "To": number_e164,
        "NumSegments": str(count_segments(body).segments),
        "MessageSid": message_sid,
        "AccountSid": service.account_sid,
        "From": sender_e164,
        "ApiVersion": "2010-04-01",
    }
    response = service.post("/twilio/sms/incoming", params)
    click.echo(response.text)
    click.echo(f"simulated text {message_sid}")


class _Service:
    """A running service, reached at `target`, with webhooks signed as Twilio signs them:
    over PUBLIC_BASE_URL (what Twilio would have been configured with) and with the key
    the service verifies them with."""

    def __init__(self, target: str | None) -> None:
        settings = _settings()
        self.base = settings.public_base_url
        self.target = (target or self.base).rstrip("/")
        self.account_sid = settings.twilio_account_sid or "AC" + "0" * 32
        self._auth_token = settings.webhook_auth_token

    def post(self, path: str, params: dict[str, str]) -> requests.Response:
        """POST one webhook; prints its status, fails the command on an error status."""
        import requests

        from telephony_service.web.security import sign

        signature = sign(self.base + path, params, self._auth_token)
        try:
            response = requests.post(
                self.target + path,
                data=params,
                headers={"X-Twilio-Signature": signature},
                timeout=10,
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"could not reach {self.target}: {exc}") from None
        click.echo(f"POST {path} -> {response.status_code}")
        if response.status_code >= 400:
            raise click.ClickException(response.text[:300])
        return response


def _simulate_call(caller: str, number: str, target: str | None, voicemail: str | None) -> None:
    service = _Service(target)
    account = service.account_sid
    call_sid = "CA" + uuid.uuid4().hex
    common = {
        "AccountSid": account,
        "CallSid": call_sid,
        "From": caller,
        "To": number,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }

    service.post("/twilio/voice/incoming", {**common, "CallStatus": "ringing"})
    if voicemail is not None:
        recording_sid = "RE" + uuid.uuid4().hex
        recording_url = (
            f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{recording_sid}"
        )
        recording = {
            "AccountSid": account,
            "CallSid": call_sid,
            "RecordingSid": recording_sid,
            "RecordingUrl": recording_url,
            "RecordingStatus": "completed",
            "RecordingDuration": "9",
            "RecordingChannels": "1",
            "RecordingSource": "RecordVerb",
        }
        service.post(
            "/twilio/voice/recorded",
            {
                **common,
                "CallStatus": "in-progress",
                "RecordingSid": recording_sid,
                "RecordingUrl": recording_url,
                "RecordingDuration": "9",
                "Digits": "hangup",
            },
        )
        service.post(
            "/twilio/voice/status", {**common, "CallStatus": "completed", "CallDuration": "21"}
        )
        service.post("/twilio/voice/recording", recording)
        service.post(
            "/twilio/voice/transcription",
            {
                **common,
                "TranscriptionSid": "TR" + uuid.uuid4().hex,
                "TranscriptionText": voicemail,
                "TranscriptionStatus": "completed",
                "TranscriptionUrl": f"{recording_url}/Transcriptions",
                "RecordingSid": recording_sid,
                "RecordingUrl": recording_url,
                "CallStatus": "completed",
            },
        )
    else:
        service.post(
            "/twilio/voice/status", {**common, "CallStatus": "completed", "CallDuration": "6"}
        )
    click.echo(f"simulated call {call_sid}; the task appears in GET {service.target}/api/v1/tasks")


@main.group()
def lane() -> None:
    """Lanes: the categories an agent owns during set hours."""


@lane.command("add")
@click.option("--practice", "practice_id", type=int, required=True)
@click.option("--user", "user_id", type=int, required=True, help="The user who owns the lane.")
@click.option("--name", required=True, help='What the queue shows, e.g. "New patients".')
@click.option(
    "--categories", required=True, help="Comma-separated, e.g. new_patient_request,web_form."
)
@click.option(
    "--hours",
    default="always",
    show_default=True,
    help='Practice-local, e.g. "mon-fri 08:00-12:00; sat 09:00-11:00".',
)
def lane_add(practice_id: int, user_id: int, name: str, categories: str, hours: str) -> None:
    """Add a lane; prints its id."""
    from telephony_service.clock import system_clock
    from telephony_service.services.lanes import add_lane
    from telephony_service.services.practices import InvalidInput

    with _session(_settings()) as session:
        try:
            created = add_lane(
                session,
                practice_id=practice_id,
                user_id=user_id,
                name=name,
                categories=categories,
                hours=hours,
                now=system_clock(),
            )
        except InvalidInput as exc:
            raise _fail(exc) from None
        session.commit()
        click.echo(created.id)


@lane.command("list")
@click.option("--practice", "practice_id", type=int, required=True)
def lane_list(practice_id: int) -> None:
    """List a practice's lanes: id, user, name, categories, hours."""
    from telephony_service.services.lanes import list_lanes

    with _session(_settings()) as session:
        for found in list_lanes(session, practice_id):
            click.echo(
                f"{found.id}\tuser {found.user_id}\t{found.name}\t"
                f"{','.join(found.categories)}\t{found.hours_text}"
            )


if __name__ == "__main__":
    main()
