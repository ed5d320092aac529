"""A local Twilio-compatible REST API, for tests that run real processes and for benchmarks.

    python -m bench.fake_twilio --port N --auth-token T [--account-sid AC...]
        [--no-callbacks] [--callback-delay 0.05]

prints one JSON line, {"url": "http://127.0.0.1:N"}, once it listens (--port 0 picks a free
port); point TWILIO_API_BASE_URL at that URL. SIGTERM or Ctrl-C stops it.

It answers the part of Twilio's 2010-04-01 API the service uses, in Twilio's shapes (see
tests/data/twilio-oai): Messages create, list (To, From, DateSent, DateSent<, DateSent>,
PageSize, Page) and fetch; Calls create and fetch. Requests need HTTP Basic auth with the
account SID (any well-formed one unless --account-sid is given) and the auth token. A
message accepted goes "sent" and then "delivered", callback_delay apart; with callbacks on,
each step is POSTed to its StatusCallback, signed like Twilio does.

A call created with callbacks on is played like Twilio plays one, callback_delay after it
is created: its StatusCallback gets the events asked for (StatusCallbackEvent: initiated,
ringing, answered as CallStatus=in-progress, completed); its Url is fetched (a signed POST
with CallSid and CallStatus=in-progress) and the TwiML answered is run: <Say> and <Pause>
are skipped, <Gather> posts the configured digits to its action (none: the call falls
through to the next verb, as when nobody presses a key), <Dial><Number> posts the
Number's status callbacks for its statusCallbackEvent list (and, once it is answered, the
configured AnsweredBy to its amdStatusCallback if it asked for machineDetection) and then
the Dial's action with the configured DialCallStatus, <Redirect> fetches its URL,
<Hangup> ends the call. Then the call is completed and its last status callback posted.
Every such webhook is kept (GET /_fake/webhooks). With callbacks off, calls stay "queued".

Control API (JSON, outside /2010-04-01, no auth):
    POST /_fake/calls     {"digits": "1" or null, "dial_status": "completed", "duration": 42,
                           "answered_by": null or "machine_start"}: how the next calls go
                           (the agent's key, the dialled party's answer); keys left out keep
                           their value
    GET  /_fake/webhooks  {"webhooks": [{"kind", "at", "url", "params", "status"}, ...]}: the
                           calls' webhooks in the order posted; kind is call_status, call_url,
                           gather_action, number_status, amd_status, dial_action or redirect
    POST /_fake/faults    {"messages": [fault, ...], "calls": [fault, ...],
                           "messages_error_for": {"+1...": fault or null},
                           "calls_error_for": {...}}
        Lists are appended to a FIFO per kind, one fault taken by each create request.
        A fault: {"status": 429, "code": 20429, "message": "..."} answers that error (nothing
        is created; "body" instead of code/message answers that raw text); {"delay": 2.0}
        waits before answering (the message is created at arrival, so a client that timed
        out can find it); {"drop_after_accept": true} creates the message and closes the
        connection without an answer. "delay" combines with either of the others.
        "..._error_for" always answers that error for that To (null removes it).
    GET  /_fake/requests[?kind=message]  {"requests": [{"kind", "at", "form", "sid",
                                          "status"}, ...]} in arrival order
    GET  /_fake/counts    {"messages", "calls", "per_to", "per_from", "calls_per_to",
                           "refused", "callbacks_sent", "callbacks_failed"}
    POST /_fake/reset     forgets requests, messages, calls, faults and pending callbacks

Recorded kinds: "message" and "call" (creates; sid set when created), "message_list",
"message_fetch", "call_fetch". "at" is time.time() at arrival, "form" the form or query as
lists of values, "status" the HTTP status answered (null when the connection was dropped).
Counts: messages and calls created (dropped and delayed ones included, as Twilio has them);
per_to and per_from count messages; refused counts error answers to creates; calls_played
counts calls played to their end; webhooks_failed counts call webhooks not answered 2xx.

In-process: `with FakeTwilio(auth_token=...) as fake:` (or start()/stop()); see the class.

Standard library only, apart from twilio's RequestValidator for signing callbacks.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import heapq
import json
import queue
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
CALLBACK_DELAY = 0.05
# Twilio waits 15 s for a webhook answer.
CALLBACK_TIMEOUT = 15.0
CALLBACK_THREADS = 4
STATUS_TICK = 0.005
KINDS = ("messages", "calls")

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_DEFAULT_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
_DIAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Verbs after which nothing more of a TwiML document runs.
_MAX_TWIML_STEPS = 20
_FAULT_KEYS = frozenset({"status", "code", "message", "body", "delay", "drop_after_accept"})
_JSON = "application/json"
_KIND_OF_ROUTE = {
    ("POST", "Messages.json"): "message",
    ("POST", "Calls.json"): "call",
    ("GET", "Messages.json"): "message_list",
    ("GET", "Messages"): "message_fetch",
    ("GET", "Calls"): "call_fetch",
}

# GSM 03.38: the basic set, and the extension set whose characters take two septets.
_GSM = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Recorded:
    kind: str
    at: float
    form: dict[str, list[str]]
    sid: str | None
    status: int | None


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    code: int | None = None
    message: str | None = None
    body: str | None = None
    delay: float = 0.0
    drop_after_accept: bool = False

    @classmethod
    def parse(cls, spec: object) -> Fault:
        if not isinstance(spec, Mapping) or not spec:
            raise ValueError(f"a fault is a non-empty JSON object, got {spec!r}")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}; known: {sorted(_FAULT_KEYS)}")
        fault = cls(**spec)
        for name, kind in (("code", int), ("message", str), ("body", str)):
            if getattr(fault, name) is not None and not isinstance(getattr(fault, name), kind):
                raise ValueError(f"fault {name} must be a {kind.__name__}")
        if fault.status is not None and not (
            type(fault.status) is int and 400 <= fault.status <= 599
        ):
            raise ValueError(f"a fault status is an HTTP error status, got {fault.status!r}")
        if fault.status is None and (fault.code, fault.message, fault.body) != (None,) * 3:
            raise ValueError("code, message and body need a status")
        if fault.status is not None and fault.drop_after_accept:
            raise ValueError("a fault either answers an error or drops after accepting")
        if not isinstance(fault.delay, int | float) or fault.delay < 0:
            raise ValueError(f"delay is a number of seconds, got {fault.delay!r}")
        return fault


@dataclass
class _Answer:
    status: int | None  # None: close the connection without answering
    body: bytes = b""
    content_type: str = _JSON
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Message:
    resource: dict[str, Any]
    sent: float | None = None
    status_callback: str | None = None


@dataclass
class _State:
    records: list[Recorded] = field(default_factory=list)
    messages: dict[str, _Message] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, deque[Fault]] = field(
        default_factory=lambda: {kind: deque() for kind in KINDS}
    )
    error_for: dict[str, dict[str, Fault]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    per_to: Counter[str] = field(default_factory=Counter)
    per_from: Counter[str] = field(default_factory=Counter)
    calls_per_to: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    webhooks: list[Webhook] = field(default_factory=list)
    webhooks_failed: int = 0
    calls_played: int = 0


@dataclass(frozen=True)
class Webhook:
    """A webhook the fake posted for a call, and the HTTP status it was answered with."""

    kind: str
    at: float
    url: str
    params: dict[str, str]
    status: int | None


@dataclass
class CallScript:
    """How the people on a call behave: the key the answerer presses at a <Gather> (None:
    no key), how a <Dial>led number answers, and what machine detection says of whoever
    answered it (answered_by: "human", "machine_start", "fax"...; None: no verdict)."""

    digits: str | None = "1"
    dial_status: str = "completed"
    duration: int = 42
    answered_by: str | None = None

    def update(self, spec: Mapping[str, Any]) -> None:
        unknown = set(spec) - {"digits", "dial_status", "duration", "answered_by"}
        if unknown:
            raise ValueError(f"unknown call settings {sorted(unknown)}")
        digits = spec.get("digits", self.digits)
        dial_status = spec.get("dial_status", self.dial_status)
        duration = spec.get("duration", self.duration)
        answered_by = spec.get("answered_by", self.answered_by)
        if digits is not None and not (isinstance(digits, str) and digits):
            raise ValueError("digits is a non-empty string or null")
        if dial_status not in _DIAL_STATUSES:
            raise ValueError(f"dial_status is one of {sorted(_DIAL_STATUSES)}")
        if type(duration) is not int or duration < 0:
            raise ValueError("duration is a whole number of seconds")
        if answered_by is not None and not isinstance(answered_by, str):
            raise ValueError("answered_by is a string or null")
        self.digits, self.dial_status = digits, dial_status
        self.duration, self.answered_by = duration, answered_by


class FakeTwilio:
    """The fake, in process: `start()` binds 127.0.0.1 (port 0: a free one) and serves from a
    thread. Faults take the same mappings as the control API:

        with FakeTwilio(auth_token=AUTH_TOKEN) as fake:   # fake.url is the base URL
            fake.fail_next({"status": 429, "code": 20429}, {"drop_after_accept": True})
            fake.fail_for("+12025550143", status=400, code=21610)
            ...
            fake.wait_for(lambda: fake.counts()["callbacks_sent"] == 2)
    """

    def __init__(
        self,
        *,
        auth_token: str,
        account_sid: str | None = None,
        callbacks: bool = True,
        callback_delay: float = CALLBACK_DELAY,
        port: int = 0,
    ) -> None:
        if account_sid is not None and not _ACCOUNT_SID.fullmatch(account_sid):
            raise ValueError(f"not an account SID: {account_sid!r}")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.callbacks = callbacks
        self.callback_delay = callback_delay
        self.port = port
        self.url = ""
        self._validator = RequestValidator(auth_token)
        # One lock for all state; notified on every change, for wait_for.
        self._changed = threading.Condition()
        self._state = _State()
        self._due: list[tuple[float, int, str, str]] = []  # (when, seq, message sid, status)
        self._due_changed = threading.Condition()
        self._seq = 0
        # Callbacks to POST: (url, params, message sid, status), or None to stop a sender.
        self._outbox: queue.SimpleQueue[tuple[str, dict[str, str], str, str] | None] = (
            queue.SimpleQueue()
        )
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self.call_script = CallScript()

    # Life cycle

    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), self, self._stopping)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        serving = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the accept loop
            name="fake-twilio",
            daemon=True,
        )
        scheduler = threading.Thread(target=self._progress, name="fake-twilio-status", daemon=True)
        self._threads = [serving, scheduler] + [
            threading.Thread(target=self._send, name=f"fake-twilio-callbacks-{n}", daemon=True)
            for n in range(CALLBACK_THREADS)
        ]
        for thread in self._threads:
            thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._due_changed:
            self._due_changed.notify_all()
        for _ in range(CALLBACK_THREADS):
            self._outbox.put(None)
        server.shutdown()
        server.close_connections()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads = []

    def __enter__(self) -> FakeTwilio:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Faults and inspection

    def fail_next(self, *faults: Mapping[str, Any], kind: str = "messages") -> None:
        """Queue faults, one taken by each create request of that kind ("messages", "calls")."""
        self.set_faults({kind: list(faults)})

    def fail_for(
        self,
        to: str,
        *,
        status: int,
        code: int | None = None,
        message: str | None = None,
        kind: str = "messages",
    ) -> None:
        """Answer this error to every create request to `to`."""
        spec = {"status": status, "code": code, "message": message}
        self.set_faults({f"{kind}_error_for": {to: spec}})

    def set_faults(self, spec: Mapping[str, Any]) -> None:
        """What POST /_fake/faults takes; raises ValueError, changing nothing, if it is wrong."""
        if not isinstance(spec, Mapping):
            raise ValueError("faults are a JSON object")
        queued: dict[str, list[Fault]] = {}
        per_to: dict[str, dict[str, Fault | None]] = {}
        for key, value in spec.items():
            if key in KINDS and isinstance(value, list):
                queued[key] = [Fault.parse(item) for item in value]
            elif (
                key.endswith("_error_for")
                and key.removesuffix("_error_for") in KINDS
                and isinstance(value, Mapping)
            ):
                per_to[key.removesuffix("_error_for")] = {
                    str(to): None if item is None else Fault.parse(_without_nulls(item))
                    for to, item in value.items()
                }
            else:
                raise ValueError(
                    f"unknown fault setting {key!r}: expected messages or calls (lists) or "
                    "messages_error_for or calls_error_for (objects)"
                )
        for faults in per_to.values():
            if any(fault is not None and fault.status is None for fault in faults.values()):
                raise ValueError("an ..._error_for fault needs a status")
        with self._changed:
            for kind, faults_in_order in queued.items():
                self._state.faults[kind].extend(faults_in_order)
            for kind, by_to in per_to.items():
                for to, fault in by_to.items():
                    if fault is None:
                        self._state.error_for[kind].pop(to, None)
                    else:
                        self._state.error_for[kind][to] = fault

    def reset(self) -> None:
        with self._due_changed:
            self._due.clear()
        # Callbacks handed to the senders but not taken yet (a POST under way still goes out).
        with contextlib.suppress(queue.Empty):
            while self._outbox.get_nowait() is not None:
                pass
            self._outbox.put(None)  # a sender's stop signal, taken by mistake: give it back
        with self._changed:
            self._state = _State()
            self._changed.notify_all()

    @property
    def requests(self) -> list[Recorded]:
        with self._changed:
            return list(self._state.records)

    def counts(self) -> dict[str, Any]:
        with self._changed:
            state = self._state
            return {
                "messages": len(state.messages),
                "calls": len(state.calls),
                "per_to": dict(state.per_to),
                "per_from": dict(state.per_from),
                "calls_per_to": dict(state.calls_per_to),
                "refused": state.refused,
                "callbacks_sent": state.callbacks_sent,
                "callbacks_failed": state.callbacks_failed,
                "calls_played": state.calls_played,
                "webhooks_failed": state.webhooks_failed,
            }

    @property
    def webhooks(self) -> list[Webhook]:
        with self._changed:
            return list(self._state.webhooks)

    def script_calls(self, **spec: Any) -> None:
        """How the next calls go: digits, dial_status, duration, answered_by (see CallScript)."""
        with self._changed:
            self.call_script.update(spec)

    def call(self, sid: str) -> dict[str, Any] | None:
        """The call resource as Twilio would show it now."""
        with self._changed:
            found = self._state.calls.get(sid)
            return None if found is None else dict(found)

    def message(self, sid: str) -> dict[str, Any] | None:
        """The message resource as Twilio would show it now."""
        with self._changed:
            found = self._state.messages.get(sid)
            return None if found is None else dict(found.resource)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `condition()` holds (checked on every change); TimeoutError if it won't."""
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise TimeoutError(f"not true within {timeout} s")

    # The HTTP side, called by the handler's threads

    def answer(self, method: str, path: str, query: str, body: bytes, auth: str | None) -> _Answer:
        at = time.time()
        if path.startswith("/_fake/"):
            return self._control(method, path, query, body)
        parts = path.split("/")
        # ["", "2010-04-01", "Accounts", AccountSid, resource...]
        if len(parts) < 5 or parts[1] != API_VERSION or parts[2] != "Accounts":
            return _error(404, 20404, f"The requested resource {path} was not found")
        account = parts[3]
        route = (method, *parts[4:])
        if not self._authenticated(account, auth):
            kind = _KIND_OF_ROUTE.get((method, parts[4]), "unknown")
            form = _form(body if method == "POST" else query.encode())
            self._record(Recorded(kind, at, form, None, 401), refused=kind in ("message", "call"))
            return _error(
                401,
                20003,
                "Authentication Error - invalid username",
                headers=(("WWW-Authenticate", 'Basic realm="Twilio API"'),),
            )
        if route == ("POST", "Messages.json"):
            return self._create_message(account, _form(body), at)
        if route == ("GET", "Messages.json"):
            return self._list_messages(account, path, _form(query.encode()), at)
        if route == ("POST", "Calls.json"):
            return self._create_call(account, _form(body), at)
        if len(route) == 3 and route[0] == "GET" and route[1] in ("Messages", "Calls"):
            return self._fetch(route[1], route[2].removesuffix(".json"), path, at)
        return _error(404, 20404, f"The requested resource {path} was not found")

    def _authenticated(self, account: str, auth: str | None) -> bool:
        if not auth or not auth.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(auth[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.account_sid or (account if _ACCOUNT_SID.fullmatch(account) else None)
        return user == account == expected and token == self.auth_token

    def _record(self, record: Recorded, *, refused: bool = False) -> None:
        with self._changed:
            self._state.records.append(record)
            self._state.refused += refused
            self._changed.notify_all()

    def _take_fault(self, kind: str) -> Fault | None:
        with self._changed:
            faults = self._state.faults[kind]
            return faults.popleft() if faults else None

    def _refuse(
        self, kind: str, form: dict[str, list[str]], at: float, fault: Fault, delay: float = 0.0
    ) -> _Answer:
        status = fault.status or 400
        if fault.body is not None:
            answer = _Answer(status, fault.body.encode(), "text/plain; charset=utf-8")
        else:
            code = fault.code or _DEFAULT_CODES.get(status, status)
            answer = _error(status, code, fault.message or _phrase(status))
        answer.delay = delay
        self._record(Recorded(kind, at, form, None, status), refused=True)
        return answer

    def _create_message(self, account: str, form: dict[str, list[str]], at: float) -> _Answer:
        fault = self._take_fault("messages") or Fault()
        if fault.status is not None:
            return self._refuse("message", form, at, fault, fault.delay)
        to, from_ = _first(form, "To"), _first(form, "From")
        service, text = _first(form, "MessagingServiceSid"), _first(form, "Body")
        media = form.get("MediaUrl", [])
        with self._changed:
            always = self._state.error_for["messages"].get(to or "")
        refusal = always or _message_refusal(to, from_, service, text, media, form)
        if refusal is not None:
            return self._refuse("message", form, at, refusal, fault.delay + refusal.delay)
        sid = "SM" + uuid.uuid4().hex
        created = _rfc2822(at)
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json"
        resource = {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": text or "",
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": str(_segments(text or "")),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Twilio picks the sender later when only a Messaging Service is given.
            "status": "queued" if from_ else "accepted",
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": to,
            "uri": uri,
        }
        status = None if fault.drop_after_accept else 201
        with self._changed:
            state = self._state
            state.messages[sid] = _Message(resource, status_callback=_first(form, "StatusCallback"))
            state.records.append(Recorded("message", at, form, sid, status))
            state.per_to[to or ""] += 1
            if from_:
                state.per_from[from_] += 1
            answer = _Answer(status, json.dumps(resource).encode(), delay=fault.delay)
            self._changed.notify_all()
        self._schedule(at + self.callback_delay, sid, "sent")
        return answer

    def _create_call(self, account: str, form: dict[str, list[str]], at: float) -> _Answer:
        fault = self._take_fault("calls") or Fault()
        if fault.status is not None:
            return self._refuse("call", form, at, fault, fault.delay)
        to, from_ = _first(form, "To"), _first(form, "From")
        with self._changed:
            always = self._state.error_for["calls"].get(to or "")
        refusal = always or _call_refusal(to, from_, form)
        if refusal is not None:
            return self._refuse("call", form, at, refusal, fault.delay + refusal.delay)
        sid = "CA" + uuid.uuid4().hex
        created = _rfc2822(at)
        uri = f"/{API_VERSION}/Accounts/{account}/Calls/{sid}.json"
        base = uri.removesuffix(".json")
        resource = {
            "account_sid": account,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": created,
            "date_updated": created,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + uuid.uuid5(uuid.NAMESPACE_URL, from_ or "").hex,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                name: f"{base}/{name.title()}.json"
                for name in ("notifications", "recordings", "events", "streams")
            },
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": uri,
        }
        status = None if fault.drop_after_accept else 201
        with self._changed:
            self._state.calls[sid] = resource
            self._state.records.append(Recorded("call", at, form, sid, status))
            self._state.calls_per_to[to or ""] += 1
            answer = _Answer(status, json.dumps(resource).encode(), delay=fault.delay)
            script = CallScript(**asdict(self.call_script))
            self._changed.notify_all()
        if self.callbacks:
            threading.Thread(
                target=self._play_call,
                args=(sid, form, script),
                name=f"fake-twilio-call-{sid[-6:]}",
                daemon=True,
            ).start()
        return answer

    def _list_messages(
        self, account: str, path: str, query: dict[str, list[str]], at: float
    ) -> _Answer:
        try:
            size = int(_first(query, "PageSize") or 50)
            page = int(_first(query, "Page") or 0)
            sent_filters = [
                _sent_range(key, _first(query, key) or "")
                for key in ("DateSent", "DateSent<", "DateSent>")
                if key in query
            ]
        except ValueError as exc:
            answer = _error(400, 20001, f"Invalid parameter: {exc}")
        else:
            if not 1 <= size <= 1000 or page < 0:
                answer = _error(400, 20001, "PageSize must be 1 to 1000 and Page 0 or more")
            else:
                answer = self._page(account, path, query, size, page, sent_filters)
        self._record(Recorded("message_list", at, query, None, answer.status))
        return answer

    def _page(
        self,
        account: str,
        path: str,
        query: dict[str, list[str]],
        size: int,
        page: int,
        sent_ranges: list[tuple[float, float]],
    ) -> _Answer:
        to, from_ = _first(query, "To"), _first(query, "From")
        with self._changed:
            # Newest first, as Twilio lists them.
            matching = [
                message.resource
                for message in reversed(self._state.messages.values())
                if (to is None or message.resource["to"] == to)
                and (from_ is None or message.resource["from"] == from_)
                and all(_sent_within(message.sent, low, high) for low, high in sent_ranges)
            ]
            start = page * size
            items = [dict(resource) for resource in matching[start : start + size]]
        kept = [
            (key, value)
            for key, values in query.items()
            if key not in ("PageSize", "Page", "PageToken")
            for value in values
        ]

        def uri(number: int) -> str:
            params = [*kept, ("PageSize", str(size)), ("Page", str(number))]
            if number > 0:
                params.append(("PageToken", f"PA{number}"))
            return f"{path}?{urlencode(params)}"

        more = start + size < len(matching)
        listing = {
            "end": start + max(len(items) - 1, 0),
            "first_page_uri": uri(0),
            "messages": items,
            "next_page_uri": uri(page + 1) if more else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": uri(page),
        }
        return _Answer(200, json.dumps(listing).encode())

    def _fetch(self, collection: str, sid: str, path: str, at: float) -> _Answer:
        with self._changed:
            if collection == "Messages":
                message = self._state.messages.get(sid)
                resource = None if message is None else message.resource
            else:
                resource = self._state.calls.get(sid)
            found = None if resource is None else json.dumps(resource).encode()
            kind = "message_fetch" if collection == "Messages" else "call_fetch"
        answer = (
            _error(404, 20404, f"The requested resource {path} was not found")
            if found is None
            else _Answer(200, found)
        )
        self._record(Recorded(kind, at, {}, sid, answer.status))
        return answer

    def _control(self, method: str, path: str, query: str, body: bytes) -> _Answer:
        if (method, path) == ("POST", "/_fake/faults"):
            try:
                self.set_faults(json.loads(body or b"null"))
            except ValueError as exc:
                return _Answer(400, json.dumps({"error": str(exc)}).encode())
            with self._changed:
                queued = {kind: len(faults) for kind, faults in self._state.faults.items()}
            return _Answer(200, json.dumps({"queued": queued}).encode())
        if (method, path) == ("GET", "/_fake/requests"):
            kind = _first(_form(query.encode()), "kind")
            found = [asdict(r) for r in self.requests if kind is None or r.kind == kind]
            return _Answer(200, json.dumps({"requests": found}).encode())
        if (method, path) == ("POST", "/_fake/calls"):
            try:
                spec = json.loads(body or b"null")
                if not isinstance(spec, Mapping):
                    raise ValueError("call settings are a JSON object")
                self.script_calls(**spec)
            except ValueError as exc:
                return _Answer(400, json.dumps({"error": str(exc)}).encode())
            return _Answer(200, json.dumps(asdict(self.call_script)).encode())
        if (method, path) == ("GET", "/_fake/webhooks"):
            found = [asdict(webhook) for webhook in self.webhooks]
            return _Answer(200, json.dumps({"webhooks": found}).encode())
        if (method, path) == ("GET", "/_fake/counts"):
            return _Answer(200, json.dumps(self.counts()).encode())
        if (method, path) == ("POST", "/_fake/reset"):
            self.reset()
            return _Answer(200, b"{}")
        return _Answer(404, json.dumps({"error": f"no control {method} {path}"}).encode())

    # Status progression and callbacks

    def _schedule(self, when: float, sid: str, status: str) -> None:
        with self._due_changed:
            self._seq += 1
            heapq.heappush(self._due, (when, self._seq, sid, status))
            # Due times mostly only grow: the scheduler need not wake for each message.
            if self._due[0][1] == self._seq:
                self._due_changed.notify()

    def _progress(self) -> None:
        """Move messages on to sent and delivered when due, handing callbacks to the senders."""
        while True:
            with self._due_changed:
                while not self._stopping.is_set():
                    wait = self._due[0][0] - time.time() if self._due else None
                    if wait is not None and wait <= 0:
                        break
                    # At least a tick: one wake-up moves all the messages due by then.
                    self._due_changed.wait(None if wait is None else max(wait, STATUS_TICK))
                if self._stopping.is_set():
                    return
                now = time.time()
                due = []
                while self._due and self._due[0][0] <= now:
                    due.append(heapq.heappop(self._due))
            for _, _, sid, status in due:
                callback = self._advance(sid, status)
                if callback is not None:
                    self._outbox.put((*callback, sid, status))
                elif status == "sent":
                    self._schedule(now + self.callback_delay, sid, "delivered")

    def _send(self) -> None:
        while (item := self._outbox.get()) is not None:
            url, params, sid, status = item
            ok = self._post(url, params)
            with self._changed:
                if ok:
                    self._state.callbacks_sent += 1
                else:
                    self._state.callbacks_failed += 1
                self._changed.notify_all()
            if status == "sent":
                # Only once the "sent" callback is answered: Twilio's order, kept per message.
                self._schedule(time.time() + self.callback_delay, sid, "delivered")

    def _advance(self, sid: str, status: str) -> tuple[str, dict[str, str]] | None:
        now = time.time()
        with self._changed:
            message = self._state.messages.get(sid)
            if message is None:  # reset meanwhile
                return None
            resource = message.resource
            resource["status"] = status
            resource["date_updated"] = _rfc2822(now)
            if status == "sent":
                message.sent = now
                resource["date_sent"] = resource["date_updated"]
            self._changed.notify_all()
            if not (self.callbacks and message.status_callback):
                return None
            params = {
                "AccountSid": resource["account_sid"],
                "ApiVersion": API_VERSION,
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": resource["to"],
            }
            if resource["from"]:
                params["From"] = resource["from"]
            if resource["messaging_service_sid"]:
                params["MessagingServiceSid"] = resource["messaging_service_sid"]
            if status == "delivered":
                params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime(now))
            return message.status_callback, params

    def _post(self, url: str, params: dict[str, str]) -> bool:
        """POST a callback like Twilio, True if answered 2xx."""
        status, _ = self._exchange(url, params)
        return status is not None and 200 <= status < 300

    def _exchange(self, url: str, params: dict[str, str]) -> tuple[int | None, bytes]:
        """POST a webhook like Twilio: the answer's status (None: no answer) and body.

        On a bare socket: http.client costs the fake more than twice the CPU per callback.
        """
        parts = urlsplit(url)
        userinfo, _, host = parts.netloc.rpartition("@")
        body = urlencode(params).encode()
        head = [
            f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
            "User-Agent: TwilioProxy/1.1",
            f"X-Twilio-Signature: {self._validator.compute_signature(url, params)}",
            f"I-Twilio-Idempotency-Token: {uuid.uuid4()}",
            # Few app servers keep connections open (gunicorn's sync workers do not).
            "Connection: close",
        ]
        if userinfo:
            head.append("Authorization: Basic " + base64.b64encode(userinfo.encode()).decode())
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        https = parts.scheme == "https"
        try:
            address = (parts.hostname or "", parts.port or (443 if https else 80))
            connection = socket.create_connection(address, timeout=CALLBACK_TIMEOUT)
            try:
                if https:
                    context = ssl.create_default_context()
                    connection = context.wrap_socket(connection, server_hostname=address[0])
                connection.sendall(request)
                answer = b""
                # Read to the end: closing with the answer unread would reset the connection.
                while chunk := connection.recv(65536):
                    answer += chunk
            finally:
                connection.close()
        except (OSError, ValueError):
            return None, b""
        return _read_answer(answer)

    # Calls: Twilio's part of a call, played in a thread of its own per call

    def _play_call(self, sid: str, form: dict[str, list[str]], script: CallScript) -> None:
        if self._stopping.wait(self.callback_delay):
            return
        status_url = _first(form, "StatusCallback")
        events = set(form.get("StatusCallbackEvent", [])) or {"completed"}
        base = {
            "AccountSid": self._account_of(sid),
            "ApiVersion": API_VERSION,
            "CallSid": sid,
            "From": _first(form, "From") or "",
            "To": _first(form, "To") or "",
            "Called": _first(form, "To") or "",
            "Caller": _first(form, "From") or "",
            "Direction": "outbound-api",
        }
        started = time.time()
        sequence = 0

        def progress(event: str, status: str, **extra: str) -> None:
            nonlocal sequence
            self._set_call(sid, status)
            if status_url and event in events:
                params = {
                    **base,
                    "CallStatus": status,
                    "CallbackSource": "call-progress-events",
                    "SequenceNumber": str(sequence),
                    "Timestamp": _rfc2822(time.time()),
                    **extra,
                }
                sequence += 1
                self._webhook("call_status", status_url, params)

        progress("initiated", "initiated")
        progress("ringing", "ringing")
        progress("answered", "in-progress")
        url = _first(form, "Url")
        if url:
            answer = self._webhook("call_url", url, {**base, "CallStatus": "in-progress"})
            self._run_twiml(answer, base, script)
        duration = str(max(int(time.time() - started), 1))
        self._set_call(sid, "completed", duration=duration)
        progress("completed", "completed", CallDuration=duration)
        with self._changed:
            self._state.calls_played += 1
            self._changed.notify_all()

    def _run_twiml(self, document: bytes | None, base: dict[str, str], script: CallScript) -> None:
        """Run a TwiML document as Twilio would, following actions and redirects."""
        params = {**base, "CallStatus": "in-progress"}
        for _ in range(_MAX_TWIML_STEPS):
            if not document or self._stopping.is_set():
                return
            try:
                # The TwiML of the service under test, on this machine.
                verbs = list(ET.fromstring(document))  # noqa: S314
            except ET.ParseError:
                return  # Twilio says "an application error has occurred" and hangs up
            document = None
            for verb in verbs:
                if verb.tag == "Hangup":
                    return
                if verb.tag == "Gather" and script.digits is not None and verb.get("action"):
                    document = self._webhook(
                        "gather_action",
                        verb.attrib["action"],
                        {**params, "Digits": script.digits, "FinishedOnKey": ""},
                    )
                    break
                if verb.tag == "Dial":
                    result = self._dial(verb, params, script)
                    if verb.get("action"):
                        document = self._webhook("dial_action", verb.attrib["action"], result)
                        break
                if verb.tag == "Redirect" and verb.text:
                    document = self._webhook("redirect", verb.text.strip(), params)
                    break
            else:
                return  # the document ran out: Twilio hangs up

    def _dial(self, dial: ET.Element, params: dict[str, str], script: CallScript) -> dict[str, str]:
        """Ring the first <Number> of a <Dial>; the Dial's action parameters."""
        number = dial.find("Number")
        child = "CA" + uuid.uuid4().hex
        answered = script.dial_status == "completed"
        if number is not None:
            callback = number.get("statusCallback")
            events = set((number.get("statusCallbackEvent") or "completed").split())
            leg = {
                "AccountSid": params["AccountSid"],
                "ApiVersion": API_VERSION,
                "CallSid": child,
                "ParentCallSid": params["CallSid"],
                "From": dial.get("callerId") or params["From"],
                "To": (number.text or "").strip(),
                "Direction": "outbound-dial",
            }
            steps = [("initiated", "initiated"), ("ringing", "ringing")]
            if answered:
                steps.append(("answered", "in-progress"))
            steps.append(("completed", script.dial_status))
            for event, status in steps:
                if callback and event in events:
                    talked = str(script.duration) if answered else "0"
                    extra = {"CallDuration": talked} if event == "completed" else {}
                    self._webhook("number_status", callback, {**leg, "CallStatus": status, **extra})
                if event == "answered":
                    self._detect_machine(number, leg, script)
        result = {
            **params,
            "DialCallStatus": script.dial_status,
            "DialCallSid": child,
            "DialBridged": "true" if answered else "false",
        }
        if answered:
            result["DialCallDuration"] = str(script.duration)
        return result

    def _detect_machine(self, number: ET.Element, leg: dict[str, str], script: CallScript) -> None:
        """Answering machine detection on an answered <Number>: as with Twilio, AnsweredBy
        exists only when the Number asked for detection, and goes to its amdStatusCallback."""
        asked = number.get("machineDetection") in ("Enable", "DetectMessageEnd")
        url = number.get("amdStatusCallback")
        if not (asked and url and script.answered_by):
            return
        verdict = {
            "AccountSid": leg["AccountSid"],
            "CallSid": leg["CallSid"],
            "AnsweredBy": script.answered_by,
            "MachineDetectionDuration": "2400",
        }
        self._webhook("amd_status", url, verdict)

    def _webhook(self, kind: str, url: str, params: dict[str, str]) -> bytes | None:
        at = time.time()
        status, body = self._exchange(url, params)
        ok = status is not None and 200 <= status < 300
        with self._changed:
            self._state.webhooks.append(Webhook(kind, at, url, dict(params), status))
            self._state.webhooks_failed += not ok
            self._changed.notify_all()
        return body if ok else None

    def _set_call(self, sid: str, status: str, duration: str | None = None) -> None:
        now = _rfc2822(time.time())
        with self._changed:
            resource = self._state.calls.get(sid)
            if resource is None:  # reset meanwhile
                return
            resource["status"] = status
            resource["date_updated"] = now
            if status == "in-progress":
                resource["start_time"] = now
            if duration is not None:
                resource["end_time"] = now
                resource["duration"] = duration
            self._changed.notify_all()

    def _account_of(self, sid: str) -> str:
        with self._changed:
            resource = self._state.calls.get(sid)
            return str(resource["account_sid"]) if resource else (self.account_sid or "")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: twilio's requests session reuses connections
    # Headers and body go out in one write; without this, Nagle's algorithm and delayed ACKs
    # can hold an answer back for 40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.fake.answer(
            method, path, query, body, self.headers.get("Authorization")
        )
        stopping = self.server.stopping
        if answer.delay:
            stopping.wait(answer.delay)
        if answer.status is None or stopping.is_set():
            self.close_connection = True
            return
        head = [
            f"HTTP/1.1 {answer.status} {_phrase(answer.status)}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            *(f"{name}: {value}" for name, value in answer.headers),
        ]
        if self.close_connection:
            head.append("Connection: close")
        try:
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
        except OSError:  # the client gave up (a "delay" fault beyond its timeout)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections under a benchmark's burst

    def __init__(
        self, address: tuple[str, int], fake: FakeTwilio, stopping: threading.Event
    ) -> None:
        self.fake = fake
        self.stopping = stopping
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks its address up with getfqdn(), slow without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake the threads waiting on idle keep-alive connections, so they end."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _error(
    status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Answer:
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return _Answer(status, json.dumps(payload).encode(), headers=headers)


