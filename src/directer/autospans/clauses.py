"""The selection rules of the automatic span detector (rules 1-6 of ``detect.py``) over one prompt.

A :class:`Document` holds a prompt with its quote regions and sentences; it picks whole constraint-led
sentences, or the constraint clauses of task-led ones, finds the best occurrence of a hinted wording
and tidies the result (examples joined, long quoted passages cut out, neighbours merged).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .cues import GENERAL_RES, LEAD_IN, MODAL, OPENER, PHRASE_RES, TASK_START
from .segmentation import (Span, Unit, find_all, inside_any, quote_regions, sentences, straight_apostrophes,
                           strip_span)

__all__ = ["Document"]


# Segmentation vocabulary (the cue vocabulary is in :mod:`directer.autospans.cues`).
# Clause delimiters inside a task-led sentence (rule 4); a clause starts after the match.
_CLAUSE_SEP = re.compile(
    r"\s*[,;:]\s+|\s*[,;:](?=[\"“'‘])|\s+[-–—]{1,2}\s+|\s*[()]\s*|"
    r"\s+(?:and|but|while|whereas|then)\s+(?![\"“'‘])",
    re.IGNORECASE,
)
_CONTINUATION = re.compile(
    r"^(?:[(\"“'‘\[*<]|i\.e\.|e\.g\.|such as|for example|for instance|like\b|including|excluding|"
    r"no\b|not\b|with no|without|nothing|only\b|or\b|otherwise|except)",
    re.IGNORECASE,
)
_MERGE_GAP = re.compile(
    r"^(?:[\s,;:.!?\-–—()\"”“’'*]|\b(?:and|or|but|also|then|with|i\.e|e\.g|such as|like|for example|for instance)\b)*$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[\w'’-]+")
_PAYLOAD_LEAD = re.compile(
    r"(?:phrase|(?:end|ends|finish|finishes|conclude)\w*(?:\s+\w+){0,4}?\s+with|read|word|words|keywords?|say|"
    r"like|exactly|sentence should be|should be)[\s:,]*$",
    re.IGNORECASE,
)



class Document:
    """One prompt with its quote regions and sentences, and the selection rules."""

    def __init__(self, text: str):
        self.text = text
        self.norm = straight_apostrophes(text)
        self.quotes = quote_regions(text)
        self.sentences = sentences(text, self.quotes)

    # ---- cues ---------------------------------------------------------------- #

    def _matches(self, regexes: Iterable[re.Pattern], start: int, end: int) -> list[Span]:
        out = []
        for r in regexes:
            for m in r.finditer(self.norm, start, end):
                s, e = strip_span(self.text, m.start(), m.end())
                if e > s and not inside_any(s, e, self.quotes):
                    out.append((s, e))
        return sorted(out)

    def phrase_cues(self, start: int, end: int) -> list[Span]:
        return self._matches(PHRASE_RES, start, end)

    def any_cues(self, start: int, end: int) -> list[Span]:
        return sorted(self.phrase_cues(start, end) + self._matches(GENERAL_RES, start, end))

    def is_led(self, start: int, end: int, cues: list[Span], first_word_cue: bool = True) -> bool:
        """Whether the unit opens with a constraint (rule 3); ``first_word_cue``: a cue on its first word counts."""
        body = self.norm[start:end]
        lead = LEAD_IN.match(body)
        offset = lead.end() if lead else 0
        if OPENER.match(body, offset):
            return True
        if MODAL.match(body, offset) and not TASK_START.match(body, offset):
            return True
        first_word = _WORD.search(body, offset)
        return first_word_cue and bool(cues) and first_word is not None and cues[0][0] - start <= first_word.start()

    # ---- rules 3-4 ----------------------------------------------------------- #

    def select_all(self, clauses_only: bool = False) -> list[Span]:
        return self.tidy([span for unit in self.sentences for span in self.select(unit, clauses_only)])

    def select(self, unit: Unit, clauses_only: bool = False) -> list[Span]:
        cues = self.any_cues(unit.start, unit.end)
        if not cues:
            return []
        if not clauses_only and self.is_led(unit.start, unit.end, cues):
            return [(unit.start, unit.end)]
        clauses = self.clauses(unit)
        out: list[Span] = []
        unit_phrases = self.phrase_cues(unit.start, unit.end)
        keep_going = False  # the previous clause was kept whole: absorb continuations
        for i, (cs, ce) in enumerate(clauses):
            phrases = [c for c in unit_phrases if c[0] < ce and c[1] > cs]
            general = self._matches(GENERAL_RES, cs, ce)
            if i > 0 and (phrases or general) and (general or self.is_led(cs, ce, phrases, first_word_cue=False)):
                out.append((cs, ce))
                keep_going = True
                continue
            if keep_going and (_CONTINUATION.match(self.text, cs) or len(_WORD.findall(self.text[cs:ce])) <= 2):
                out.append((cs, ce))
                continue
            keep_going = False
            # The first clause (the task), or a later one whose only cues are phrases
            # inside task wording ("... to me using bullet points"): just the phrases.
            out.extend(phrases)
        return out

    def clauses(self, unit: Unit) -> list[Span]:
        """Clauses of a task-led sentence, cut at separators outside quotes (rule 4)."""
        cuts = [unit.start]
        for m in _CLAUSE_SEP.finditer(self.text, unit.start, unit.end):
            if inside_any(m.start(), m.end(), self.quotes, strict=True):
                continue
            if self._is_number_and(m):
                continue
            if re.search(r"[a-z]", m.group(0), re.IGNORECASE) and not self._starts_constraint(m.end(), unit.end):
                continue  # "pros and cons", "Alvin and the Chipmunks": not a new clause
            cuts += [m.start(), m.end()]
        cuts.append(unit.end)
        out = []
        for s, e in zip(cuts[0::2], cuts[1::2]):
            s, e = strip_span(self.text, s, e)
            lead = re.match(r"(?:and|but|then|so|or)\s+", self.text[s:e], re.IGNORECASE)
            if lead and s > unit.start:
                s += lead.end()
            if e > s:
                out.append((s, e))
        return out

    def _starts_constraint(self, pos: int, end: int) -> bool:
        """Whether a constraint opener or a cue starts at ``pos`` (a conjunction then opens a clause)."""
        if OPENER.match(self.norm, pos, end):
            return True
        if MODAL.match(self.norm, pos, end) and not TASK_START.match(self.norm, pos, end):
            return True
        return any(s == pos for s, _ in self.any_cues(pos, end))

    def _is_number_and(self, m: re.Match) -> bool:
        """``between 100 and 200 words``: not a clause boundary."""
        before = self.text[: m.start()].rsplit(None, 1)[-1:] or [""]
        return m.group(0).strip().lower() in {"and", "or"} and before[0].isdigit()

    # ---- rule 5: hints ------------------------------------------------------- #

    def best_occurrence(self, anchor: str) -> Span:
        """The occurrence of a kwargs string most likely to be constraint wording."""
        best, best_score = None, None
        for s, e in find_all(self.text, anchor):
            score = 0
            if inside_any(s, e, self.quotes) or (s > 0 and self.text[s - 1] in "\"“'‘<*"):
                score += 2
            before = self.text[max(0, s - 40) : s].lower()
            if re.search(r"\b(?:word|words|keyword|keywords|phrase|term|include|mention|say|use|letter)\b", before):
                score += 2
            if best_score is None or score >= best_score:  # ties: the later one
                best, best_score = (s, e), score
        return best

    def select_around(self, start: int, end: int) -> list[Span]:
        """The sentence, clause or short phrase holding ``[start, end)``."""
        unit = next((u for u in self.sentences if u.start <= start < u.end), None)
        if unit is None:
            return [(start, end)]
        cues = self.any_cues(unit.start, unit.end)
        if self.is_led(unit.start, unit.end, cues):
            return [(unit.start, min(max(end, unit.end), len(self.text)))]
        clauses = self.clauses(unit)
        for i, (cs, ce) in enumerate(clauses):
            if cs <= start < ce and i > 0 and end <= ce:
                return [(cs, ce)]
        return [self._phrase_around(start, end, unit)]

    def _phrase_around(self, start: int, end: int, unit: Unit) -> Span:
        """Extend an anchor left over wording such as ``include the keyword``."""
        lead = {"include", "includes", "including", "contain", "contains", "containing", "mention", "mentions",
                "mentioning", "use", "using", "uses", "say", "saying", "word", "words", "keyword", "keywords",
                "phrase", "term", "letter", "with", "without", "avoid", "not", "never", "don't", "do", "the",
                "a", "following", "exact", "any", "should", "must", "to", "has", "have"}  # fmt: skip
        s = start
        if s > 0 and self.text[s - 1] in "\"“'‘":
            s -= 1
        words = list(_WORD.finditer(self.text, unit.start, s))
        taken = 0
        for w in reversed(words):
            if w.group(0).lower() not in lead or taken >= 6 or not _MERGE_GAP.match(self.text[w.end() : s]):
                break
            s, taken = w.start(), taken + 1
        e = end
        if e < len(self.text) and self.text[e] in "\"”'’":
            e += 1
        # Drop leading fillers that carry no constraint meaning.
        while True:
            m = re.match(r"(?:the|a|to|and|or|any)\s+", self.text[s:e], re.IGNORECASE)
            if not m or s + m.end() >= start:
                break
            s += m.end()
        return s, e

    # ---- rule 6 -------------------------------------------------------------- #

    def tidy(self, spans: list[Span]) -> list[Span]:
        text = self.text
        spans = sorted(strip_span(text, s, e) for s, e in spans)
        spans = [(s, e) for s, e in spans if e > s]
        spans = self._absorb_examples(spans)
        spans = [part for span in spans for part in self._cut_passages(span)]
        merged: list[Span] = []
        for s, e in spans:
            if merged and (s <= merged[-1][1] or self._mergeable(merged[-1][1], s)):
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        return merged

    def _cut_passages(self, span: Span) -> list[Span]:
        """Leave out quoted passages of ten words or more (text to work on, not wording of a constraint).

        A quote right after ``phrase``/``end with``/``read``/``word``/``say`` ... is the
        constraint's own payload (an end phrase) and stays.
        """
        s, e = span
        parts, pos = [], s
        for qs, qe in self.quotes:
            if qs < pos or qe > e or len(_WORD.findall(self.text[qs:qe])) < 10:
                continue
            if _PAYLOAD_LEAD.search(self.norm[max(s, qs - 40) : qs]):
                continue
            parts.append(strip_span(self.text, pos, qs))
            pos = qe
        if not parts:
            return [span]
        parts.append(strip_span(self.text, pos, e))
        return [(a, b) for a, b in parts if b > a and _WORD.search(self.text, a, b)]

    def _mergeable(self, a: int, b: int) -> bool:
        gap = self.text[a:b]
        return "\n\n" not in gap and bool(_MERGE_GAP.match(gap))

    def _absorb_examples(self, spans: list[Span]) -> list[Span]:
        """A span ending in ``:`` takes the example lines that follow it (``* This is point 1``)."""
        out = []
        for s, e in spans:
            if self.text[s:e].rstrip().endswith(":") or self.text[e : e + 1] == ":":
                pos = e + (self.text[e : e + 1] == ":")
                while True:
                    nl = self.text.find("\n", pos)
                    if nl < 0 or self.text[pos:nl].strip():
                        break
                    line_end = self.text.find("\n", nl + 1)
                    line_end = len(self.text) if line_end < 0 else line_end
                    line = self.text[nl + 1 : line_end]
                    is_item = re.match(r"\s*(?:[*\-•]|\d{1,2}[.)])\s", line)
                    if not line.strip() or not (is_item or len(line.split()) <= 8):
                        break
                    pos = e = line_end
            out.append((s, e))
        return out


# --------------------------------------------------------------------------- #
# IFEval kwargs
# --------------------------------------------------------------------------- #
