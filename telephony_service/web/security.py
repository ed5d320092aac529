"""Twilio webhook signatures. The only module that imports the request validator."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, quote

from flask import Request, abort, current_app, g, request
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from werkzeug.datastructures import MultiDict

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def signed_url(public_base_url: str, req: Request) -> str:
    """The URL Twilio signed: the configured public URL plus the raw path and query.

    `request.url` is what the last proxy made of it (http vs https, host, port), so it is
    not what Twilio saw; the operator tells us what Twilio sees in PUBLIC_BASE_URL.
    """
    raw = req.environ.get("RAW_URI") or req.environ.get("REQUEST_URI")
    if not raw:
        raw = quote(req.path)
        if req.query_string:
            raw += "?" + req.query_string.decode("latin-1")
    return public_base_url + raw


class TwilioParams(dict[str, str]):
    """A webhook's form fields, parsed straight from the body.

    Twilio posts each field once, so a plain dict is the whole truth; `getall` lets the
    request validator read it without the exception-driven probing it does on a dict
    (a measurable share of a webhook's CPU, with werkzeug's form parser the larger one).
    """

    def getall(self, name: str) -> list[str]:
        return [self[name]]


MAX_FIELDS = 200


def parse_params(req: Request) -> TwilioParams | MultiDict[str, str]:
    if req.mimetype != "application/x-www-form-urlencoded":
        return TwilioParams()
    pairs = parse_qsl(
        req.get_data(cache=True).decode("utf-8", "replace"),
        keep_blank_values=True,
        max_num_fields=MAX_FIELDS,
    )
    params = TwilioParams(pairs)
    if len(params) != len(pairs):
        # A repeated field is not something Twilio sends, but the signature covers
        # every value, so check it over all of them.
        return MultiDict(pairs)
    return params


def twilio_params() -> TwilioParams | MultiDict[str, str]:
    """The verified webhook's fields (set by @twilio_signed)."""
    params: TwilioParams | MultiDict[str, str] = g.twilio_params
    return params


def _valid(
    validator: RequestValidator, url: str, params: Any, signature: str, algorithm: str
) -> bool:
    # Twilio signs the URL as configured, so one HMAC over PUBLIC_BASE_URL settles nearly
    # every request; validate() (URL with and without an explicit port, body hashes) is
    # the fallback. Signature checks run on every webhook, so the second HMAC matters.
    if "bodySHA256" not in url:
        try:
            expected = validator.compute_signature(url, params, algorithm)
        except ValueError:  # an algorithm we do not know; validate() says no and logs it
            expected = ""
        if expected and hmac.compare_digest(expected.encode(), signature.encode()):
            return True
    return bool(validator.validate(url, params, signature, algorithm))


def twilio_signed(view: F) -> F:
    """Answer 403 (and store nothing) unless the request carries Twilio's signature."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = current_app.extensions["telephony"].settings
        validator = current_app.extensions.get("twilio_validator")
        if validator is None:
            validator = RequestValidator(settings.webhook_auth_token)
            current_app.extensions["twilio_validator"] = validator
        signature = request.headers.get(SIGNATURE_HEADER, "")
        url = signed_url(settings.public_base_url, request)
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
        try:
            params = parse_params(request)
        except ValueError:  # more fields than any Twilio webhook has
            abort(400)
        if not signature or not _valid(validator, url, params, signature, algorithm):
            log.warning("rejected unsigned or forged webhook on %s", request.path)
            abort(403)
        g.twilio_params = params
        return view(*args, **kwargs)

    return cast(F, wrapper)


def sign(url: str, params: dict[str, str], auth_token: str) -> str:
    """The signature Twilio would send for these params; for `telephony simulate`."""
    return str(RequestValidator(auth_token).compute_signature(url, params))
