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
    r"|bother(?:ing)?|spam(?:ming)?|harass(?:ing|ment)?|communicat(?:e|ing|ions?)"
    r"|correspondence)"
)
_TEXTS = (
    r"(?:te?xts?|texting|text messages?|messages?|messaging|msgs?|sms(?:es)?|calls?"
    r"|notifications?|alerts?|reminders?|subscription|communications?|correspondence)"
)
_FILLER = (
    r"(?:it|with|all|the|these|those|this|that|your|ur|you|u|ever|please|pls|plz|now|me"
    r"|getting|receiving|any|more|them)"
)
# A second channel after "or"/"and", so "stop calling and texting me" is about texts too. Only
# nouns and "-ing" forms: "stop calling and text me" asks for texts.
_AND_TEXTS = (
    r"(?:\s+me)?\s+(?:or|and|nor)\s+(?:(?:the|these|those|your|any|all|me)\s+){0,2}"
    r"(?:te?xting|messaging|msging|e ?mailing|contacting|sending|spamming|bothering"
    r"|te?xts|text messages|messages|msgs|sms(?:es)?|e ?mails|notifications|alerts"
    r"|reminders|communications?)\b"
)
# A question about why the texts stopped comes from a patient who wants them back.
_NOT_ASKING_WHY = (
    r"(?<!why )(?<!why'd you )(?<!did you )(?<!did u )(?<!didn't you )(?<!didnt you )"
    r"(?<!why you )(?<!why would you )"
)
_REVOCATIONS = re.compile(
    "|".join(
        [
            # "stop texting me", "quit it with the messages"; "don't stop calling" is not one,
            # and neither is "why did you stop communicating with me?", which misses the texts.
            rf"(?<!don't )(?<!dont )(?<!not )(?<!never ){_NOT_ASKING_WHY}\b(?:stop|quit|cease|halt)"
            rf"\s+(?:{_FILLER}\s+){{0,3}}{_CONTACT}\b(?:{_AND_TEXTS})?",
            # "no more texts", "cancel these reminders"; "of" only after "no more", because
            # "the end of the call" is not a revocation.
            rf"\b(?:end|cancel|no more(?: of)?)\s+(?:(?:all|the|these|those|this|your|ur|my"
            rf"|any|automated|text)\s+){{0,3}}{_TEXTS}\b(?:{_AND_TEXTS})?",
            # "don't text me", "do not ever contact me". "Communicate" is a clause rule below,
            # since "don't communicate my results to my husband" is not about texts.
            r"\b(?:do not|don't|dont|never)\s+(?:ever\s+)?(?:te?xt|message|msg|sms|contact"
            r"|e ?mail|bother|spam)\b",
            # Calls only when the sender plainly means never ("don't call me at work" is not).
            r"\b(?:do not|don't|dont)\s+(?:ever\s+)?call\s+(?:me\s+|us\s+|this number\s+)?"
            r"(?:again|anymore|any more|ever)\b",
            r"\bnever\s+call\b|\bdo not call list\b",
            r"\b(?:remove|delete|erase)\s+(?:me|this (?:number|phone)|my (?:phone number"
            r"|cell number|number|phone|cell|info|information|details|contact info))\b",
            r"\b(?:take|get)\s+(?:me|my \w+|this \w+)\s+(?:off|out of)\b",
            r"\b(?:unsubscribe|unsubscribed|unsub|stopall|optout|opt(?:ed)?\s+out|opt me out"
            r"|revoke|revoked|revoking|revocation)\b",
            r"\bwrong (?:number|person|phone|num)\b",
            # "Not interested" and withdrawn consent are clause rules below.
            r"\b(?:leave me alone|lose (?:my|this) number|cease and desist)\b",
        ]
    )
)
# "I never signed up for these texts": only with a texting word, since "I didn't ask for this"
# alone could be about anything. A single text followed by "to be ..." is about what was done
# with that one ("I didn't ask for the text to be resent"), not about being texted.
_NEVER_ASKED = re.compile(
    r"\b(?:never|didn't|didnt|did not)\s+(?:sign(?:ed)?\s+up|subscribed?|opt(?:ed)?\s+in"
    r"|ask(?:ed)?|agreed?)\s+(?:for|to)\s+(?:(?:this|these|those|that|any|your|the|of"
    r"|receive|receiving|get|getting)\s+){0,3}(?:te?xts|texting|text messages|messages"
    r"|msgs|sms(?:es)?|notifications|alerts|reminders"
    r"|(?:te?xt message|te?xt)\b(?!\s+to be\b))\b"
)
# ...unless the same message asks to be signed up: "I never signed up for the text reminders,
# can you sign me up?" complains about missing texts, it does not refuse them.
_SIGN_UP_REQUEST = re.compile(
    r"\b(?:sign|opt|put)\s+(?:me|us|my number|this number)\s+(?:up|in|back)\b"
    r"|\b(?:enroll|subscribe|resubscribe)\s+(?:me|us|my number|this number)\b"
    r"|\b(?:can|could|may|how do|how can) (?:i|we) sign up\b|\b(?:want|like) to sign up\b"
)

