"""Sessions open lazily, and still work for a browser that carries the cookie."""

from __future__ import annotations

from flask import Flask, session

from telephony_service.web.sessions import LazyCookieSessionInterface


def test_it_keeps_a_session_across_requests(app: Flask) -> None:
    assert isinstance(app.session_interface, LazyCookieSessionInterface)

    @app.get("/_test/session/<value>")
    def remember(value: str) -> str:
        previous = session.get("value", "none")
        session["value"] = value
        return previous

    client = app.test_client()
    assert client.get("/_test/session/first").get_data(as_text=True) == "none"
    assert client.get("/_test/session/second").get_data(as_text=True) == "first"
    fresh = app.test_client()  # no cookie: a new, empty session
    assert fresh.get("/_test/session/third").get_data(as_text=True) == "none"


def test_it_sets_no_cookie_for_a_request_that_does_not_use_the_session(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert "Set-Cookie" not in response.headers
