"""Automatic instruction-span detection for prompts that mix a task and its constraints.

DIRECTER steers the tokens of the instruction the user marked. Benchmarks such as
IFEval do not mark it: each prompt is one text, e.g. ``"Write a 300+ word summary of
... Do not use any commas and highlight at least 3 sections ..."``. This module finds
the constraint wording in such a prompt with rules, so that the strings can be passed
as ``instructions`` to the engine (:mod:`directer.spans` locates each one as an exact
substring of the prompt).

:func:`detect_instructions` returns the constraint sentences or clauses as exact
substrings of the prompt, in prompt order, non-overlapping, adjacent ones merged.
The rules, in order (see ``docs/autospans.md`` for the reasoning and measurements):

1. **Units.** The prompt is split into sentences (``.``/``?``/``!`` followed by
   white space, outside double quotes, not after ``i.e.``/``e.g.``/list numbers) and
   at line breaks. Text inside double quotes is never searched for cues, so a quoted
   passage to rewrite cannot trigger a span by itself.
2. **Cues.** A sentence is a candidate when it holds a constraint cue. *Phrase* cues
   are specific and have a clear extent (``at least 300 words``, ``in all lowercase
   letters``, ``without any commas``, ``in JSON format``, ``<<title>>``, ``P.S.``,
   ``******``, ``in the Hindi language`` ...; one list per IFEval instruction id,
   :data:`ID_PATTERNS`). *General* cues only say "this is about the response"
   (``your response``, ``make sure``, ``do not use``, ``wrap ... response``,
   ``separated by ***`` ...; :data:`GENERAL_CUES`). Both live in :mod:`directer.constraint_cues`.
3. **Whole sentence** when the sentence is *constraint-led*: it opens (after
   "Please", "Also", list markers ...) with a constraint opener (``Do not``, ``Your
   response``, ``Make sure``, ``Use``, ``Highlight``, ``Answer in`` ...), with a
   subject and a modal that is not a task request (``The very last sentence of your
   response should``), or with a cue as its first word.
4. **Clauses** otherwise (a task-led sentence such as ``Write a riddle about X but make
   sure you don't use any commas.``): the sentence is cut at ``,``/``;``/``:``/dashes/
   parentheses, and at ``and``/``but``/``while``/``then`` only when a constraint opener
   or a cue follows (so ``pros and cons`` stays whole). A later clause holding a
   general cue or opening with a constraint is kept whole (``make sure you don't use
   any commas.``); a short continuation after it (``i.e. <<title>>``, ``(excluding
   5)``) joins it. The first clause, which holds the task, and later clauses whose
   only cues are phrases inside task wording contribute just the phrase matches
   (``Write an essay of at least 900 words on X.`` gives ``at least 900 words``).
   If rule 3 would cover more than 95 % of the prompt, every sentence is treated by
   rule 4 instead, so that a one-sentence prompt never comes back whole.
5. **Hints.** With IFEval's ``instruction_ids`` and ``kwargs``, an instruction whose
   kwargs wording (keywords, forbidden words, frequency keyword, end phrase, first
   word, postscript marker, section splitter, language name) is not yet inside a span
   is looked for. Its best occurrence (quoted, or after "word"/"keyword"/"include"/
   "mention" ..., later ones on ties) adds its sentence (if constraint-led), its
   clause (if not the first) or a short phrase around it (``include the word
   "Netflix"``). ``prompt_to_repeat`` is never used: it is the task itself.
6. **Tidy.** Example lines after a span ending in ``:`` (``such as:`` + ``* bullet``
   lines) join it; quoted passages of ten words or more inside a span are cut out
   unless they are the constraint's payload (``end with the exact phrase "..."``);
   trailing ``,;`` and dangling ``and``/``or`` are trimmed; spans are merged when
   only white space, punctuation, a conjunction or ``i.e.``/``such as`` separates
   them (not across a blank line).

``span_coverage.py`` measures the result on IFEval records and renders seeded examples for the
documentation (``python -m directer.span_coverage``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .constraint_cues import (
    GENERAL_CUES,
    GENERAL_RES,
    ID_PATTERNS,
    ID_RES,
    LANGUAGES,
    LEAD_IN,
    MODAL,
    OPENER,
    PHRASE_RES,
    TASK_START,
)
from .segmentation import (
    Span,
    Unit,
    find_all,
    inside_any,
    quote_regions,
    sentences,
    share,
    straight_apostrophes,
    strip_span,
)

__all__ = [
    "GENERAL_CUES",
    "ID_PATTERNS",
    "LANGUAGES",
    "detect_instructions",
    "detect_spans",
    "instruction_anchors",
    "occurrences",
]


# Segmentation vocabulary (the cue vocabulary is in :mod:`directer.constraint_cues`).
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


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def detect_instructions(
    prompt: str,
    instruction_ids: Sequence[str] | None = None,
    kwargs: Sequence[Mapping] | None = None,
) -> list[str]:
    """Return the constraint sentences/clauses of ``prompt`` as exact substrings, in prompt order.

    Args:
        prompt: the user prompt (task and constraints in one text).
        instruction_ids: optional IFEval instruction ids (``"punctuation:no_comma"`` ...);
            with them, constraints the cue rules missed are looked for by their wording.
        kwargs: optional IFEval kwargs, one dict per id (keywords, end phrase, ...).

    Returns:
        Non-overlapping substrings of ``prompt`` in order, adjacent ones merged; empty
        when no constraint wording is found. Pass them as ``instructions`` to the engine.
        A short span such as ``***`` may also occur earlier in the prompt; the engine
        steers the first occurrence unless told otherwise, so pass
        ``occurrence=occurrences(prompt, detect_spans(...))`` to steer exactly these.
    """
    return [prompt[s:e] for s, e in detect_spans(prompt, instruction_ids, kwargs)]


def detect_spans(
    prompt: str,
    instruction_ids: Sequence[str] | None = None,
    kwargs: Sequence[Mapping] | None = None,
) -> list[Span]:
    """:func:`detect_instructions` as ``[start, end)`` character ranges of ``prompt``."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    doc = _Doc(prompt)
    spans = doc.select_all()
    if share(prompt, spans) > 0.95:
        # Everything looks like a constraint (one led sentence holding the task too):
        # cut every sentence into clauses so that the task is left out (rule 4).
        narrower = doc.select_all(clauses_only=True)
        if narrower and share(prompt, narrower) < share(prompt, spans):
            spans = narrower
    if instruction_ids:
        kws = kwargs if kwargs is not None else [{}] * len(instruction_ids)
        for _, kw in zip(instruction_ids, kws):
            for anchor in _kwarg_strings(kw):
                found = find_all(prompt, anchor)
                if not found or any(inside_any(s, e, spans) for s, e in found):
                    continue
                hit = doc.best_occurrence(anchor)
                spans = doc.tidy(spans + doc.select_around(*hit))
    return spans


