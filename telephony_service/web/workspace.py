"""What every staff page shares: the request's database session, the signed-in user, the
role check and CSRF protection. The staff blueprints (auth, queue, agent) call `install`.

The signed Flask cookie carries two random values: `sid`, the server-side session's
token (services.auth), and `csrf`, the token every form and fetch must send back.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    request,
    session,
    url_for,
)
from sqlalchemy.orm import Session

from telephony_service.models import Practice, User
from telephony_service.services.auth import Resumed, SessionEnded, resume_session
from telephony_service.wiring import Services

F = TypeVar("F", bound=Callable[..., Any])

# Requests a page makes by itself (the queue's refresh, the call status poll) send this
# header; they read the session without counting as the user's activity.
BACKGROUND_HEADER = "X-Background"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def services() -> Services:
    wired: Services = current_app.extensions["telephony"]
    return wired


def db() -> Session:
    """This request's database session, opened on first use and closed after the request."""
    if "db" not in g:
        g.db = services().session_factory()
    result: Session = g.db
    return result


def current_user() -> User | None:
    user: User | None = g.get("user")
    return user


def require_user() -> User:
    """The signed-in user, in a view behind login_required (which has already sent anyone
    else away)."""
    user = current_user()
    if user is None:
        abort(401)
    return user


def signed_in() -> Resumed | None:
    resumed: Resumed | None = g.get("signed_in")
    return resumed


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def _load_user() -> None:
    g.user = None
    g.signed_in = None
    token = session.get("sid")
    if not token:
        return
    wired = services()
    try:
        resumed = resume_session(
            db(),
            token,
            now=wired.clock(),
            idle=timedelta(minutes=wired.settings.session_idle_minutes),
            touch=request.headers.get(BACKGROUND_HEADER) != "1",
        )
    except SessionEnded as ended:
        session.pop("sid", None)
        g.session_ended = ended.reason
        return
    g.user = resumed.user
    g.signed_in = resumed


def _check_csrf() -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        abort(400, "This form has expired. Reload the page and try again.")
    # A second line of defence: browsers send Origin on cross-site POSTs.
    origin = request.headers.get("Origin")
    if origin and origin.strip() != "null" and not _our_origin(origin):
        abort(400, "This form was sent from another site.")


def _our_origin(origin: str) -> bool:
    """The public address's origin, or this request's own host. A proxy that rewrites Host
    (to the app server's name) would otherwise make every staff form fail."""
    sent = origin_of(origin)
    if sent is None:
        return False
    if sent == origin_of(services().settings.public_base_url):
        return True
    # Host as the browser would have written it (no default port); the scheme is not
    # compared, since a proxy that ends TLS makes the request itself plain http.
    return sent == origin_of(f"{urlsplit(sent).scheme}://{request.host}")


def origin_of(url: str) -> str | None:
    """scheme://host[:port] as browsers send it in Origin (default port left out), or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if scheme == "https" else 80
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{scheme}://{parts.hostname.lower()}{suffix}"


def _close_db(_exc: BaseException | None) -> None:
    opened = g.pop("db", None)
    if opened is not None:
        opened.close()


def current_practice() -> Practice:
    """The signed-in user's practice: every query of a staff page is scoped to it."""
    user = current_user()
    if user is None:
        abort(401)
    practice = db().get(Practice, user.practice_id)
    if practice is None:
        abort(404)
    return practice


def _template_context() -> dict[str, Any]:
    user = current_user()
    return {
        "current_user": current_user,
        "signed_in": signed_in,
        "idle_minutes": services().settings.session_idle_minutes,
        "practice_name": current_practice().name if user is not None else None,
    }


def _security_headers(response: Response) -> Response:
    # Staff pages carry patient context: never cached, never framed, never leak the URL.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; media-src 'self' https:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'",
    )
    return response


def install(bp: Blueprint) -> None:
    """Load the user and check CSRF before every request of a staff blueprint."""
    bp.before_request(_load_user)
    bp.before_request(_check_csrf)
    bp.after_request(_security_headers)
    bp.teardown_request(_close_db)
    bp.context_processor(_template_context)


def login_required(*roles: str) -> Callable[[F], F]:
    """Signed-in users only (with one of `roles`, if given); others go to /login."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                if request.headers.get(BACKGROUND_HEADER) == "1" or request.method != "GET":
                    abort(401)
                reason = g.get("session_ended")
                return redirect(
                    url_for("auth.login", next=request.full_path.rstrip("?"), ended=reason)
                )
            if roles and user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate
