"""Only Twilio may post to the Twilio webhooks, and nothing else is stored."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.conftest import twilio_signature
from tests.helpers import call_params, events, make_practice, new_sid, post_twilio

PATHS = [
    "/twilio/voice/incoming",
    "/twilio/voice/status",
    "/twilio/voice/recording",
    "/twilio/voice/transcription",
    "/twilio/voice/recorded",
]


def _params() -> dict[str, str]:
    return call_params(
        new_sid("CA"),
        CallStatus="completed",
        RecordingSid=new_sid("RE"),
        RecordingStatus="completed",
        RecordingDuration="5",
        TranscriptionSid=new_sid("TR"),
        TranscriptionText="hello",
        TranscriptionStatus="completed",
    )


@pytest.mark.parametrize("path", PATHS)
def test_it_refuses_a_request_without_a_signature(client, services, path):
    make_practice(services)
    response = client.post(path, data=_params())
    assert response.status_code == 403
    assert events(services) == []


@pytest.mark.parametrize("path", PATHS)
def test_it_refuses_a_forged_signature(client, services, path):
    make_practice(services)
    params = _params()
    forged = twilio_signature(path, params, token="not-the-auth-token-at-all")
    assert post_twilio(client, path, params, signature=forged).status_code == 403
    assert events(services) == []


@pytest.mark.parametrize("path", PATHS)
def test_it_refuses_a_tampered_body(client, services, path):
    make_practice(services)
    params = _params()
    signature = twilio_signature(path, params)
    params["From"] = "+13125550188"
    assert post_twilio(client, path, params, signature=signature).status_code == 403
    assert events(services) == []


def test_it_refuses_a_signature_made_for_another_path(client, services):
    make_practice(services)
    params = _params()
    signature = twilio_signature("/twilio/voice/recording", params)
    response = post_twilio(client, "/twilio/voice/status", params, signature=signature)
    assert response.status_code == 403


def test_it_checks_the_signature_against_the_public_url_not_the_request_url(client, services):
    # Behind a proxy the app sees http://localhost; Twilio signed the public https URL.
    make_practice(services)
    params = _params()
    response = client.post(
        "/twilio/voice/status",
        data=params,
        headers={"X-Twilio-Signature": twilio_signature("/twilio/voice/status", params)},
        base_url="http://10.0.0.5:8000",
    )
    assert response.status_code == 200


def test_it_signs_the_query_string_too(client, services):
    make_practice(services)
    params = _params()
    good = twilio_signature("/twilio/voice/status?attempt=1", params)
    response = client.post(
        "/twilio/voice/status?attempt=1", data=params, headers={"X-Twilio-Signature": good}
    )
    assert response.status_code == 200
    response = client.post(
        "/twilio/voice/status?attempt=2", data=params, headers={"X-Twilio-Signature": good}
    )
    assert response.status_code == 403


def test_it_rejects_an_oversize_body_before_storing_it(client, services):
    make_practice(services)
    params = _params()
    params["Padding"] = "x" * 200_000
    response = post_twilio(client, "/twilio/voice/status", params)
    assert response.status_code == 413
    assert events(services) == []


@pytest.mark.parametrize("padding", [200_000, 100], ids=["oversize", "small"])
def test_it_reads_a_chunked_body_whole_and_refuses_one_over_the_limit(
    app, client, services, padding
):
    """Transfer-Encoding: chunked, as gunicorn hands it over: no CONTENT_LENGTH, and a
    stream the server ends where the body ends."""
    make_practice(services)
    params = _params()
    params["Padding"] = "x" * padding
    body = urlencode(params).encode()
    environ = EnvironBuilder(
        path="/twilio/voice/status",
        method="POST",
        data=body,
        headers={
            "X-Twilio-Signature": twilio_signature("/twilio/voice/status", params),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    environ["wsgi.input"] = io.BytesIO(body)

    _, status, _ = run_wsgi_app(app, environ, buffered=True)

    if padding > 1000:
        assert status.startswith("413"), status
        assert events(services) == []
    else:
        assert status.startswith("200"), status
        assert len(events(services)) == 1


def test_it_rejects_a_malformed_call_sid(client, services):
    make_practice(services)
    params = _params()
    params["CallSid"] = "CA-not-a-sid"
    assert post_twilio(client, "/twilio/voice/status", params).status_code == 400
    assert events(services) == []


def test_it_refuses_a_body_that_is_not_form_encoded(client, services):
    make_practice(services)
    params = _params()
    response = client.post(
        "/twilio/voice/status",
        json=params,
        headers={"X-Twilio-Signature": twilio_signature("/twilio/voice/status", params)},
    )
    assert response.status_code == 403
    assert events(services) == []


def test_it_checks_every_value_of_a_repeated_field(client, services):
    from urllib.parse import urlencode

    from werkzeug.datastructures import MultiDict

    make_practice(services)
    pairs = [
        *_params().items(),
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
    ]
    signature = twilio_signature("/twilio/voice/status", MultiDict(pairs))
    body = urlencode(pairs)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/twilio/voice/status", data=body, headers=headers).status_code == 200
    tampered = urlencode([*pairs[:-1], ("StatusCallbackEvent", "completed")])
    assert client.post("/twilio/voice/status", data=tampered, headers=headers).status_code == 403


def test_it_refuses_a_body_with_more_fields_than_twilio_sends(client, services):
    make_practice(services)
    params = {**_params(), **{f"Field{i}": "x" for i in range(300)}}
    assert post_twilio(client, "/twilio/voice/status", params).status_code == 400
    assert events(services) == []
