"""`telephony run` on a fresh instance, then `telephony simulate`: a newcomer's first minute.

Real processes: the dev server, its worker, its embedded Redis and SQLite under a new
instance folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from telephony_service.devserver import Demo, _print_welcome

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_it_turns_a_simulated_missed_call_into_a_task_on_a_fresh_machine(tmp_path: Path):
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"}
    }
    env.update(
        TELEPHONY_INSTANCE_PATH=str(tmp_path / "instance"),
        PUBLIC_BASE_URL=f"http://localhost:{port}",
        PYTHONUNBUFFERED="1",
    )
    telephony = [sys.executable, "-m", "telephony_service.cli"]
    log = (tmp_path / "run.log").open("w+")
    socket_path = None
    server = subprocess.Popen(
        [*telephony, "run", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:

        def output() -> str:
            return (tmp_path / "run.log").read_text()

        _wait_for(lambda: "web listening" in output(), 60, "the dev server to listen")
        text = output()
        assert "embedded Redis" in text
        socket_path = text.split("embedded Redis at unix://", 1)[1].split()[0]
        assert "Demo practice" in text
        key = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if "API key:" in line
        )
        simulate_line = next(line for line in text.splitlines() if "simulate missed-call" in line)
        assert "--to +14155550100" in simulate_line
        assert f"Sign in to the callback queue: http://localhost:{port}/login" in text
        credentials = {
            next(word for word in line.split() if "@" in word): line.split("password:")[1].strip()
            for line in text.splitlines()
            if "@demo.example" in line and "password:" in line
        }
        assert set(credentials) == {"agent@demo.example", "manager@demo.example"}
        for email, password in credentials.items():
            assert _sign_in(port, email, password) == "/queue", email
        assert _sign_in(port, "agent@demo.example", "not-the-password") is None

        def simulate(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*telephony, "simulate", *args],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        result = simulate("missed-call", "--from", "+12025550143", "--to", "+14155550100")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "POST /twilio/voice/status -> 200" in result.stdout

        def tasks() -> list[dict]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/tasks",
                headers={"Authorization": f"Bearer {key}"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return list(json.load(response)["tasks"])

        [task] = _wait_for(tasks, 30, "the task to appear")
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/tasks?phone=%2B12025550143",
                headers={"Authorization": f"Bearer {key}"},
            ),
            timeout=5,
        ).close()
        assert task["category"] == "missed_call"
        assert task["phone"] == "+12025550143"

        voicemail = simulate(
            "voicemail",
            "--from",
            "+13125550188",
            "--to",
            "+14155550100",
            "--message",
            "Hi, this is Ben, about my referral.",
        )
        assert voicemail.returncode == 0, voicemail.stdout + voicemail.stderr

        def voicemail_task() -> dict | None:
            for found in tasks():
                kinds = [entry["kind"] for entry in found["timeline"]]
                if found["category"] == "voicemail" and "transcription" in kinds:
                    return found
            return None

        found = _wait_for(voicemail_task, 30, "the voicemail task")
        assert found["has_voicemail"] is True
        # Phone numbers stay out of the log, query strings included.
        for number in ("+13125550188", "2B12025550143"):
            assert number not in output()
        # Stopping it stops everything it started: the worker and the embedded Redis (which
        # daemonizes itself).
        started = _started_by(server.pid, socket_path)
        assert sorted(_role(pid) for pid in started) == ["redis", "worker"], {
            pid: _cmdline(pid) for pid in started
        }
        server.terminate()
        assert server.wait(timeout=20) != -signal.SIGTERM  # handled, not killed by it
        _wait_for(lambda: not any(_alive(pid) for pid in started), 20, "its children to exit")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=20)
        # Whatever failed above, nothing it started outlives the test (its worker is no
        # longer its child once it is gone).
        log.seek(0)
        workers = [int(pid) for pid in re.findall(r"worker started \(pid (\d+)\)", log.read())]
        redis = _processes_mentioning(socket_path) if socket_path else []
        for pid in [*workers, *redis]:
            if _role(pid) in ("worker", "redis"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.close()


def test_it_tells_how_to_add_a_user_when_the_demo_passwords_are_long_gone(capsys):
    # A later `telephony run` on the same database cannot know the passwords it printed.
    _print_welcome("http://localhost:5000", Demo(practice_id=3, api_key=None))

    banner = capsys.readouterr().out
    assert "Sign in to the callback queue: http://localhost:5000/login" in banner
    assert "telephony user add --practice 3 --email" in banner
    assert "password:" not in banner


def _sign_in(port: int, email: str, password: str) -> str | None:
    """POST /login as a browser would; where it was sent on success, None when refused."""
    browser = requests.Session()
    form = browser.get(f"http://127.0.0.1:{port}/login", timeout=5)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    response = browser.post(
        f"http://127.0.0.1:{port}/login",
        data={"csrf_token": csrf.group(1), "email": email, "password": password},
        allow_redirects=False,
        timeout=10,
    )
    if response.status_code != 302:
        assert "That email and password don" in response.text
        return None
    return str(response.headers["Location"])


def _descendants(pid: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            child = int(status.parent.name)
            children += [child, *_descendants(child)]
    return children


def _started_by(pid: int, socket_path: str) -> set[int]:
    """The processes `telephony run` (pid) started: its children, and the Redis serving
    socket_path (a daemon, so no longer its child), zombies left out."""
    found = set(_descendants(pid)) | set(_processes_mentioning(socket_path))
    return {child for child in found if _alive(child)}


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"


def _role(pid: int) -> str:
    cmdline = _cmdline(pid)
    if "redis-server" in cmdline:
        return "redis"
    if "telephony_service.cli worker" in cmdline:
        return "worker"
    return cmdline


def _processes_mentioning(needle: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
