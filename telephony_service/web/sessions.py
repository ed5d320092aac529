"""Flask's cookie session, opened only for requests that bring a session cookie.

Flask opens the session of every request before routing: it builds a signing serializer
(which serialises a test value to sniff its type) and parses the cookie header. Twilio's
webhooks and API clients never send a cookie, and that work was a tenth of the
incoming-call webhook's CPU. A request without the cookie gets a fresh, empty session;
one with it is opened exactly as Flask would, with the serializer built once per key.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


class LazyCookieSessionInterface(SecureCookieSessionInterface):
    def __init__(self) -> None:
        self._serializers: dict[Any, URLSafeTimedSerializer] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        key = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        serializer = self._serializers.get(key)
        if serializer is None:
            serializer = super().get_signing_serializer(app)
            if serializer is None:
                return None
            self._serializers = {key: serializer}
        return serializer

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if "HTTP_COOKIE" not in request.environ:
            return None if not app.secret_key else self.session_class()
        return super().open_session(app, request)
