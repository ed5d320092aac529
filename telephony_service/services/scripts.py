"""The call script on the task page: voice_templates/scripts/ with the task's context filled in.

The wording lives in the templates (one per category, extending a shared base); this module
only supplies the context and reads the rendered text back into sections. A rendered script
is plain text in a small line format (see voice_templates/README.md): "[key] Title" starts a
section, "> " marks what is said, "- " an option, and [[name]] a blank the agent fills in
on screen while on the call (day, time, provider: known only once the visit is booked).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound

from telephony_service.domain.phones import display_number
from telephony_service.models import Practice, Task, User
from telephony_service.wording import TEMPLATE_DIR

# A reason is said in the opening line; a long one is cut at a word so the line stays
# sayable (the full reason is on the page next to the script).
MAX_SPOKEN_REASON = 80
# Beyond this a weekday name would be ambiguous ("Tuesday" of which week?): say the date.
_WEEKDAY_RANGE = 6


@dataclass(frozen=True)
class Blank:
    name: str


Piece = str | Blank


@dataclass(frozen=True)
class ScriptLine:
    # said | option | guidance
    style: str
    pieces: tuple[Piece, ...]

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else f"[{p.name}]" for p in self.pieces)


@dataclass(frozen=True)
class ScriptSection:
    key: str
    title: str
    lines: tuple[ScriptLine, ...]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True)
class CallScript:
    category: str
    sections: tuple[ScriptSection, ...]

    def section(self, key: str) -> ScriptSection:
        for section in self.sections:
            if section.key == key:
                return section
        raise KeyError(key)

    @property
    def text(self) -> str:
        return "\n\n".join(f"{s.title}\n{s.text}" for s in self.sections)

    @property
    def blanks(self) -> tuple[str, ...]:
        names: list[str] = []
        for section in self.sections:
            for line in section.lines:
                for piece in line.pieces:
                    if isinstance(piece, Blank) and piece.name not in names:
                        names.append(piece.name)
        return tuple(names)


@dataclass(frozen=True)
class When:
    """When the patient contacted us, for "from this morning" / "from Tuesday"."""

    # today | yesterday | weekday | date
    day: str
    # morning | afternoon | evening
    part: str
    # "Tuesday" or "November 3": what is said for an older contact
    label: str


def when_of(at: datetime, now: datetime, zone: ZoneInfo) -> When:
    local = at.astimezone(zone)
    today = now.astimezone(zone).date()
    part = "morning" if local.hour < 12 else "afternoon" if local.hour < 17 else "evening"
    days = (today - local.date()).days
    if days <= 0:
        return When("today", part, f"{local:%A}")
    if days == 1:
        return When("yesterday", part, f"{local:%A}")
    if days <= _WEEKDAY_RANGE:
        return When("weekday", part, f"{local:%A}")
    return When("date", part, f"{local:%B} {local.day}")


def agent_name(user: User) -> str:
    """How the agent introduces themself: their name, else their email's local part."""
    if user.name and user.name.strip():
        return user.name.strip()
    return user.email.split("@", 1)[0]


def spoken_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    text = " ".join(reason.split()).rstrip(".")
    if not text:
        return None
    if len(text) > MAX_SPOKEN_REASON:
        cut = text[:MAX_SPOKEN_REASON].rsplit(" ", 1)[0]
        text = cut.rstrip(",;:") + "..."
    # "your Knee pain" reads oddly; keep acronyms ("MRI results") as typed.
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        text = text[0].lower() + text[1:]
    return text


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        # Plain text read back by parse_script; the HTML template escapes it on the page.
        autoescape=False,  # noqa: S701
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@functools.cache
def _template(category: str) -> Template:
    try:
        return _environment().get_template(f"scripts/{category}.txt")
    except TemplateNotFound:
        # A category added without a script still gets the shared one.
        return _environment().get_template("scripts/missed_call.txt")


def render_script(
    category: str,
    *,
    agent: str,
    practice: str,
    practice_number: str,
    reason: str | None,
    when: When,
) -> CallScript:
    text = _template(category).render(
        agent=agent,
        practice=practice,
        practice_number=practice_number,
        reason=spoken_reason(reason),
        when=when,
    )
    return CallScript(category=category, sections=parse_script(text))


def script_for(task: Task, *, practice: Practice, user: User, now: datetime) -> CallScript:
    """The task's call script with its context: who calls, from where, about what, since when."""
    return render_script(
        task.category,
        agent=agent_name(user),
        practice=practice.name,
        practice_number=display_number(practice.twilio_number),
        reason=task.reason,
        when=when_of(task.created_at, now, ZoneInfo(practice.timezone)),
    )


_HEADER = re.compile(r"^\[(\w+)\]\s*(.*)$")
_BLANK = re.compile(r"\[\[(\w+)\]\]")


def parse_script(text: str) -> tuple[ScriptSection, ...]:
    sections: list[ScriptSection] = []
    key: str | None = None
    title = ""
    lines: list[ScriptLine] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        header = _HEADER.match(line)
        if header:
            if key is not None:
                sections.append(ScriptSection(key, title, tuple(lines)))
            key, title, lines = header.group(1), header.group(2), []
            continue
        if key is None:
            raise ValueError(f"script text before the first section: {line!r}")
        if line.startswith("> "):
            style, body = "said", line[2:]
        elif line.startswith("- "):
            style, body = "option", line[2:]
        else:
            style, body = "guidance", line
        lines.append(ScriptLine(style, _pieces(" ".join(body.split()))))
    if key is not None:
        sections.append(ScriptSection(key, title, tuple(lines)))
    return tuple(sections)


def _pieces(body: str) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    position = 0
    for match in _BLANK.finditer(body):
        if match.start() > position:
            pieces.append(body[position : match.start()])
        pieces.append(Blank(match.group(1)))
        position = match.end()
    if position < len(body):
        pieces.append(body[position:])
    return tuple(pieces)
