"""Text segmentation for automatic spans: sentences, quoted regions and span trimming.

Pure string functions on character offsets (``[start, end)``), used by :mod:`directer.autospans`
(rule 1 of its docstring: units, quotes) and by :mod:`directer.autospans.coverage`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ABBREVIATIONS",
    "closes_quote",
    "find_all",
    "inside_any",
    "is_abbreviation",
    "quote_regions",
    "sentences",
    "share",
    "straight_apostrophes",
    "strip_span",
    "Unit",
]

Span = tuple[int, int]

ABBREVIATIONS = {
    "i.e.", "e.g.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "no.", "u.s.", "a.m.", "p.m.",
}


@dataclass(frozen=True)
class Unit:
    start: int
    end: int


def sentences(text: str, quotes: list[Span]) -> list[Unit]:
    """Sentences split at terminal punctuation (outside quotes) and at line breaks (rule 1)."""
    units = []
    line_start = 0
    for line in text.split("\n"):
        ls, le = line_start, line_start + len(line)
        line_start = le + 1
        start = ls
        i = ls
        while i < le:
            ch = text[i]
            if ch in ".!?" and not inside_any(i, i + 1, quotes, strict=True):
                j = i + 1
                while j < le and text[j] in ".!?\"”’')]*":
                    j += 1
                # A terminal mark closing a quoted sentence ends the sentence only before a capital.
                if (j == le or text[j].isspace()) and not is_abbreviation(text, ls, i):
                    nxt = text[j:le].lstrip()
                    if not nxt or not nxt[0].islower():
                        units.append(Unit(start, j))
                        start = j
                i = j
                continue
            if ch in "\"”" and closes_quote(i, quotes):
                # ``... "Is this it?" Next sentence`` : the mark is inside the quote.
                if i > ls and text[i - 1] in ".!?" and i + 1 < le and text[i + 1].isspace():
                    nxt = text[i + 1 : le].lstrip()
                    if nxt and nxt[0].isupper():
                        units.append(Unit(start, i + 1))
                        start = i + 1
            i += 1
        units.append(Unit(start, le))
    out = []
    for u in units:
        s, e = strip_span(text, u.start, u.end, punctuation=False)
        if e > s:
            out.append(Unit(s, e))
    return out


def is_abbreviation(text: str, line_start: int, i: int) -> bool:
    """Whether the ``.`` at ``i`` ends an abbreviation or a list number (``(1.``)."""
    if text[i] != ".":
        return False
    k = i
    while k > line_start and not text[k - 1].isspace():
        k -= 1
    token = text[k : i + 1].lstrip("([\"'“")
    if token.lower() in ABBREVIATIONS:
        return True
    return bool(re.fullmatch(r"\d{1,2}\.", token)) and (k == line_start or text[k] == "(")


def straight_apostrophes(text: str) -> str:
    """The copy that cue patterns match against: same length, so offsets carry over."""
    return text.replace("’", "'").replace("‘", "'")


def quote_regions(text: str) -> list[Span]:
    """``[start, end)`` of double-quoted regions (quote marks included), per line."""
    return [m.span() for m in re.finditer(r"\"[^\"\n]*\"|“[^“”\n]*”", text)]


def closes_quote(i: int, quotes: list[Span]) -> bool:
    return any(e - 1 == i for _, e in quotes)


def inside_any(s: int, e: int, regions: Iterable[Span], strict: bool = False) -> bool:
    """Whether ``[s, e)`` lies inside one region (``strict``: not touching its quote marks)."""
    if strict:
        return any(rs < s and e < re_ for rs, re_ in regions)
    return any(rs <= s and e <= re_ for rs, re_ in regions)


def strip_span(text: str, s: int, e: int, punctuation: bool = True) -> Span:
    """Trim white space (and trailing ``,;:`` and dangling ``and``/``or``) from ``[s, e)``."""
    while s < e and text[s].isspace():
        s += 1
    while True:
        while e > s and (text[e - 1].isspace() or (punctuation and text[e - 1] in ",;")):
            e -= 1
        m = re.search(r"\s+(?:and|or)$", text[s:e], re.IGNORECASE) if punctuation else None
        if not m:
            break
        e = s + m.start()
    # Balance a parenthesis opened inside the span.
    if text.count("(", s, e) > text.count(")", s, e):
        close = text.find(")", e)
        nl = text.find("\n", e)
        if close >= 0 and (nl < 0 or close < nl):
            e = close + 1
    if text.count(")", s, e) > text.count("(", s, e) and text[e - 1 : e] == ")":
        e -= 1
        while e > s and text[e - 1].isspace():
            e -= 1
    return s, e


def find_all(text: str, needle: str) -> list[Span]:
    """Case-insensitive occurrences of ``needle``, at word boundaries where it starts/ends with a letter."""
    pattern = re.escape(needle)
    if needle[:1].isalnum():
        pattern = r"(?<!\w)" + pattern
    if needle[-1:].isalnum():
        pattern += r"(?!\w)"
    return [(m.start(), m.end()) for m in re.finditer(pattern, text, re.IGNORECASE)]


def share(text: str, spans: list[Span]) -> float:
    """Share of the non-blank characters of ``text`` inside ``spans``."""
    total = sum(not c.isspace() for c in text)
    inside = sum(not c.isspace() for s, e in spans for c in text[s:e])
    return inside / max(total, 1)
