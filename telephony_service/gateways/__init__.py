"""Outbound texts and calls: Twilio when credentials are set, the console otherwise."""

from __future__ import annotations

from telephony_service.gateways.base import (
    GatewayError,
    MessageRecord,
    OutboundCall,
    OutboundSms,
    PlacedCall,
    SentMessage,
    TelephonyGateway,
)
from telephony_service.gateways.console import ConsoleGateway, OutboxItem
from telephony_service.settings import Settings

__all__ = [
    "ConsoleGateway",
    "GatewayError",
    "MessageRecord",
    "OutboundCall",
    "OutboundSms",
    "OutboxItem",
    "PlacedCall",
    "SentMessage",
    "TelephonyGateway",
    "build_gateway",
]


def build_gateway(settings: Settings) -> TelephonyGateway:
    sid, token = settings.twilio_account_sid, settings.twilio_auth_token
    # twilio_enabled means both are set; the second test is for the type checker.
    if not settings.twilio_enabled or sid is None or token is None:
        return ConsoleGateway()
    # Imported here: twilio.rest is large, and the web process only needs it to send.
    from telephony_service.gateways.twilio import TwilioGateway

    return TwilioGateway(
        sid, token, api_base_url=settings.twilio_api_base_url, timeout=settings.twilio_timeout
    )