def occurrences(prompt: str, spans: Sequence[Span]) -> list[int]:
    """For each span, which occurrence of its text it is (0 = first), counted as the engine counts.

    :mod:`directer.spans` numbers the non-overlapping occurrences of an instruction
    string from the start of the prompt; pass the result as ``occurrence=``.
    """
    out = []
    for start, end in spans:
        text, index, pos = prompt[start:end], 0, prompt.find(prompt[start:end])
        while 0 <= pos < start:
            index += 1
            pos = prompt.find(text, pos + len(text))
        if pos != start:
            raise ValueError(f"span [{start}, {end}) is not reachable as an occurrence of its own text")
        out.append(index)
    return out


def instruction_anchors(prompt: str, instruction_id: str, kwargs: Mapping | None = None) -> list[list[Span]]:
    """The wording of one IFEval instruction in ``prompt``, as used by ``span_coverage.coverage``.

    Returns one entry per anchor, each the list of that anchor's occurrences. The anchors
    are the instruction's kwargs strings that occur in the prompt (keywords, forbidden
    words, frequency keyword, end phrase, first word, postscript marker, section splitter,
    language name); when none occurs, the single anchor is the set of matches of the
    id's phrase patterns (:data:`ID_PATTERNS`) outside double quotes. An empty list
    means the instruction has no findable wording (it is *unanchored*).
    """
    found = [occ for occ in (find_all(prompt, a) for a in _kwarg_strings(kwargs)) if occ]
    if found:
        return found
    quotes, norm = quote_regions(prompt), straight_apostrophes(prompt)
    matches = [
        (m.start(), m.end())
        for r in ID_RES.get(instruction_id, [])
        for m in r.finditer(norm)
        if m.end() > m.start() and not inside_any(m.start(), m.end(), quotes)
    ]
    return [sorted(set(matches))] if matches else []


# --------------------------------------------------------------------------- #
# Segmentation and selection
# --------------------------------------------------------------------------- #


class _Doc:
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

_STRING_KWARGS = (
    "keywords", "forbidden_words", "keyword", "end_phrase", "first_word", "postscript_marker", "section_spliter",
)


def _kwarg_strings(kwargs: Mapping | None) -> list[str]:
    """The wording an instruction's kwargs name (never ``prompt_to_repeat``: that is the task)."""
    kwargs = kwargs or {}
    out: list[str] = []
    for key in _STRING_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str) and value.strip():
            out.append(value.strip())
        elif isinstance(value, (list, tuple)):
            out += [v.strip() for v in value if isinstance(v, str) and v.strip()]
    lang = kwargs.get("language")
    if isinstance(lang, str) and lang:
        out.append(LANGUAGES.get(lang, lang))
    return out
