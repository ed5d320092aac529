"""SMS encoding: which alphabet a text needs and how many billed segments it takes."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

# GSM 03.38 default alphabet, less the escape code 0x1B that introduces the extension table.
GSM_BASIC: frozenset[str] = frozenset(
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./0123456789:;<=>?"
    "\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ\u00c4\u00d6\u00d1\u00dc\u00a7"
    "\u00bfabcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)
# Each of these is sent as escape + character, so it costs two septets.
GSM_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|\u20ac")

_GSM_SINGLE, _GSM_CONCATENATED = 160, 153
_UCS2_SINGLE, _UCS2_CONCATENATED = 70, 67

_SPACE = " "
_TRANSLATIONS: dict[int, str | None] = {
    # Copy-paste from word processors and web pages brings these in; any one of them switches
    # the whole text to UCS-2, which more than doubles the cost of a message.
    **dict.fromkeys(map(ord, "\u2018\u2019\u201a\u201b\u2032\u2039\u203a\u00b4`\u02bc\u02bb"), "'"),
    **dict.fromkeys(map(ord, "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb"), '"'),
    **dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\ufe58\ufe63"), "-"),
    **dict.fromkeys(map(ord, "\u2022\u2023\u2219\u00b7"), "-"),
    **dict.fromkeys(
        [0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000, ord("\t")], _SPACE
    ),
    **dict.fromkeys(map(ord, "\u2028\u2029\u0085"), "\n"),
    ord("\u2026"): "...",
    ord("\u2044"): "/",
    # Invisible, yet each one forces UCS-2; the bidirectional controls can also disguise text.
    **dict.fromkeys(
        [
            *(0x00AD, 0x200B, 0x200C, 0x2060, 0xFEFF, 0x061C, 0x200E, 0x200F),
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
        ],
        None,
    ),
    # Full-width ASCII, as typed with some East Asian input methods.
    **{code: chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)},
}
# The joiner and variation selectors hold emoji sequences together; they are removed only
# where nothing else stops the text from being GSM-7, i.e. where they are stray copy-paste.
_EMOJI_GLUE = str.maketrans(dict.fromkeys([0x200D, 0xFE0E, 0xFE0F], None))


@dataclass(frozen=True)
class Segments:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int
    segments: int


def normalise_text(text: str) -> str:
    # NFC first, so "e" + combining accent becomes the GSM-7 "é".
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_TRANSLATIONS)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    unglued = text.translate(_EMOJI_GLUE)
    if unglued != text and _is_gsm(unglued):
        return unglued
    return text


def count_segments(text: str) -> Segments:
    if _is_gsm(text):
        septets = [2 if ch in GSM_EXTENSION else 1 for ch in text]
        return _pack("GSM-7", septets, _GSM_SINGLE, _GSM_CONCATENATED)
    # Carriers send UTF-16, so a character outside the BMP (most emoji) takes two units.
    code_units = [len(ch.encode("utf-16-le")) // 2 for ch in text]
    return _pack("UCS-2", code_units, _UCS2_SINGLE, _UCS2_CONCATENATED)


def _is_gsm(text: str) -> bool:
    return all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text)


def _pack(
    encoding: Literal["GSM-7", "UCS-2"], sizes: list[int], single: int, concatenated: int
) -> Segments:
    units = sum(sizes)
    # Nothing to send is nothing billed; the gateway refuses an empty body anyway.
    if units == 0:
        return Segments(encoding, 0, 0)
    if units <= single:
        return Segments(encoding, units, 1)
    # An escape pair or a surrogate pair is never split across two segments, so a segment
    # can end one unit short and the count can exceed ceil(units / concatenated).
    segments, used = 1, 0
    for size in sizes:
        if used + size > concatenated:
            segments, used = segments + 1, 0
        used += size
    return Segments(encoding, units, segments)
