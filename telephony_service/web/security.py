"""Twilio webhook signatures. The only module that imports the request validator."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote_plus

from flask import Request, abort, current_app, g, request
from twilio.request_validator import (
    HMAC_SHA1,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge

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


FORM = "application/x-www-form-urlencoded"


def parse_params(req: Request) -> TwilioParams | MultiDict[str, str]:
    content_type = req.environ.get("CONTENT_TYPE", "")
    if content_type != FORM and content_type.partition(";")[0].strip().lower() != FORM:
        return TwilioParams()
    pairs = _split_form(_body(req).decode("utf-8", "replace"))
    params = TwilioParams(pairs)
    if len(params) != len(pairs):
        # A repeated field is not something Twilio sends, but the signature covers
        # every value, so check it over all of them.
        return MultiDict(pairs)
    return params


def _body(req: Request) -> bytes:
    """The request's body, read straight from the server's stream when its length is given.

    werkzeug's stream wrapping costs as much CPU as parsing the form; it is still used
    when the length is missing (chunked) or not a plain number. Reading exactly the given
    length is what werkzeug does too, and the size limit is checked first, as werkzeug
    would: an oversize body is refused without being read.
    """
    environ = req.environ
    length = environ.get("CONTENT_LENGTH", "")
    limit = req.max_content_length
    if not length.isdigit():
        if limit is None or "wsgi.input_terminated" not in environ:
            return req.get_data(cache=True)
        # Chunked (gunicorn ends the stream): werkzeug would cut an oversize body off at
        # the limit without a word, and the signature check would then call it forged.
        chunked: bytes = environ["wsgi.input"].read(limit + 1)
        if len(chunked) > limit:
            raise RequestEntityTooLarge()
        return chunked
    size = int(length)
    if limit is not None and size > limit:
        raise RequestEntityTooLarge()
    data: bytes = environ["wsgi.input"].read(size)
    return data


def _split_form(body: str) -> list[tuple[str, str]]:
    """parse_qsl without its cost: most of a webhook's fields ("completed", SIDs, "US")
    need no unquoting, and parse_qsl unquotes every one (a third of the incoming-call
    webhook's own CPU). Same result, including blank values and "+" for a space."""
    if not body:
        return []
    fields = body.split("&")
    if len(fields) > MAX_FIELDS:
        raise ValueError("too many fields")
    pairs = []
    for field in fields:
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = _unquote(name)
        if "%" in value or "+" in value:
            value = _unquote(value)
        pairs.append((name, value))
    return pairs


# The quoted fields are mostly phone numbers ("%2B1617…"), and the called number (To,
# Called) repeats on every call to a practice.
_unquote = functools.lru_cache(maxsize=4096)(unquote_plus)


def twilio_params() -> TwilioParams | MultiDict[str, str]:
    """The verified webhook's fields (set by @twilio_signed)."""
    params: TwilioParams | MultiDict[str, str] = g.twilio_params
    return params


def _valid(
    validator: RequestValidator, url: str, params: Any, signature: str, algorithm: str
) -> bool:
    # Twilio signs the URL as configured, so one HMAC over PUBLIC_BASE_URL settles nearly
    # every request; validate() (URL with and without an explicit port, body hashes, other
    # algorithms) is the fallback. Signature checks run on every webhook, so this path
    # computes Twilio's documented scheme (URL, then each field's name and value in name
    # order, HMAC-SHA1, base64) directly: the library's general version costs several
    # times more. The tests sign with the library, so the two cannot drift apart.
    if (
        "bodySHA256" not in url
        and isinstance(params, TwilioParams)
        and algorithm.upper() == HMAC_SHA1
    ):
        payload = url + "".join(name + params[name] for name in sorted(params))
        digest = hmac.new(_key(validator.token), payload.encode("utf-8"), hashlib.sha1)
        expected = base64.b64encode(digest.digest()).decode()
        if hmac.compare_digest(expected.encode(), signature.encode()):
            return True
    return bool(validator.validate(url, params, signature, algorithm))


@functools.cache
def _key(token: str | bytes) -> bytes:
    return token if isinstance(token, bytes) else token.encode("utf-8")


# The headers as WSGI names them: read straight from the environ, one lookup each.
_SIGNATURE_ENVIRON = "HTTP_" + SIGNATURE_HEADER.upper().replace("-", "_")
_SETTINGS_ENVIRON = "HTTP_" + SIGNATURE_SETTINGS_HEADER.upper().replace("-", "_")


def twilio_signed(view: F) -> F:
    """Answer 403 (and store nothing) unless the request carries Twilio's signature."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        req = request._get_current_object()  # type: ignore[attr-defined]
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        settings = app.extensions["telephony"].settings
        validator = app.extensions.get("twilio_validator")
        if validator is None:
            validator = RequestValidator(settings.webhook_auth_token)
            app.extensions["twilio_validator"] = validator
        environ = req.environ
        signature = environ.get(_SIGNATURE_ENVIRON, "")
        url = signed_url(settings.public_base_url, req)
        algorithm = get_signature_algorithm(environ.get(_SETTINGS_ENVIRON))
        try:
            params = parse_params(req)
        except ValueError:  # more fields than any Twilio webhook has
            abort(400)
        if not signature or not _valid(validator, url, params, signature, algorithm):
            log.warning("rejected unsigned or forged webhook on %s", req.path)
            abort(403)
        g.twilio_params = _storable(params)
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _storable(
    params: TwilioParams | MultiDict[str, str],
) -> TwilioParams | MultiDict[str, str]:
    """The fields without NUL characters (after the signature, which covers them as sent).

    PostgreSQL stores no NUL in text or JSON: one in a patient's text failed the event's
    insert, so the webhook answered 500 and the text (a STOP among them) was lost, and the
    database's error, quoting the body, went to the log.
    """
    if not any("\x00" in value for value in params.values()):
        return params
    if isinstance(params, TwilioParams):
        return TwilioParams((name, value.replace("\x00", "")) for name, value in params.items())
    return MultiDict(
        [(name, value.replace("\x00", "")) for name, value in params.items(multi=True)]
    )


def sign(url: str, params: dict[str, str], auth_token: str) -> str:
    """The signature Twilio would send for these params; for `telephony simulate`."""
    return str(RequestValidator(auth_token).compute_signature(url, params))
