"""Renders the wording kept in voice_templates/."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    meta,
)

from telephony_service.domain.phi import lint_template
from telephony_service.domain.segments import count_segments, normalise_text
from telephony_service.settings import PROJECT_ROOT

TEMPLATE_DIR = PROJECT_ROOT / "voice_templates"

# DESIGN.md section 3: a text stays within two segments; a third one is a cost nobody chose.
MAX_SEGMENTS = 2


class TemplateTooLong(ValueError):
    pass


class TemplateRejected(ValueError):
    """An SMS template that breaks the content rules: nothing is rendered from it."""


@dataclass(frozen=True)
class RenderedSms:
    body: str
    encoding: str
    segments: int


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
    # Values cleaned as a text's are: a control character in a name or a reason would
    # break the TwiML the wording goes into, and the call with it.
    return " ".join(_template(name).render(**_cleaned(context)).split())


def _cleaned(context: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _clean(value) if isinstance(value, str) else value for key, value in context.items()
    }


def _clean(text: str) -> str:
    return " ".join(normalise_text(text).split())


def render_sms(name: str, **context: Any) -> RenderedSms:
    # Values are cleaned as well as the result: practice names are typed or pasted by managers,
    # with the curly quotes, control characters and stray spaces ("Clinic :") that come along.
    check_sms_templates()
    body = _clean(_template(f"sms/{name}.txt").render(**_cleaned(context)))
    counted = count_segments(body)
    if counted.segments > MAX_SEGMENTS:
        raise TemplateTooLong(
            f"sms/{name}.txt renders to {counted.segments} {counted.encoding} segments "
            f"({counted.units} units); the limit is {MAX_SEGMENTS}"
        )
    return RenderedSms(body=body, encoding=counted.encoding, segments=counted.segments)


@functools.cache
def opt_out_line() -> str:
    """The opt-out wording the first text of a thread ends with (sms/_stop.txt)."""
    check_sms_templates()
    return _clean(_template("sms/_stop.txt").render(first_text=True))


def with_opt_out_line(body: str) -> str:
    """A text rendered for an ongoing thread, as it reads opening a new one: the thread
    templates end with the wording, so this is what rendering it so would give."""
    return f"{body} {opt_out_line()}"


def fits(body: str) -> bool:
    return count_segments(body).segments <= MAX_SEGMENTS


def sms_template_variables(source: str) -> set[str]:
    return set(meta.find_undeclared_variables(_environment().parse(source)))


def lint_sms_template(source: str, *, whole_text: bool = True) -> list[str]:
    try:
        variables = sms_template_variables(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    return lint_template(source, variables, whole_text=whole_text)


@functools.cache
def check_sms_templates() -> None:
    """Every SMS template, and every piece they share, passes the PHI lint, or no text is
    rendered (each process checks once, at start and before its first text): an edited
    file that names a diagnosis or a task's reason must never reach a patient.
    """
    problems = []
    for path in sorted((TEMPLATE_DIR / "sms").glob("*.txt")):
        source = path.read_text(encoding="utf-8")
        # A shared piece (_*.txt) is checked by itself, as the templates that include it
        # are checked without it.
        found = lint_sms_template(source, whole_text=not path.name.startswith("_"))
        problems += [f"sms/{path.name}: {problem}" for problem in found]
    if problems:
        raise TemplateRejected("; ".join(problems))