def _message_refusal(
    to: str | None,
    from_: str | None,
    service: str | None,
    text: str | None,
    media: list[str],
    form: dict[str, list[str]],
) -> Fault | None:
    if not to:
        return Fault(400, 21604, "A 'To' phone number is required.")
    if not _E164.fullmatch(to):
        return Fault(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if not from_ and not service:
        return Fault(400, 21603, "A 'From' phone number is required.")
    if from_ and not _E164.fullmatch(from_):
        return Fault(400, 21212, f"The 'From' number {from_} is not a valid phone number.")
    if not text and not media and "ContentSid" not in form:
        return Fault(400, 21602, "Message body is required.")
    return None


def _call_refusal(to: str | None, from_: str | None, form: dict[str, list[str]]) -> Fault | None:
    if not to:
        return Fault(400, 21201, "No 'To' number is specified")
    if not _E164.fullmatch(to):
        return Fault(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not from_:
        return Fault(400, 21213, "No 'From' number is specified")
    if not _E164.fullmatch(from_):
        return Fault(400, 21212, f"Invalid 'From' Phone Number: {from_}")
    if not ({"Url", "Twiml", "ApplicationSid"} & set(form)):
        return Fault(400, 21205, "Url parameter is required.")
    return None


def _read_answer(answer: bytes) -> tuple[int | None, bytes]:
    """The status and body of a raw HTTP/1.1 answer read to its end."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if not status or not status[0].isdigit():
        return None, b""
    if b"transfer-encoding: chunked" in head.lower():
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = decoded
    return int(status[0]), body


def _form(data: bytes) -> dict[str, list[str]]:
    return parse_qs(data.decode(), keep_blank_values=True)


def _first(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _without_nulls(spec: object) -> object:
    if isinstance(spec, Mapping):
        return {key: value for key, value in spec.items() if value is not None}
    return spec


def _rfc2822(at: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(at), UTC))


def _sent_range(key: str, value: str) -> tuple[float, float]:
    """The seconds [low, high) a DateSent, DateSent< (on or before) or DateSent> (on or after)
    filter keeps: a GMT date (YYYY-MM-DD) is its whole day; a date and time, its second."""
    if len(value) == 10:
        low = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        span = timedelta(days=1)
    else:
        low = datetime.fromisoformat(value)
        low = low if low.tzinfo else low.replace(tzinfo=UTC)
        span = timedelta(seconds=1)
    if key == "DateSent>":
        return low.timestamp(), float("inf")
    if key == "DateSent<":
        return float("-inf"), (low + span).timestamp()
    return low.timestamp(), (low + span).timestamp()


def _sent_within(sent: float | None, low: float, high: float) -> bool:
    # A message not yet sent has no date_sent, and no DateSent filter finds it.
    return sent is not None and low <= int(sent) < high


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _segments(text: str) -> int:
    if all(char in _GSM or char in _GSM_EXTENSION for char in text):
        units = len(text) + sum(char in _GSM_EXTENSION for char in text)
        single, part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if units <= single else -(-units // part)


def serve(
    port: int,
    auth_token: str,
    account_sid: str | None = None,
    callbacks: bool = True,
    callback_delay: float = CALLBACK_DELAY,
) -> None:
    """Serve until SIGTERM or SIGINT, after printing {"url": ...} as one JSON line."""
    fake = FakeTwilio(
        auth_token=auth_token,
        account_sid=account_sid,
        callbacks=callbacks,
        callback_delay=callback_delay,
        port=port,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    fake.start()
    try:
        print(json.dumps({"url": fake.url}), flush=True)
        while not done.wait(1.0):
            pass
    finally:
        fake.stop()


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--account-sid", help="accept only this account (default: any AC...)")
    parser.add_argument(
        "--callbacks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="POST message status callbacks (default: on)",
    )
    parser.add_argument(
        "--callback-delay",
        type=float,
        default=CALLBACK_DELAY,
        help=f"seconds from accepted to sent, and from sent to delivered ({CALLBACK_DELAY})",
    )
    args = parser.parse_args(None if argv is None else list(argv))
    serve(args.port, args.auth_token, args.account_sid, args.callbacks, args.callback_delay)


if __name__ == "__main__":
    main()
