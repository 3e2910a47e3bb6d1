"""Automatic instruction-span detection for prompts that mix a task and its constraints: the entry points.

DIRECTER steers the tokens of the instruction the user marked. Benchmarks such as
IFEval do not mark it: each prompt is one text, e.g. ``"Write a 300+ word summary of
... Do not use any commas and highlight at least 3 sections ..."``. This module finds
the constraint wording in such a prompt with rules, so that the strings can be passed
as ``instructions`` to the engine (:mod:`directer.text.spans` locates each one as an exact
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
   ``separated by ***`` ...; :data:`GENERAL_CUES`). Both live in :mod:`directer.autospans.cues`.
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

7. **Directives** (``directives.py``; not for IFEval): sentences that direct the response by their
   role after the task; 8. **Families** (``families.py``): conditionals, constraints fused onto the
   task, quantity tails, tagged blocks, casual and polite directives (``docs/autospans.md``).

The rules are carried out by :class:`~directer.autospans.clauses.Document` (``clauses.py``) over the
sentences and quotes of ``segmentation.py``. ``coverage.py`` measures the result on IFEval records and
renders seeded examples for the documentation (``python -m directer.autospans.coverage``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .clauses import Document
from .cues import GENERAL_CUES, ID_PATTERNS, ID_RES, LANGUAGES
from .directives import directive_spans
from .families import without_led_task
from .segmentation import Span, find_all, inside_any, quote_regions, share, straight_apostrophes

__all__ = [
    "GENERAL_CUES",
    "ID_PATTERNS",
    "LANGUAGES",
    "detect_instructions",
    "detect_spans",
    "instruction_anchors",
    "last_occurrences",
    "occurrences",
]


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def detect_instructions(
    prompt: str,
    instruction_ids: Sequence[str] | None = None,
    kwargs: Sequence[Mapping] | None = None,
    directives: bool = True,
) -> list[str]:
    """Return the constraint sentences/clauses of ``prompt`` as exact substrings, in prompt order.

    Args:
        prompt: the user prompt (task and constraints in one text).
        instruction_ids: optional IFEval instruction ids (``"punctuation:no_comma"`` ...);
            with them, constraints the cue rules missed are looked for by their wording.
        kwargs: optional IFEval kwargs, one dict per id (keywords, end phrase, ...).
        directives: apply rule 7 (sentences that direct the response after the task, whatever their
            wording); False gives rules 1-6 alone, with which IFEval's prompts are evaluated.

    Returns:
        Non-overlapping substrings of ``prompt`` in order, adjacent ones merged; empty
        when no constraint wording is found. Pass them as ``instructions`` to the engine.
        A short span such as ``***`` may also occur earlier in the prompt; the engine
        steers the first occurrence unless told otherwise, so pass
        ``occurrence=occurrences(prompt, detect_spans(...))`` to steer exactly these.
    """
    return [prompt[s:e] for s, e in detect_spans(prompt, instruction_ids, kwargs, directives)]


def detect_spans(
    prompt: str,
    instruction_ids: Sequence[str] | None = None,
    kwargs: Sequence[Mapping] | None = None,
    directives: bool = True,
) -> list[Span]:
    """:func:`detect_instructions` as ``[start, end)`` character ranges of ``prompt``."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    doc = Document(prompt)
    spans = doc.select_all()
    if share(prompt, spans) > 0.95:
        # Everything looks like a constraint (one led sentence holding the task too):
        # cut every sentence into clauses so that the task is left out (rule 4).
        narrower = doc.select_all(clauses_only=True)
        if narrower and share(prompt, narrower) < share(prompt, spans):
            spans = narrower
    # Rule 7: sentences that direct the response after the task, whatever their wording.
    if directives:
        spans = without_led_task(doc, doc.tidy(spans + directive_spans(doc)))
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


def last_occurrences(prompt: str, texts: Sequence[str]) -> list[Span]:
    """Given instruction texts as ``[start, end)`` ranges of their last occurrence in ``prompt`` (an
    appended constraint comes last), in prompt order; a text that is not there raises ``ValueError(text)``."""
    ranges = []
    for text in texts:
        start = prompt.rfind(text)
        if start < 0:
            raise ValueError(text)
        ranges.append((start, start + len(text)))
    return sorted(ranges)


def occurrences(prompt: str, spans: Sequence[Span]) -> list[int]:
    """For each span, which occurrence of its text it is (0 = first), counted as the engine counts.

    :mod:`directer.text.spans` numbers the non-overlapping occurrences of an instruction
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
    """The wording of one IFEval instruction in ``prompt``, as used by ``coverage.coverage``.

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
