"""The webhook form parser gives exactly what urllib's parse_qsl gives."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest

from telephony_service.web.security import MAX_FIELDS, _split_form

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