# These are judged on the same words with clause breaks (, ; : . ! ?) kept as " , " tokens,
# because the comma is what separates "don't call, text me" (asks for texts) from "don't call
# or text me" (refuses both), and "no, text me" from "no texts".
_REFUSED_CALL = (
    r"\b(?:do not|don't|dont|never)\s+(?:ever\s+)?(?:call|phone|ring)"
    r"(?:\s+(?:me|us|this number|my number|my phone|my cell|here))?"
    r"(?:\s+(?:again|anymore|any more|ever))?"
)
_TEXT_VERB = r"(?:te?xt|message|msg|sms|contact|e ?mail|communicate)"
# "Instead" after the list makes it a request: "don't call and text me instead".
_NOT_INSTEAD = r"(?![\w' ]*\binstead\b)"
# So does saying the others will do: "don't call, text or email is fine".
_NOT_FINE = r"(?!(?:'s|\s+(?:is|are|works?|would|will|should))\b)"
# "No" that counts what arrived rather than refusing it: "I got no texts", "still no text?"
# comes from a patient who wants the texts.
_NO_COUNT = (
    r"(?<!got )(?<!get )(?<!had )(?<!have )(?<!has )(?<!received )(?<!receive )(?<!seen )"
    r"(?<!saw )(?<!see )(?<!sent )(?<!were )(?<!was )(?<!are )(?<!is )(?<!been )(?<!with )"
    r"(?<!left )(?<!leave )(?<!getting )(?<!gotten )(?<!there's )(?<!theres )(?<!why )"
    r"(?<!still )(?<!yet )"
)
_NO_PREFIX = (
    r"\bno\s+(?:(?:more|further|automated|marketing|text|sms)\s+){0,2}"
    r"(?:(?:phone\s+)?calls?\s+(?:,\s+)?(?:or|nor|and)\s+)?"
)
# Where a clause ends, or goes on only to be polite or emphatic ("no texts please", "not
# interested, thanks", "I withdraw my consent."). Patients who want to be contacted use the
# same words for other things when the clause goes on: "no messages from the office yet",
# "not interested in the 3pm slot", "cancel my consent form appointment".
_END = (
    r"(?=\s*$|\s+,|\s+(?:please|pls|plz|thanks|thank|ever|anymore|any more|any longer"
    r"|again)\b)"
)
# "No texts or calls" lists a second channel before the clause ends; "no messages or calls
# from you yet?" goes on and counts what arrived. Naming the sender or this phone ("no texts
# from you", "no messages to this number please") still refuses them, if nothing follows.
_NO_END = (
    r"(?:\s+(?:or|nor)(?:\s+[\w']+){1,2}?)?"
    r"(?:\s+(?:from (?:you|u|your (?:office|practice|clinic))|to (?:this number|me"
    rf"|my (?:phone|number|cell|mobile))))?{_END}"
)
_ME = r"(?:me|us|this number|my (?:phone|cell|mobile|number))"
# What consent or permission is refused for: texts or contact, or the patient as the one
# contacted ("to be texted", "for you to text me"). Only a few words may come between, so
# "permission for the pharmacy to contact my doctor" and "consent for the release of records"
# are not read as refusals of texts.
_CONSENT_TO = (
    r"\s+(?:to|for)\s+(?:(?:you|u|your|ur|the|this|these|those|any|all|future|further|more"
    r"|automated|office|clinic|practice|staff|or|and|be|being|receive|receiving|get|getting"
    r"|to|text|sms|phone|marketing|promotional|appointment)\s+){0,4}"
    r"(?:te?xts|txts|te?xt messages?|messages|msgs|sms(?:es)?|calls|notifications?|alerts?"
    r"|reminders?|communications?|correspondence|e ?mails|texting|txting|messaging"
    r"|texted|txted|messaged|contacted|called|e ?mailed|notified|reached"
    r"|(?:te?xt|txt|message|msg|sms|contact|call|phone|e ?mail|reach|notify"
    rf"|communicate(?: with)?)(?:ing)?(?:\s+{_ME}\b|{_END}))"
)
_CONSENT_TAIL = (
    rf"(?:{_END}|\s+to (?:this|that|these|those|it|them|any of (?:this|it|these|them)){_END}"
    rf"|{_CONSENT_TO})"
)
# Withdrawn consent and "not interested" are revocations however the clause goes on ("I
# withdraw my consent effective immediately", "not interested at all"), unless it names
# something other than texts to the patient ("withdraw permission for the pharmacy to contact
# my doctor", "not interested in the 3pm slot", "cancel my consent form appointment"). A
# texting word in the clause settles it either way ("consent for appointment reminders"), and
# so does a start date ("consent withdrawn effective Monday").
_TEXT_NOUN = (
    r"(?:te?xts|txts|text messages|messages|msgs|sms(?:es)?|texting|messaging|reminders"
    r"|notifications|alerts|calls|communications?|correspondence|e ?mails)"
)
_OTHER_OBJECT = (
    r"(?:pharmacy|pharmacist|records?|release|slots?|(?<!this )(?<!that )times?|appointments?"
    r"|appts?|visits?|telehealth|telemedicine|video|virtual|in person|forms?|procedures?"
    r"|surgery|doctors?|dr|provider|referrals?|refills?|prescriptions?|reschedul\w*"
    r"|monday|tuesday|wednesday|thursday|friday|saturday|sunday|morning|afternoon|evening"
    r"|\d\w*(?:am|pm)|\d+(?: \d+)? (?:am|pm))"
)
# The rest of the clause is taken into the match, so "not interested in calls, text me" is
# still seen as refusing calls alone.
_UNLESS_OTHER = (
    rf"(?:(?=[^,]*\b{_TEXT_NOUN}\b)|(?=\s+(?:effective|as of|starting|immediately)\b)"
    rf"|(?![^,]*\b{_OTHER_OBJECT}\b))[^,]*"
)
# "No texts please", "no text messages", "no calls or texts": only where the clause ends,
# since "no texts from you since Monday?" and "no texts came through" count what arrived, and
# "I got no texts" is caught by the look-behind. _reports_a_miss drops the rest that report
# what happened ("a call, no text", "booked but no reminders", "no reminders?").
_NO_REFUSALS = re.compile(
    rf"{_NO_COUNT}{_NO_PREFIX}(?:te?xt messages|te?xts|txts|messages|msgs|smses"
    rf"|notifications|alerts|reminders|communications){_NO_END}"
    # The same for a singular ("no text please", "no text, call me"), which also never follows
    # "but"/"and": "no, text me" and "no text me tomorrow" ask for one, and "a call but no
    # text" misses one.
    rf"|{_NO_COUNT}(?<!but )(?<!and ){_NO_PREFIX}(?:te?xt message|te?xt|sms|message"
    rf"|texting|messaging|contact|communication){_NO_END}"
)
# A clause that says what happened: "Missed call, no message", "signed up but no messages".
_REPORTED = re.compile(
    r"\b(?:got|gotten|had|have|has|missed|received|booked|scheduled|made|signed|registered"
    r"|enrolled|confirmed|rescheduled|visited|called|came|went|left|sent|saw|heard|tried"
    r"|checked|was|were|yesterday|last)\b"
)
# Words after a "no X" that make it a request whatever came before: "no texts please".
_INSISTED = re.compile(r"\s*(?:please|pls|plz|thanks|thank|ever|anymore|any more|again)\b")
_CLAUSE_REVOCATIONS = re.compile(
    "|".join(
        [
            # "do not call or text me", "don't call me again, or text"; a bare "and" only
            # without a comma before it, since "don't call, and text me" asks for texts.
            rf"{_REFUSED_CALL}(?:(?:\s+,)?\s+(?:or|nor)|\s+and{_NOT_INSTEAD})"
            rf"\s+(?:ever\s+)?{_TEXT_VERB}\b",
            # "do not call, text, or email me"; not "don't call me, text me or email me".
            rf"{_REFUSED_CALL}\s+,\s+{_TEXT_VERB}(?:\s+,)?\s+(?:or|nor|and)\s+"
            rf"(?:{_TEXT_VERB}|call)\b{_NOT_INSTEAD}{_NOT_FINE}",
            # "don't communicate with me (again)"; not "don't communicate my results to my
            # husband", which is about someone else.
            r"\b(?:do not|don't|dont|never)\s+(?:ever\s+)?communicate"
            rf"(?:\s+with\s+{_ME}\b|{_END})",
            # "I do not consent to receive text messages", "I don't consent." Consent to
            # something else ("I don't consent to sharing my records") is not about texts.
            r"\b(?:do not|don't|dont|no longer|never|not|didn't|didnt|did not)\s+"
            r"(?:(?:give|gave|giving|grant|granted|provide|have|had)\s+)?"
            rf"(?:(?:my|you|your|any)\s+)?(?:consent|permission)(?:ed|ing)?{_CONSENT_TAIL}",
            # "I withdraw my consent (now)", "rescinding permission to text me"; not "cancel my
            # consent form appointment" or "withdraw permission for the pharmacy to ...".
            r"\b(?:withdraw(?:s|n|ing)?|withdrew|rescind(?:s|ed|ing)?|retract(?:s|ed|ing)?"
            r"|cancel(?:s|led|ling)?|remov(?:e|es|ed|ing)|take back|taking back)"
            rf"\s+(?:(?:my|all|any|the|your|this|of)\s+){{0,2}}(?:consent|permission)\b"
            rf"{_UNLESS_OTHER}",
            # "Consent withdrawn", "my consent is cancelled": the patient's own consent, so not
            # "prior auth permission was cancelled". "Denied" is what happens to a request, not
            # a revocation.
            r"(?:^|,\s+|\b(?:my|our|all|any|this|the|text|sms|texting|messaging)\s+)"
            r"(?:consent|permission)\s+(?:(?:is|was|are|has been|have been|been|hereby|now)\s+)"
            r"{0,2}(?:withdrawn|rescinded|retracted|revoked|cancell?ed|removed)\b"
            rf"{_UNLESS_OTHER}",
            # "Not interested (at all)", "not interested in hearing from you"; not "not
            # interested in the 3pm slot", which asks for another.
            rf"\bnot interested\b{_UNLESS_OTHER}",
            # "I don't want texts", "I no longer wish to be contacted", within one clause:
            # "I don't want to cancel, just text me the new time" asks for a text, and so
            # does "I don't want to come in just text me", where a text is all they want.
            r"\b(?:do not|don't|dont|no longer)\s+(?:want|wish|need|like|send)\b[\w' ]{0,40}?"
            r"(?<!just )(?<!only )(?<!but )(?<!except )(?<!rather )(?<!prefer )"
            rf"\b(?:{_TEXTS}|to be (?:texted|contacted|called|messaged))\b",
        ]
    )
)
# A refusal of calls alone ("don't call me again", "stop calling") is still a revocation,
# unless the same message asks for texts instead ("never call this number, just text"): a
# patient who asks to be texted has not revoked consent to texts.
_CALL_WORD = re.compile(r"\bcall(?:s|ing|ed)?\b")
_TEXT_WORD = re.compile(
    r"\b(?:te?xt\w*|txts?|messag\w*|msgs?|msging|sms\w*|notifications?|alerts?|reminders?"
    r"|contact\w*|communicat\w*|correspondence|e ?mail\w*|bother\w*|spam\w*|harass\w*"
    r"|subscription|send\w*)\b"
)
# "Text is fine", "a text would be better".
_WILL_DO = (
    r"(?:is|are|would be|will be|'d be|d be|should be)\s+(?:fine|ok|okay|better|best|good|great"
    r"|preferred|easier)"
)
_TEXT_REQUEST = re.compile(
    r"(?<!or )(?<!nor )(?<!not )(?<!never )(?<!don't )(?<!dont )(?<!no )(?<!even )"
    r"(?:\b(?:te?xt|message|msg|sms)\s+(?:me|us|instead|only|back|please|pls|plz|works"
    rf"|{_WILL_DO})\b"
    r"|\b(?:just|only|prefer|rather|by|via|over)\s+(?:a\s+)?(?:te?xts?|txts?|sms|messages?"
    r"|texting|messaging)\b"
    rf"|\b(?:te?xts|texting|messages)\s+{_WILL_DO}\b)"
)
_CLAUSE_BREAK = re.compile(r"([,;:.!?\u2026]+)")
# "call/text" and "call & text" are lists; the bare separators would otherwise vanish and
# leave "call text", which reads like "don't call, text".
_SLASH = re.compile(r"(?<=[^\W\d_])\s*/\s*(?=[^\W\d_])")
_AMPERSAND = re.compile(r"\s*&\s*")
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
    text = _AMPERSAND.sub(" and ", _SLASH.sub(" or ", text))
    tokens = _tokens(text)
    # Capitals read as the keyword even mid-sentence, unless the whole message is shouted.
    if "STOP" in tokens and any(ch.islower() for ch in text):
        return True
    words = [word.lower() for word in tokens]
    if not words:
        return False
    joined = " ".join(words)
    parts = _clauses(text)
    clauses = " , ".join(words for words, _ in parts)
    matches = [
        *(m.group() for m in _REVOCATIONS.finditer(joined)),
        *(m.group() for m in _NEVER_ASKED.finditer(joined) if not _SIGN_UP_REQUEST.search(joined)),
        *(m.group() for m in _CLAUSE_REVOCATIONS.finditer(clauses)),
        *(m.group() for m in _NO_REFUSALS.finditer(clauses) if not _reports_a_miss(m, parts)),
    ]
    if any(not _is_call_only(match) for match in matches):
        return True
    if matches:
        # Only calls were refused; the "stop" rules below would read "stop calling, text me
        # instead" the same way, so this answer is final.
        return not _TEXT_REQUEST.search(clauses)
    while len(words) > 1 and words[0] in _LEADING_COURTESIES:
        words = words[1:]
    if words[0] == "stop" and (len(words) == 1 or words[1] not in _STOP_OPENING_EXCEPTIONS):
        return True
    return words[-1] == "stop" and (len(words) == 1 or words[-2] not in _STOP_CLOSING_EXCEPTIONS)


