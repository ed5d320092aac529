"""The worker process's wired services, set once at start (or by a test)."""

from __future__ import annotations

from telephony_service.wiring import Services

_services: Services | None = None


def install(services: Services) -> None:
    global _services
    _services = services


def services() -> Services:
    if _services is None:
        raise RuntimeError("worker services are not installed; start with `telephony worker`")
    return _services
