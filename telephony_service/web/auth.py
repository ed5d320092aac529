"""Sign-in and sign-out for staff."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, session
from werkzeug.wrappers import Response

from telephony_service.services import auth as auth_service
from telephony_service.web import workspace

bp = Blueprint("auth", __name__)
workspace.install(bp)

# Where a sign-in lands when it was not sent from a page that needed it.
DEFAULT_NEXT = "/queue"
BAD_CREDENTIALS = "That email and password don't match."
THROTTLED = "Too many sign-in attempts. Try again in {minutes}."


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else the queue: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return DEFAULT_NEXT
    # Browsers read a backslash as a slash ("/\evil.example" is another host) and drop
    # tabs and newlines inside URLs, so neither may smuggle a host past the check above.
    if "\\" in target or any(ord(char) < 32 for char in target):
        return DEFAULT_NEXT
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith("/login"):
        return DEFAULT_NEXT
    return target


def _minutes(count: float) -> str:
    return f"{count:g} minute{'' if count == 1 else 's'}"


def _page(*, status: int = 200, email: str = "", error: str | None = None) -> tuple[str, int]:
    ended = request.values.get("ended")
    return (
        render_template(
            "workspace/login.html",
            email=email,
            error=error,
            next=request.values.get("next", ""),
            idle_notice=ended == "idle",
            idle_wording=_minutes(workspace.services().settings.session_idle_minutes),
        ),
        status,
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int]:
    if request.method == "GET":
        if workspace.current_user() is not None:
            return redirect(safe_next(request.args.get("next")))
        return _page()
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    wired = workspace.services()
    try:
        signed = auth_service.sign_in(
            workspace.db(),
            email=email,
            password=password,
            # The peer's address as WSGI saw it. Behind a proxy this is the proxy's own
            # address (every sign-in would share one throttle) unless ProxyFix is set up
            # with exactly as many hops as the real proxy chain; more would let a client
            # pick its own address with a forged X-Forwarded-For.
            address=request.remote_addr or "unknown",
            now=wired.clock(),
            previous_token=session.get("sid"),
        )
    except auth_service.Throttled as refused:
        return _page(
            status=429, email=email, error=THROTTLED.format(minutes=_minutes(refused.minutes))
        )
    except auth_service.BadCredentials:
        return _page(status=401, email=email, error=BAD_CREDENTIALS)
    # Rotation: nothing from the cookie before sign-in (a planted session, its CSRF token)
    # is carried into the signed-in one.
    session.clear()
    session["sid"] = signed.token
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> Response:
    token = session.get("sid")
    if token:
        auth_service.sign_out(workspace.db(), token, now=workspace.services().clock())
    session.clear()
    flash("You are signed out.")
    return redirect("/login")


@bp.get("/session/status")
@workspace.login_required()
def session_status() -> Response:
    """How long the session has left, for the page's countdown before it gives up.

    Asked with X-Background, so asking does not count as activity; another tab's activity
    does, and the countdown then carries on instead of signing out.
    """
    signed = workspace.signed_in()
    if signed is None:
        abort(401)
    now = workspace.services().clock()
    remaining = max(timedelta(0), signed.expires_at - now)
    return jsonify(
        expires_at=signed.expires_at.isoformat(), remaining_seconds=remaining.total_seconds()
    )
