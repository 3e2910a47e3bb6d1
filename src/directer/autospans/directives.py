"""Rule 7 of the detector: constraints by sentence role, not by cue (and, through ``families.py``, rule 8).

The cue rules (``clauses.py``) find constraints by their wording, which was learnt from IFEval's
phrasing. Users phrase constraints in many other ways ("Sort them alphabetically.", "It should sound
enthusiastic.", "Steer clear of jargon."), but they almost always *place* them the same way: the task
comes first (a request or a question, after any context), and the sentences that follow and direct the
response are its constraints. So this rule classifies sentences by their role:

* the **task unit** is the first sentence that is a request (it opens with a verb of request or
  "can/could/would you ...") or a question; sentences before it are context, never constraints;
* a later sentence is a **directive**, and a span, when it opens (after "Please", "Also", markers)
  with an imperative verb, a negation ("Don't ...", "No ...", "Never ..."), a subject and a modal ("The
  letter should be firm"), or a label such as "Format:" / "Tone:" / "Note:"; a parenthesis after the
  task (``(One word answer.)``) is one too; questions and labelled data lines ("Article: ...") are not;
* lines under a heading such as "Requirements:" or "Rules for your answer:" are directives;
* in the task unit itself, a leading manner clause (``Using only words of one syllable, ...``,
  ``Respond in capitals: what ...``) and a trailing one (``... without naming it``, ``... in no more
  than five sentences``, ``... as briefly as possible``) are spans.

The verb list is the ordinary vocabulary of instructions, not a list of benchmark phrasings.
"""

from __future__ import annotations

import re

from .clauses import Document
from .cues import LEAD_IN
from .families import family_spans
from .segmentation import Span, Unit, inside_any, strip_span

__all__ = ["directive_spans", "IMPERATIVES"]

#: Verbs that open an instruction to the writer (base form, as an imperative). Verbs that ask for more
#: of the task's content ("Explain why.", "Describe the ending.", "List three more.") are left out.
IMPERATIVES = (
    "acknowledge adapt add address adopt aim align alternate answer apologise apologize append appeal apply arrange ask assume "
    "avoid base be begin bold break bullet capitalise capitalize center centre choose cite close conclude condense count "
    "cover date divide do double-check emphasise emphasize employ end ensure exclude express feature "
    "favour favor fill finish focus follow format frame give group have highlight include incorporate indent insert "
    "italicise italicize keep label lead leave let limit make mark match mention number omit open order "
    "organise organize output pair paraphrase phrase pitch place present pretend prefix prefer prioritise prioritize "
    "provide put "
    "quote rank refer refrain remember remove repeat reply respond restrict return rhyme say separate "
    "sign skip sort sound speak specify spell split start state stay steer stick stop structure supply "
    "surround switch tailor take talk target title translate treat try underline use vary wrap write"
).split()

