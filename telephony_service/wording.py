"""Renders the wording kept in voice_templates/."""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from telephony_service.settings import PROJECT_ROOT

TEMPLATE_DIR = PROJECT_ROOT / "voice_templates"


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        # Spoken and texted wording, not HTML; TwiML escaping is the builder's job.
        autoescape=False,  # noqa: S701
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )


@functools.cache
def _template(name: str) -> Template:
    return _environment().get_template(name)


def render(name: str, **context: Any) -> str:
    return " ".join(_template(name).render(**context).split())
