"""The Twilio gateway: the only module that talks to Twilio's REST API."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
import twilio
from twilio.base.domain import Domain
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.base.version import Version
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError

from telephony_service.domain.phones import mask_phone
from telephony_service.gateways.base import (
    GatewayError,
    MessageRecord,
    OutboundCall,
    OutboundSms,
    PlacedCall,
    SentMessage,
    is_permanent,
    redact,
)
from telephony_service.parsing import int_or_none

log = logging.getLogger(__name__)

TWILIO_API_BASE_URL = "https://api.twilio.com"
# One page, newest first; a practice number and one patient never exchange anywhere near this
# many texts in the window a reconciliation looks at.
LIST_LIMIT = 200

_T = TypeVar("_T")

_JSON_TYPES = ("application/json", "application/scim+json")
# Prepared requests kept by URL (a text's, a call's, a fetch's): a handful in practice.
_TEMPLATES_KEPT = 32

# Raised before anything goes on the wire.
_NOT_SENT = (
    requests.exceptions.ConnectTimeout,
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
)


class _RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """Twilio's HTTP client, sending to another base URL (a regional edge or a local mock).

    twilio builds every URL as "https://api.twilio.com/2010-04-01/..." with no setting for the
    scheme or host, so the prefix is swapped here, where each request passes.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        # Without a timeout twilio waits on a silent connection forever, holding the worker.
        super().__init__(timeout=timeout)
        self._base_url = base_url
        # requests reads the proxy and CA-bundle variables from the environment on every
        # request (a quarter of a millisecond, a tenth of a send's CPU). Every request goes to
        # this one host and the environment does not change under a running process, so
        # they are read once, here, for that host.
        session = self.session
        found = session.merge_environment_settings(base_url, {}, None, None, None)
        session.trust_env = False
        session.proxies = found["proxies"]
        session.verify = found["verify"]
        self._templates: dict[tuple[Any, ...], requests.PreparedRequest] = {}

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """What TwilioHttpClient.request does, straight through the connection pool.

        requests' Session.send adds cookie jars, hooks, redirect handling and settings
        merging around the adapter (a fifth of a send's CPU): Twilio's API sets no cookies,
        twilio never follows redirects, and the settings were merged once above.
        """
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        if allow_redirects:  # twilio never asks; the full path handles it if it ever does
            return super().request(
                method, url, params, data, headers, auth, timeout, allow_redirects
            )
        if self._base_url != TWILIO_API_BASE_URL and (
            url == TWILIO_API_BASE_URL or url.startswith(TWILIO_API_BASE_URL + "/")
        ):
            url = self._base_url + url[len(TWILIO_API_BASE_URL) :]
        json_body = headers is not None and headers.get("Content-Type") in _JSON_TYPES
        if params or json_body:
            body = {"json": data} if json_body else {"data": data}
            prepared = requests.PreparedRequest()
            prepared.prepare(
                method=method.upper(), url=url, headers=headers, params=params, auth=auth, **body
            )
        else:
            prepared = self._form_request(method, url, data, headers, auth)
        session = self.session
        response = session.get_adapter(url).send(
            prepared, timeout=timeout, verify=session.verify, proxies=session.proxies
        )
        return Response(int(response.status_code), response.text, response.headers)

    def _form_request(
        self,
        method: str,
        url: str,
        data: dict[str, object] | None,
        headers: dict[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> requests.PreparedRequest:
        """What PreparedRequest.prepare makes of a form post (a text, a call), for about
        0.25 ms less CPU here (a twentieth of a send's). All but the body is the same on
        every post to one URL, so requests prepares that once and it is copied; the body is
        encoded as requests encodes a dict (urlencode with doseq, UTF-8)."""
        key = (method, url, tuple(sorted(headers.items())) if headers else (), auth)
        template = self._templates.get(key)
        if template is None:
            template = requests.PreparedRequest()
            template.prepare(method=method.upper(), url=url, headers=headers, auth=auth)
            if len(self._templates) >= _TEMPLATES_KEPT:
                self._templates.clear()
            self._templates[key] = template
        prepared = template.copy()
        if data:
            form = urlencode(data, doseq=True)
            prepared.body = form
            prepared.headers["Content-Length"] = str(len(form))
            prepared.headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return prepared

    # twilio logs each request's query string at INFO, and message lists are queried by
    # phone number; the gateway logs its own masked line instead.
    def log_request(self, kwargs: dict[str, Any]) -> None:
        pass

    def log_response(self, status_code: int, response: Any) -> None:
        pass


_ACCOUNT_PACKAGE = "twilio.rest.api.v2010.account"


def _account_resource(name: str) -> ModuleType | None:
    """One resource module of twilio's 2010-04-01 account (message, call), loaded without
    its package.

    The account package's `__init__` imports all of its 40-odd resources (addresses,
    conferences, SIP domains, usage records ...): about 7 MB in every worker, to use two.
    A resource module imports only twilio.base and its own subresources, so it is loaded
    here from its own files, under its own name. If something imports the account package
    later, the package finds this module already loaded and uses it. None if this twilio
    release lays its files out otherwise (the caller then goes through the Client).
    """
    full_name = f"{_ACCOUNT_PACKAGE}.{name}"
    module = sys.modules.get(full_name)
    if module is not None:
        return module
    directory = Path(twilio.__file__).parent / "rest" / "api" / "v2010" / "account" / name
    spec = importlib.util.spec_from_file_location(
        full_name, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    if spec is None or spec.loader is None or not (directory / "__init__.py").is_file():
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full_name]
        raise
    return module


class TwilioGateway:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_base_url: str = TWILIO_API_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        http_client = _RebasedHttpClient(api_base_url.rstrip("/"), timeout)
        self._client = Client(account_sid, auth_token, http_client=http_client)
        # twilio also reads TWILIO_EDGE and TWILIO_REGION from the environment and then rewrites
        # the host itself; TWILIO_API_BASE_URL is this service's one way to pick a region, so a
        # stray variable must not send requests elsewhere.
        self._client.edge = None
        self._client.region = None
        # What client.messages and client.calls are (Api's 2010-04-01 version, the account's
        # lists), built without the account package; see _account_resource.
        api = Version(Domain(self._client, TWILIO_API_BASE_URL), "2010-04-01")
        messages, calls = _account_resource("message"), _account_resource("call")
        if messages is not None and calls is not None:
            self._messages = messages.MessageList(api, account_sid)
            self._calls = calls.CallList(api, account_sid)
        else:  # pragma: no cover - a twilio release laid out differently
            self._messages = self._client.messages
            self._calls = self._client.calls

    def send_sms(self, sms: OutboundSms) -> SentMessage:
        message = self._send(
            "sms",
            sms.to,
            lambda: self._messages.create(
                to=sms.to,
                from_=sms.from_,
                body=sms.body,
                status_callback=sms.status_callback,
            ),
        )
        # The outbox logs the send at INFO with its own id (one line a text is plenty).
        log.debug("sms %s to %s: %s", message.sid, mask_phone(sms.to), message.status)
        return SentMessage(sid=str(message.sid), status=str(message.status))

    def place_call(self, call: OutboundCall) -> PlacedCall:
        placed = self._send(
            "call",
            call.to,
            lambda: self._calls.create(
                to=call.to,
                from_=call.from_,
                url=call.url,
                status_callback=call.status_callback,
                # Twilio ignores the events without a callback URL to send them to.
                status_callback_event=(
                    list(call.status_callback_events) if call.status_callback else None
                ),
                timeout=call.timeout_seconds,
                machine_detection=call.machine_detection,
            ),
        )
        log.info("call %s to %s: %s", placed.sid, mask_phone(call.to), placed.status)
        return PlacedCall(sid=str(placed.sid), status=str(placed.status))

    def list_messages(self, *, to: str, from_: str, sent_after: datetime) -> list[MessageRecord]:
        if sent_after.tzinfo is None:
            raise ValueError("sent_after must be timezone-aware")
        # Twilio keeps whole seconds.
        since = sent_after.astimezone(UTC).replace(microsecond=0)
        # Not filtered with DateSent at Twilio: a message still queued has no date_sent yet, so
        # the very send being reconciled would be missing and get sent twice.
        try:
            found = self._messages.list(to=to, from_=from_, limit=LIST_LIMIT)
        except Exception as exc:
            error = _gateway_error(exc, "message list", wrote=False)
            if error is None:
                raise
            log.warning("%s (to %s)", error.message, mask_phone(to))
            raise error from None
        return [
            MessageRecord(
                sid=str(item.sid),
                to=str(item.to),
                from_=str(item.from_),
                body=item.body or "",
                status=str(item.status),
                date_created=item.date_created,
            )
            for item in found
            # A record without a creation time is kept: for a reconciliation, a possible match
            # is safer than a missed one.
            if item.date_created is None or item.date_created >= since
        ]

    def _send(self, what: str, to: str, create: Callable[[], _T]) -> _T:
        try:
            return create()
        except Exception as exc:
            error = _gateway_error(exc, what, wrote=True)
            if error is None:
                raise
            log.warning(
                "%s (to %s, permanent=%s, outcome_unknown=%s)",
                error.message,
                mask_phone(to),
                error.permanent,
                error.outcome_unknown,
            )
            # Not chained: twilio's and requests' messages carry URLs and phone numbers, and
            # the traceback ends up in the failed-job registry.
            raise error from None


def _gateway_error(exc: Exception, what: str, *, wrote: bool) -> GatewayError | None:
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        return _refusal(exc, what, wrote=wrote)
    if isinstance(exc, TwilioException) and len(exc.args) > 1 and hasattr(exc.args[1], "text"):
        # A list page that failed comes as a bare TwilioException carrying the response.
        page = Version.exception("GET", "", exc.args[1], "Unable to fetch page")
        return _refusal(page, what, wrote=False)
    if isinstance(exc, requests.RequestException):
        sent = wrote and not _never_sent(exc)
        return GatewayError(
            f"{what}: {type(exc).__name__}: {redact(str(exc))}",
            permanent=False,
            outcome_unknown=sent,
        )
    if isinstance(exc, json.JSONDecodeError):
        # A 2xx answer we cannot read: Twilio took the request but we have no SID for it.
        return GatewayError(
            f"{what}: unreadable response from Twilio", permanent=False, outcome_unknown=wrote
        )
    return None


def _refusal(
    exc: TwilioRestException | TwilioServiceException, what: str, *, wrote: bool
) -> GatewayError:
    status = int_or_none(exc.status)
    code = int_or_none(exc.code)
    if code == status:
        # twilio fills in the HTTP status when the body has no Twilio error code.
        code = None
    detail = (exc.detail or exc.title) if isinstance(exc, TwilioServiceException) else exc.msg
    return GatewayError(
        f"{what}: HTTP {status} code {code}: {redact(str(detail))}",
        permanent=is_permanent(code, status),
        code=code,
        status=status,
        # A 500 or a gateway timeout may come after Twilio created the message; only a
        # 503 (overloaded, turned away at the door) is known not to have.
        outcome_unknown=wrote and status is not None and status >= 500 and status != 503,
    )


def _never_sent(exc: requests.RequestException) -> bool:
    if isinstance(exc, _NOT_SENT):
        return True
    # Refused or unresolvable: no connection, so no request. Anything else (reset, dropped,
    # read timeout, TLS trouble) may have reached Twilio first.
    reason = exc.args[0] if exc.args else None
    return (
        isinstance(exc, requests.ConnectionError)
        and isinstance(reason, MaxRetryError)
        and isinstance(reason.reason, NewConnectionError)
    )
