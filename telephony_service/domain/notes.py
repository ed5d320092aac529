"""The note quality check: an outcome's note must say what happened and what comes next.

A note is the next person's only briefing. "called pt" tells them nothing they could not
read off the timeline, so short notes and notes made only of call-log shorthand are refused
with an example of a useful one.
"""

from __future__ import annotations

import re

MIN_CHARS = 20
MIN_WORDS = 4
# Fewer distinct words than this is filler repeated ("test test test test test").
MIN_DISTINCT_WORDS = 3
MAX_CHARS = 4000

EXAMPLE = (
    "Say what happened and what comes next, e.g. 'Left voicemail re: referral scheduling; "
    "second attempt set for tomorrow morning.'"
)

# Shorthand that records only that a call happened, plus the little words that join it.
# A note made of nothing else ("called pt, no answer, left vm") says neither why we called
# nor what happens next.
_FILLER = frozenset(
    # A word list reads best as words.
    """
    a an and the to for of on at in with re it is was per as by
    pt pts patient patients caller
    call called calling calls phoned rang ringing dialed dialled tried try trying attempt
    attempted attempts again
    lvm lm vm vmail voicemail voice mail msg message messages left leave
    no answer answered noanswer na n/a none nothing busy
    done ok okay complete completed finished
    see above same fu f/u followup follow up will
    """.split()  # noqa: SIM905
)

_WORD = re.compile(r"[a-z0-9]+(?:[/'][a-z0-9]+)*")


def clean_note(text: str) -> str:
    """The note as stored: surrounding space removed, line breaks kept."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(lines)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def check_note(text: str) -> str | None:
    """Why the note is not good enough, in words for the agent; None if it is."""
    note = clean_note(text)
    if not note:
        return f"A note is required. {EXAMPLE}"
    if len(note) > MAX_CHARS:
        return f"Keep the note under {MAX_CHARS:,} characters."
    words = words_of(note)
    if all(word in _FILLER for word in words):
        return f"This note doesn't say anything the timeline doesn't already. {EXAMPLE}"
    if len(note) < MIN_CHARS or len(words) < MIN_WORDS:
        return f"This note is too short. {EXAMPLE}"
    if len(set(words)) < MIN_DISTINCT_WORDS:
        return f"This note doesn't say anything the timeline doesn't already. {EXAMPLE}"
    return None
