"""Messaging TwiML: an empty answer, or a reply to a keyword. Built with Twilio's builder."""

from __future__ import annotations

import functools

from twilio.twiml.messaging_response import MessagingResponse

from telephony_service.services.inbound import Answer


@functools.cache
def empty() -> str:
    return str(MessagingResponse())


def reply(answer: Answer, base_url: str) -> str:
    response = MessagingResponse()
    if answer.body is not None:
        # The status callback settles the outbox row with the sid Twilio gives the reply.
        response.message(
            answer.body,
            action=f"{base_url}/twilio/sms/status?m={answer.message_id}",
            method="POST",
        )
    return str(response)
