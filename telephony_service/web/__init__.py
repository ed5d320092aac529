"""The Flask app factory: one blueprint per audience."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from telephony_service.settings import Settings, load_settings
from telephony_service.web.sessions import LazyCookieSessionInterface
from telephony_service.wiring import Services, build_services


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    if services is None:
        services = build_services(settings or load_settings())
    settings = services.settings

    # Templates and static files live beside web/, in the package root.
    app = Flask(
        __name__,
        instance_path=str(settings.instance_path),
        static_folder="../static",
        template_folder="../templates",
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Twilio posts a few kilobytes; API payloads are small. Anything far larger is
        # abuse or a bug and gets 413 before it is parsed.
        MAX_CONTENT_LENGTH=settings.max_form_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_form_bytes,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )
    app.extensions["telephony"] = services
    app.session_interface = LazyCookieSessionInterface()

    from telephony_service.web import (
        agent,
        api,
        auth,
        bridge,
        calls,
        dev,
        health,
        queue,
        twilio_hooks,
    )
    from telephony_service.web import links as patient_links
    from telephony_service.web.workspace import csrf_token

    app.register_blueprint(health.bp)
    app.register_blueprint(twilio_hooks.bp)
    app.register_blueprint(bridge.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(patient_links.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(queue.bp)
    app.register_blueprint(agent.bp)
    app.register_blueprint(calls.bp)
    app.jinja_env.globals["csrf_token"] = csrf_token
    if not settings.twilio_enabled:
        # The console gateway's outbox: texts that would have gone out (development).
        app.register_blueprint(dev.bp)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        # JSON for the API, plain text for everyone else (Twilio, browsers).
        from flask import request

        if request.path.startswith("/api/"):
            return jsonify(error=exc.name, detail=exc.description), exc.code
        return exc

    logging.getLogger(__name__).debug("app created")
    return app


def services_of(app: Flask) -> Services:
    services: Services = app.extensions["telephony"]
    return services
