"""Scheduling links for patients: no login, the token in the URL is the capability.

Every response is uncacheable, unindexed, sends no Referer (the URL holds the token and the
booking button leaves for another site) and runs under a CSP that allows only our own
nonce-tagged stylesheet and form posts to ourselves and the practice's booking site.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for

from telephony_service.domain.phones import display_number
from telephony_service.formatting import clock
from telephony_service.services.links import (
    LinkError,
    LinkPage,
    LinkUnavailable,
    NoActions,
    NoBookingUrl,
    book_online,
    find_link,
    practice_card,
    request_callback,
    show_link,
    well_formed,
)
from telephony_service.services.practices import PracticeCard
from telephony_service.web.workspace import origin_of
from telephony_service.wiring import Services

log = logging.getLogger(__name__)

# The templates live in the package's templates/ folder, next to web/.
bp = Blueprint("links", __name__, template_folder="../templates")

# Link-preview fetchers (lower case). iMessage announces itself as facebookexternalhit and
# Twitterbot; none of these is the patient reading the page. Kept specific: a bare "bot"
# would match real phones (e.g. CUBOT models).
PREVIEW_AGENTS = (
    "facebookexternalhit",
    "facebot",
    "meta-externalagent",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",
    "microsoftpreview",
    "bingpreview",
    "googlebot",
    "google-pagerenderer",
    "googleother",
    "applebot",
    "pinterestbot",
    "redditbot",
    "embedly",
    "iframely",
    "bitlybot",
    "crawler",
    "spider",
)

# A booking origin goes into the CSP header only if it is plainly a scheme, host and port.
_SAFE_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _services() -> Services:
    services: Services = current_app.extensions["telephony"]
    return services


def is_preview(user_agent: str) -> bool:
    agent = user_agent.lower()
    # A browser always says who it is; an empty agent is a script, not the patient.
    return not agent or any(name in agent for name in PREVIEW_AGENTS)


def _foreign_post() -> bool:
    """A form posted from another site. Our own pages send `Origin: null` (browsers do
    that for a POST under Referrer-Policy: no-referrer) and no Referer; the token in the
    path is the secret a forged post would need anyway."""
    ours = origin_of(_services().settings.public_base_url)
    origin = request.headers.get("Origin")
    if origin is not None and origin.strip() != "null":
        return origin_of(origin) != ours
    referer = request.headers.get("Referer")
    if referer:
        return origin_of(referer) != ours
    return False


@bp.before_request
def _nonce() -> None:
    g.csp_nonce = secrets.token_urlsafe(16)


@bp.after_request
def _headers(response: Response) -> Response:
    form_action = "'self'"
    booking = g.get("booking_origin")
    if booking:
        # Browsers apply form-action to the redirect after the post, and to every redirect
        # after that: a booking site that sends the patient on to another host (the bare
        # domain to www, a booking platform) must not be cut off. The post's target is the
        # stored booking URL, never one from the request, so any https site may follow.
        form_action += " https:"
        if not booking.startswith("https:"):
            form_action += f" {booking}"
    response.headers["Content-Security-Policy"] = "; ".join(
        (
            "default-src 'none'",
            f"style-src 'nonce-{g.get('csp_nonce', '')}'",
            f"form-action {form_action}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("/s/<token>")
def page(token: str) -> Any:
    if not well_formed(token):
        return _not_found()
    services = _services()
    # HEAD is what checkers and some previewers send; only a GET can be the patient.
    counted = request.method == "GET" and not is_preview(request.user_agent.string)
    with services.session() as session:
        view = show_link(session, token, services.clock(), counted=counted)
        session.commit()
    if view is None:
        return _not_found()
    if view.state != "valid":
        return _message(view.practice, view.state, 410)
    zone = ZoneInfo(view.timezone)
    offers_booking = view.booking_url is not None
    if offers_booking:
        _allow_form_target(view)
    # One zone name in the legend; each time's own where the offer spans a clock change.
    names = {slot.astimezone(zone).strftime("%Z") for slot in view.slots}
    one_name = len(names) == 1
    return render_template(
        "links/page.html",
        **_practice_context(view.practice),
        token=token,
        booking=offers_booking,
        slots=[
            (slot.isoformat(), _label(slot, zone, with_zone=not one_name)) for slot in view.slots
        ],
        callback_at=_label(view.callback_at, zone) if view.callback_at else None,
        zone_name=names.pop() if one_name else "",
    )


@bp.get("/s/<token>/book")
@bp.get("/s/<token>/callback")
def action_page(token: str) -> Any:
    """The form's target opened as a page (a reloaded or reopened tab): the link's page."""
    if not well_formed(token):
        return _not_found()
    return redirect(url_for("links.page", token=token), code=303)


@bp.post("/s/<token>/book")
def book(token: str) -> Any:
    if not well_formed(token):
        return _not_found()
    if _foreign_post():
        return _forbidden()
    services = _services()
    with services.session() as session:
        link = find_link(session, token)
        if link is None:
            return _not_found()
        try:
            booking_url = book_online(session, link, services.clock())
        except LinkError as exc:
            return _refused(exc)
        session.commit()
        log.info("link %s: patient went to book online", link.id)
    return redirect(booking_url, code=303)


@bp.post("/s/<token>/callback")
def callback(token: str) -> Any:
    if not well_formed(token):
        return _not_found()
    if _foreign_post():
        return _forbidden()
    slot = _parse_slot(request.form.get("slot", ""))
    services = _services()
    with services.session() as session:
        link = find_link(session, token)
        if link is None:
            return _not_found()
        try:
            if slot is None:
                return _message(practice_card(session, link), "bad_slot", 400, token=token)
            request_callback(session, link, slot, services.clock())
        except LinkError as exc:
            return _refused(exc, token=token)
        session.commit()
        log.info("link %s: patient asked for a call back", link.id)
    return redirect(url_for("links.done", token=token), code=303)


@bp.get("/s/<token>/done")
def done(token: str) -> Any:
    if not well_formed(token):
        return _not_found()
    services = _services()
    with services.session() as session:
        view = show_link(session, token, services.clock(), counted=False)
    if view is None:
        return _not_found()
    if view.state != "valid":
        return _message(view.practice, view.state, 410)
    if view.callback_at is None:
        return redirect(url_for("links.page", token=token), code=303)
    return render_template(
        "links/done.html",
        **_practice_context(view.practice),
        callback_at=_label(view.callback_at, ZoneInfo(view.timezone)),
    )


def _parse_slot(raw: str) -> datetime | None:
    if len(raw) > 40:
        return None
    try:
        slot = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return slot if slot.tzinfo is not None else None


def _label(at: datetime, zone: ZoneInfo, *, with_zone: bool = False) -> str:
    """'Tue 10:30 AM' in the practice's time, whatever the server's locale ('Tue 10:30 AM
    EST' `with_zone`)."""
    local = at.astimezone(zone)
    label = f"{local:%a} {clock(local)}"
    return f"{label} {local:%Z}" if with_zone else label


def _allow_form_target(view: LinkPage) -> None:
    origin = origin_of(view.booking_url or "")
    if origin and _SAFE_ORIGIN.fullmatch(origin):
        g.booking_origin = origin


def _practice_context(practice: PracticeCard) -> dict[str, Any]:
    return {
        "nonce": g.csp_nonce,
        "practice_name": practice.name,
        "practice_tel": practice.number,
        "practice_phone": display_number(practice.number),
    }


def _refused(exc: LinkError, token: str | None = None) -> Any:
    if isinstance(exc, LinkUnavailable):
        status = 410
    elif isinstance(exc, NoBookingUrl):
        status = 404
    elif isinstance(exc, NoActions):
        status = 409
    else:
        status = 400
    return _message(exc.practice, exc.reason, status, token=token)


def _message(practice: PracticeCard, reason: str, status: int, *, token: str | None = None) -> Any:
    return (
        render_template(
            "links/message.html", **_practice_context(practice), reason=reason, token=token
        ),
        status,
    )


def _not_found() -> Any:
    return render_template("links/not_found.html", nonce=g.csp_nonce), 404


def _forbidden() -> Any:
    return render_template("links/forbidden.html", nonce=g.csp_nonce), 403
