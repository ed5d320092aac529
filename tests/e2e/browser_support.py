"""A live server and headless Chromium (Debian's, driven by Playwright) for browser tests.

The app runs in a thread of the test process on the test's own database and Redis, served
over plain HTTP on 127.0.0.1; PUBLIC_BASE_URL points there (so session cookies are not
marked Secure, as in development) and Twilio is the console gateway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from telephony_service.settings import Settings

CHROMIUM = "/usr/bin/chromium"
# Without these Chromium keeps trying to reach Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _LateApp:
    """A WSGI app handed to the server before the Flask app exists (the app's settings need
    the server's port)."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "the live app was not attached"
        return self.app(environ, start_response)


@dataclass
class LiveServer:
    server: BaseWSGIServer
    late: _LateApp

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    late = _LateApp()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield LiveServer(server, late)
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def settings(
    database_url: str, redis_url: str, tmp_path: Path, live_server: LiveServer
) -> Settings:
    # Overrides conftest's: plain HTTP on the live server, the console gateway.
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key="browser-test-secret-key-0123456789",
        public_base_url=live_server.url,
        twilio_account_sid=None,
        twilio_auth_token=None,
        twilio_api_base_url="https://api.twilio.com",
        instance_path=tmp_path,
    )


@pytest.fixture
def live_url(live_server: LiveServer, app: Flask) -> str:
    app.config["TESTING"] = False
    live_server.late.app = app
    return live_server.url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
