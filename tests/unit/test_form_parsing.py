"""The webhook form parser: exactly what urllib's parse_qsl gives, from the body as sent."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlencode

import pytest
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request

from telephony_service.web.security import MAX_FIELDS, _split_form, parse_params

BODIES = [
    "",
    "CallSid=CA0123&CallStatus=completed&From=%2B12025550143&To=%2B16175550100",
    "Body=Hello+there%21+Can+you+call+me%3F&NumMedia=0",
    "Empty=&Flag&Other=1",
    "A=1&&B=2&",
    "Equation=a%3Db&Raw=x=y",
    "Name=Jos%C3%A9+%C3%81lvarez&Emoji=%F0%9F%99%8F",
    "Broken=%ZZ&Percent=100%25",
    urlencode({"Body": "STOP. please & thank you = done +1 (617) 555-0100"}),
]


@pytest.mark.parametrize("body", BODIES)
def test_it_parses_like_parse_qsl(body: str) -> None:
    assert _split_form(body) == parse_qsl(body, keep_blank_values=True)


def test_it_refuses_more_fields_than_twilio_sends() -> None:
    with pytest.raises(ValueError):
        _split_form("&".join(f"f{n}=1" for n in range(MAX_FIELDS + 1)))


class _Unreadable:
    def read(self, *args: object) -> bytes:
        raise AssertionError("an oversize body must not be read")


def _request(body: bytes, **environ: object) -> Request:
    values: dict[str, object] = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    values.update(environ)
    request = Request(values)
    request.max_content_length = 1000
    return request


def test_it_reads_a_body_of_the_given_length() -> None:
    request = _request(b"CallSid=CA1&CallStatus=completed")
    assert parse_params(request) == {"CallSid": "CA1", "CallStatus": "completed"}


def test_it_reads_a_body_without_a_length_through_werkzeug() -> None:
    # Chunked: no Content-Length; a server that ends the stream itself says so.
    request = _request(b"CallSid=CA1", CONTENT_LENGTH="", **{"wsgi.input_terminated": True})
    assert parse_params(request) == {"CallSid": "CA1"}


def test_it_refuses_an_oversize_body_without_reading_it() -> None:
    request = _request(b"", CONTENT_LENGTH="5000", **{"wsgi.input": _Unreadable()})
    with pytest.raises(RequestEntityTooLarge):
        parse_params(request)


def test_it_takes_a_form_content_type_with_parameters() -> None:
    request = _request(b"A=1", CONTENT_TYPE="Application/X-WWW-Form-Urlencoded; charset=UTF-8")
    assert parse_params(request) == {"A": "1"}


def test_it_reads_nothing_of_a_body_that_is_not_a_form() -> None:
    request = _request(b'{"A": 1}', CONTENT_TYPE="application/json")
    assert parse_params(request) == {}
