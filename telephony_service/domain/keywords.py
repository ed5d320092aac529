"""Classifies an inbound text: carrier keywords, and free-text revocations of consent."""

from __future__ import annotations

import enum
import re
import unicodedata


class Intent(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    REVOCATION = "revocation"
    OTHER = "other"


OPT_OUT_KEYWORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS: frozenset[str] = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS: frozenset[str] = frozenset({"HELP", "INFO"})

# Letters and digits only, so trailing punctuation, emoji and stray zero-width characters are
# separators rather than part of a word ("Stop 🙏", "STOP!!").
_WORD = re.compile(r"[^\W_]+")
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\u02bb`\u00b4", "'"))
_NOT_WORD = re.compile(r"[^\w']+|_")

# Revocation is judged on lower-cased text with punctuation turned into spaces. Recall matters
# more than precision: a false hit only stops texts and flags the task for staff, while a missed
# revocation is a violation. The patterns still avoid the cheap false hits ("stop by", "cancel
# my appointment", "at the end of the call").
_CONTACT = (
    r"(?:te?xt(?:s|ing|ed)?|messag(?:e|es|ing)|msgs?|msging|sms(?:es)?|contact(?:ing)?"
    r"|call(?:s|ing)?|send(?:ing)?|e ?mail(?:s|ing)?|notifications?|alerts?|reminders?"
    r"|bother(?:ing)?|spam(?:ming)?|harass(?:ing|ment)?)"
)
_TEXTS = (
    r"(?:te?xts?|texting|text messages?|messages?|messaging|msgs?|sms(?:es)?|calls?"
    r"|notifications?|alerts?|reminders?|subscription)"
)
_FILLER = (
    r"(?:it|with|all|the|these|those|this|that|your|ur|you|u|ever|please|pls|plz|now|me"
    r"|getting|receiving|any|more|them)"
)
_REVOCATIONS = re.compile(
    "|".join(
        [
            # "stop texting me", "quit it with the messages"; "don't stop calling" is not one.
            rf"(?<!don't )(?<!dont )(?<!not )(?<!never )\b(?:stop|quit|cease|halt)"
            rf"\s+(?:{_FILLER}\s+){{0,3}}{_CONTACT}\b",
            # "no more texts", "cancel these reminders"; "of" only after "no more", because
            # "the end of the call" is not a revocation.
            rf"\b(?:end|cancel|no more(?: of)?)\s+(?:(?:all|the|these|those|this|your|ur|my"
            rf"|any|automated|text)\s+){{0,3}}{_TEXTS}\b",
            # "don't text me", "do not ever contact me".
            r"\b(?:do not|don't|dont|never)\s+(?:ever\s+)?(?:te?xt|message|msg|sms|contact"
            r"|e ?mail|bother|spam)\b",
            # Calls only when the sender plainly means never ("don't call me at work" is not).
            r"\b(?:do not|don't|dont)\s+(?:ever\s+)?call\s+(?:me\s+|us\s+|this number\s+)?"
            r"(?:again|anymore|any more|ever)\b",
            r"\bnever\s+call\b|\bdo not call list\b",
            r"\b(?:do not|don't|dont|no longer)\s+(?:want|wish|need|like|send)\b[\w' ]{0,40}?"
            rf"\b(?:{_TEXTS}|to be (?:texted|contacted|called|messaged))\b",
            r"\b(?:remove|delete|erase)\s+(?:me|this (?:number|phone)|my (?:phone number"
            r"|cell number|number|phone|cell|info|information|details|contact info))\b",
            r"\b(?:take|get)\s+(?:me|my \w+|this \w+)\s+(?:off|out of)\b",
            r"\b(?:unsubscribe|unsubscribed|unsub|stopall|optout|opt(?:ed)?\s+out|opt me out"
            r"|revoke|revoked|revoking|revocation|withdraw(?: my)? consent)\b",
            r"\bwrong (?:number|person|phone|num)\b",
            r"\b(?:not interested|leave me alone|lose (?:my|this) number)\b",
        ]
    )
)
# A bare "stop" that opens or closes a longer message ("Stop it", "wrong number, stop") is a
# revocation, unless it is plainly another sense of the word.
_STOP_OPENING_EXCEPTIONS = frozenset(
    {"by", "in", "over", "at", "off", "into", "for", "on", "through", "past", "and"}
)
_STOP_CLOSING_EXCEPTIONS = frozenset(
    {"bus", "pit", "full", "truck", "rest", "next", "last", "first", "one", "a", "the", "train"}
)
_LEADING_COURTESIES = frozenset({"please", "pls", "plz", "ok", "okay", "just", "so", "yes", "no"})
_STOP_SIGNS = frozenset({"\U0001f6d1", "\u26d4"})


def classify(body: str | None) -> Intent:
    if body is None:
        return Intent.OTHER
    text = unicodedata.normalize("NFKC", body).translate(_APOSTROPHES)
    # Joining the words lets "Stop.", "opt-out" and "S T O P" match, while "stop it" does not.
    compact = "".join(_WORD.findall(text)).upper()
    if compact in OPT_OUT_KEYWORDS:
        return Intent.OPT_OUT
    if compact in OPT_IN_KEYWORDS:
        return Intent.OPT_IN
    if compact in HELP_KEYWORDS:
        return Intent.HELP
    if _is_revocation(text):
        return Intent.REVOCATION
    return Intent.OTHER


def _is_revocation(text: str) -> bool:
    if any(ch in _STOP_SIGNS for ch in text):
        return True
    tokens = [word.strip("'") for word in _NOT_WORD.sub(" ", text).split()]
    tokens = [word for word in tokens if word]
    # Capitals read as the keyword even mid-sentence, unless the whole message is shouted.
    if "STOP" in tokens and any(ch.islower() for ch in text):
        return True
    words = [word.lower() for word in tokens]
    if not words:
        return False
    if _REVOCATIONS.search(" ".join(words)):
        return True
    while len(words) > 1 and words[0] in _LEADING_COURTESIES:
        words = words[1:]
    if words[0] == "stop" and (len(words) == 1 or words[1] not in _STOP_OPENING_EXCEPTIONS):
        return True
    return words[-1] == "stop" and (len(words) == 1 or words[-2] not in _STOP_CLOSING_EXCEPTIONS)