def _clauses(text: str) -> list[tuple[str, str]]:
    """Each clause's lower-cased words, with the punctuation that ends it."""
    pieces = _CLAUSE_BREAK.split(text)
    parts: list[tuple[str, str]] = []
    for index in range(0, len(pieces), 2):
        words = " ".join(_tokens(pieces[index])).lower()
        brk = pieces[index + 1] if index + 1 < len(pieces) else ""
        if words:
            parts.append((words, brk))
        elif parts:
            # Punctuation around an emoji or nothing ends the clause before it.
            parts[-1] = (parts[-1][0], parts[-1][1] + brk)
    return parts


def _reports_a_miss(match: re.Match[str], parts: list[tuple[str, str]]) -> bool:
    """Whether a "no texts" match reports texts that did not come rather than refusing them.

    Only a patient who wants the texts says "a call, no text", "booked but no reminders" or "no
    reminders?"; "no texts please" refuses them wherever it stands.
    """
    clauses = match.string
    if _INSISTED.match(clauses, match.end()):
        return False
    # Find the clause the match starts in and the one it ends in (" , " joins them).
    start = 0
    first = last = 0
    for index, (words, _) in enumerate(parts):
        end = start + len(words)
        if start <= match.start() <= end:
            first = index
        if start < match.end() <= end:
            last = index
        start = end + len(" , ")
    if "?" in parts[last][1]:
        return True
    clause_start = clauses.rfind(" , ", 0, match.start())
    before = clauses[clause_start + len(" , ") if clause_start >= 0 else 0 : match.start()]
    if not before and first > 0 and not re.search(r"[.!?\u2026]", parts[first - 1][1]):
        context = parts[first - 1][0]
    elif before.endswith(("but ", "and ")):
        context = before
    else:
        return False
    return bool(_REPORTED.search(context))


def _tokens(text: str) -> list[str]:
    tokens = [word.strip("'") for word in _NOT_WORD.sub(" ", text).split()]
    return [word for word in tokens if word]


def _is_call_only(match: str) -> bool:
    return bool(_CALL_WORD.search(match)) and not _TEXT_WORD.search(match)