_IMPERATIVE = re.compile(r"(?:" + "|".join(sorted(map(re.escape, IMPERATIVES), key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)
_NEGATION = re.compile(r"(?:do not|don't|dont|never|no|not|avoid|without|only|nothing|none)\b", re.IGNORECASE)
_NUMBER = (r"(?:\d[\d,]*|one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|thirty|fifty|"
           r"a hundred|hundred|a few|a couple of)")
# A bare quantity of the response: "Exactly four bullet points.", "200 words max.", "Three paragraphs."
_QUANTITY = re.compile(
    r"(?:(?:exactly|at most|at least|no more than|no fewer than|no less than|up to|max(?:imum)?|min(?:imum)?|"
    r"around|about|roughly|approximately|under|fewer than|less than|between)\s+)?" + _NUMBER +
    r"(?:\s*(?:-|to|or)\s*" + _NUMBER + r")?\s+(?:words?|sentences?|paragraphs?|lines?|bullet points?|bullets?|"
    r"items?|characters?|points?|steps?|examples?|options?|ideas?|questions?|sections?|stanzas?|verses?)\b",
    re.IGNORECASE)
_MODAL = re.compile(
    r"(?:[\w'\"“”-]+\s+){0,6}?(?:must|should|shall|cannot|can't|mustn't|shouldn't|needs? to|has to|have to|"
    r"may not|is to|are to|ought to|will not be|won't be|will be (?:rejected|ignored|cut))\b", re.IGNORECASE)
# Verbs of manner that direct the response even ahead of the task ("Be brief. What is ...?").
_MANNER_VERB = re.compile(r"(?:be|keep|use|avoid|limit|stay|stick|respond|reply|answer|write|format|structure|"
                          r"address|pitch|tailor|aim)\b", re.IGNORECASE)
_LABEL = re.compile(
    r"(?:[a-z]+\s+){0,2}?(?:format|tone|style|length|voice|audience|language|note|important|constraints?|"
    r"requirements?|rules?|output|limits?|restrictions?|word count)\s*:", re.IGNORECASE)
_HEADING = re.compile(
    r"^\s*(?:#+\s*|\*\*)?(?:(?:the\s+|some\s+|a few\s+)?(?:constraints?|requirements?|rules?|instructions?|guidelines?|"
    r"formatting|format|notes?|(?:things|points)\s+to\s+(?:keep in mind|remember|bear in mind|note)|keep in mind|"
    r"please note)(?:\s+for\s+(?:your|the)\s+(?:answer|response|reply|output))?)\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*$",
    re.IGNORECASE)
# A line of program text (indented, or shaped like code) is material, never a directive.
_CODE = re.compile(r"^(?: {2,}|\t)|^\s*(?:def|class|return|import|from|for|while|if|elif|else|try|except)\b.*"
                   r"(?:[=():\[\]{}]|\breturn\b)|[;{}]\s*$|\s[=+\-*/]=?\s")
# A request: a verb of asking for something, or a polite question form.
_REQUEST = re.compile(
    r"(?:can|could|would|will)\s+you\b|i(?:\s+(?:want|need|would like)|'d like)\b|(?:please\s+)?(?:i\s+(?:want|need|would like|'d like)\s+(?:you\s+to\s+)?|"
    r"help\s+me\s+)?(?:write|compose|create|generate|draft|make|give|explain|describe|summari[sz]e|rewrite|tell|"
    r"list|name|plan|design|suggest|imagine|provide|produce|prepare|find|translate|complete|solve|answer|"
    r"continue|compare|turn|convert|outline|review|analy[sz]e|define|recommend|brainstorm|propose|build|"
    r"develop|craft|come up with|share|teach|show|calculate|evaluate|discuss|introduce|pretend|act)\b",
    re.IGNORECASE)
_QUESTION_START = re.compile(r"(?:what|how|why|who|where|when|which|is|are|do|does|did|can|could|should|would|"
                             r"will|whose|whom)\b", re.IGNORECASE)
# Labelled data: "Article: ...", "Question: ...", "Text: ..." hold the task's material, not constraints.
_DATA_LABEL = re.compile(r"^\s*(?:[A-Z][\w ]{0,20}):\s+\S", re.UNICODE)
# Manner clauses of the task sentence.
_LEAD_CLAUSE = re.compile(
    r"^\s*(?:using|with(?:out)?|in (?:fewer|less|under|no more|at most|exactly|at least|\d|one|two|three|four|"
    r"five|plain|simple|the (?:style|voice|form|tone))|respond\w*|answer\w*|reply\w*|speaking|writing|"
    r"as an?|in (?:all )?(?:capital|lower|upper)\w*)\b[^,:;]{0,120}?[,:]", re.IGNORECASE)
_TRAIL_CLAUSE = re.compile(
    r"\s(?:without\s(?:\w+ing\b|any\b|a single\b|the (?:words?|letters?)\b)|using\s(?:only|at most|no|exactly|simple|plain|one|two|three|\d)|"
    r"in\s(?:no more than|fewer than|less than|under|at most|exactly|at least|plain|simple|one|two|three|"
    r"four|five|\d)\b|as\s(?:briefly|concisely|simply|clearly|short(?:ly)?)\sas\spossible|"
    r"that\s(?:rhymes|does not|doesn't|never|only)\b)[^.!?]*", re.IGNORECASE)


def _body(doc: Document, unit: Unit) -> tuple[int, str]:
    """The unit's start after lead-ins ("Please", "Also", list markers) and its normalised text from there."""
    text = doc.norm[unit.start:unit.end]
    lead = LEAD_IN.match(text)
    offset = lead.end() if lead else 0
    return unit.start + offset, text[offset:]


def _is_question(doc: Document, unit: Unit) -> bool:
    return doc.text[unit.start:unit.end].rstrip().endswith("?")


def _is_request(doc: Document, unit: Unit) -> bool:
    _, body = _body(doc, unit)
    lead = _LEAD_CLAUSE.match(body)  # "Using only short words, explain ...": the request follows the manner
    if lead:
        body = body[lead.end():].lstrip()
    return bool(_REQUEST.match(body) or _QUESTION_START.match(body) or _is_question(doc, unit))


def _is_directive(doc: Document, unit: Unit) -> bool:
    _, body = _body(doc, unit)
    if not body.strip() or _is_question(doc, unit) or _CODE.search(doc.text[unit.start:unit.end]):
        return False
    if _LABEL.match(body):
        return True
    if _DATA_LABEL.match(body):
        return False
    if body.startswith("("):
        return True
    return bool(_IMPERATIVE.match(body) or _NEGATION.match(body) or _MODAL.match(body) or _QUANTITY.match(body))


def _leads_the_task(doc: Document, unit: Unit) -> bool:
    """A sentence before the task that directs the response: a negation, a modal about the response,
    a quantity, or a verb of manner ("Be brief.", "Respond in German.", "Your answer must rhyme.")."""
    _, body = _body(doc, unit)
    if not body.strip() or _is_question(doc, unit) or _CODE.search(doc.text[unit.start:unit.end]):
        return False
    if _MODAL.match(body) and re.match(r"(?:your|the|each|every|all|my)\s+(?:\w+\s+){0,2}?(?:answer|response|reply|"
                                       r"output|text|words?|sentences?|paragraphs?|lines?)\b", body, re.IGNORECASE):
        return True
    return bool(_NEGATION.match(body) or _QUANTITY.match(body) or _MANNER_VERB.match(body))


def _span(doc: Document, start: int, end: int) -> list[Span]:
    s, e = strip_span(doc.text, start, end, punctuation=False)
    if doc.text[s:e].startswith(("- ", "* ", "• ")):
        s, e = strip_span(doc.text, s + 2, e, punctuation=False)
    return [] if e <= s or inside_any(s, e, doc.quotes) else [(s, e)]


def _manner_clauses(doc: Document, unit: Unit) -> list[Span]:
    start, body = _body(doc, unit)
    out: list[Span] = []
    lead = _LEAD_CLAUSE.match(body)
    if lead:
        rest = body[lead.end():].lstrip()
        if _REQUEST.match(rest) or _QUESTION_START.match(rest):
            out += _span(doc, start, start + lead.end())
    for m in _TRAIL_CLAUSE.finditer(doc.norm, unit.start, unit.end):
        s, e = strip_span(doc.text, m.start(), m.end())
        if e > s and not inside_any(s, e, doc.quotes):
            out.append((s, e))
    return out


def directive_spans(doc: Document) -> list[Span]:
    """Rule 7 (module docstring): the directives after the task, headed constraint lines, manner clauses."""
    out: list[Span] = []
    units = doc.sentences
    task = next((i for i, u in enumerate(units) if _is_request(doc, u)), None)
    if task is None and len(units) > 1:  # no request or question: the first sentence states the task
        task = 0
    under_heading = False
    for i, unit in enumerate(units):
        line = doc.text[unit.start:unit.end]
        if _HEADING.match(line):
            under_heading = True
            continue
        blank_before = "\n\n" in doc.text[units[i - 1].end:unit.start] if i else False
        if under_heading and blank_before:
            under_heading = False
        if under_heading and not _is_request(doc, unit):
            out += _span(doc, unit.start, unit.end)
            continue
        if task is None:
            continue
        if i >= task:  # "...; mention that it's paid by the company.": an instruction after a semicolon
            for m in re.finditer(r";\s*", doc.norm[unit.start:unit.end]):
                if _IMPERATIVE.match(doc.norm, unit.start + m.end()):
                    out += _span(doc, unit.start + m.end(), unit.end)
                    break
        if i == task:
            out += _manner_clauses(doc, unit)
        elif (i > task or _LABEL.match(_body(doc, unit)[1])) and _is_directive(doc, unit):
            out += _span(doc, unit.start, unit.end)

        elif i < task and _leads_the_task(doc, unit):
            out += _span(doc, unit.start, unit.end)
    return out + family_spans(doc, task)
