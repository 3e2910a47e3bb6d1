"""Rule 8 of the detector: constraint families that neither a cue nor a sentence's role reveals.

Rule 7 (``directives.py``) finds constraints that sit in their own sentence after the task and open
like an instruction. Prompts written by other people also state constraints

* **conditionally**, anywhere in the prompt: "If you mention any equipment, say how much it costs.",
  "When you give numbers, write them as words.", "Should you find typos, list them at the end.";
* **fused with the task** by a connective that introduces a manner: "... but only use words of one
  syllable", "... while keeping every sentence short", "..., none of which can be answered with yes or
  no", "..., giving only the translation", "..., with each recommendation in under twenty words",
  "... and do it without ...";
* **ahead of the task, before a colon**: "Answer only with yes or no: is ...?", "No longer than a tweet,
  please: what is ...?";
* **in a marked block**: ``<constraints>...</constraints>``, ``<instructions>...</instructions>``;
* **casually**, after the task: "just the code, no comments", "pls dont lecture me", "nothing cheesy!!";
* **as a preference** after the task: "I'd like it to be a pun.", "I only want the part before 1500.".

Each family is recognised by its grammar (the connective, the conditional opener, the tag), not by a
list of example phrasings, and only where it directs the response: a quoted passage never counts.
"""

from __future__ import annotations

import re

from .clauses import Document
from .segmentation import Span, Unit, inside_any, strip_span

__all__ = ["family_spans", "without_led_task"]

# A conditional about the response, then (after a comma) what to do: an imperative or a modal clause.
_CONDITIONAL = re.compile(
    r"^(?:(?:if|when|whenever|in case|unless|should|where|each time|every time|any time)\s+(?:you|your|the answer|"
    r"the response|the reply|the user|the reader|someone|anyone|we |i |a |an |any |there|it|they|this|that|"
    r"[a-z]+ing\b)|if possible|where possible|"
    r"where relevant|if needed|if necessary|for (?:each|every|any|all)\s+\w+)[^,]{0,120},\s*"
    r"(?:please\s+)?(?:[a-z]+\b(?:\s+(?:it|them|that|this|the|each|every))?|you\s+(?:must|should|may|can|need))",
    re.IGNORECASE)
# Connectives that fuse a manner constraint onto the task's clause; the span runs to the end of the sentence.
_FUSED = re.compile(
    r"(?:,\s*|\s)(?:but\s+(?:only|just|never|do not|don't|without|make sure|keep|use|avoid)|"
    r"while\s+(?:keeping|making sure|using|staying|avoiding|sticking|limiting)|"
    r"(?:and\s+)?(?:making sure|ensuring|keeping (?:it|each|every|the|all|your|them))|"
    r"(?:avoiding|excluding|omitting|skipping|leaving out)\b|"
    r"no\s+[a-z]{3,}s\b|[-—–]\s+(?:around|about|roughly|under|at most|at least|no more than|exactly|max|keep|make|"
    r"written|no|only|in)\b|"
    r"none\s+of\s+which|(?:each|all)\s+of\s+which\s+(?:must|should|has to|have to)|"
    r"giving\s+only|with\s+each\s+\w+\s+(?:in|under|at most|no more|of)|"
    r"each\s+on\s+(?:its|a|their)\s+own|"
    r"and\s+(?:do it|write it|keep it|make it)\s+(?:without|in|under|as|with no)|"
    r"and\s+(?:make sure|ensure|don't|do not|never|avoid|limit|keep)|"
    r"and\s+(?:put|list|give|place|mention|start with|begin with|end with)\b(?=[^.!?\n:]*\b(?:first|last|"
    r"at the (?:end|start|beginning|top|bottom))\b)|that\s+(?:all|each)\s+(?:start|begin|end)s?\s+with|"
    r"so\s+that\s+(?:it|the|each|every|no|all)|such\s+that|in\s+a\s+way\s+that|"
    r"(?:sorted|ordered|arranged|written|formatted|grouped|numbered|separated|listed|ranked|laid out|"
    r"presented|spelled|capitali[sz]ed)\s+(?:by|in|from|as|with|into|alphabetically|chronologically|"
    r"newest|oldest|largest|smallest|first|out)|"
    r"so\s+(?:no|nothing|never|don't|do not|avoid|keep|only|please)\b|"
    r"that\s+is\s+(?:exactly|at most|at least|no more than|under|fewer than)\s)\b[^.!?\n:]*[.!?]?",
    re.IGNORECASE)
# A directive ahead of the task, up to a colon: "Answer only with yes or no: is ...?"
_LEAD_COLON = re.compile(
    r"^(?:please\s+)?(?:(?:answer|respond|reply|write|keep|use)\b[^:?]{0,60}?\b(?:only|in|with|as|under|no|"
    r"exactly|at most)\b[^:?]{0,60}|no\s+(?:longer|more)\s+than\b[^:?]{0,60}|(?:in|at)\s+(?:most|under|fewer|"
    r"less|no more)\b[^:?]{0,60})\s*:\s+", re.IGNORECASE)
# A tail of quantities after a comma or semicolon: "...; under 280 characters, with one hashtag at most."
_QUANTITY_TAIL = re.compile(
    r"[,;]\s*((?:under|at most|no more than|fewer than|less than|exactly|at least|up to|max(?:imum)?|around|"
    r"about|roughly)\s+(?:\d[\d,]*|one|two|three|four|five|six|seven|eight|nine|ten|twenty|fifty|a hundred)\s+"
    r"[^.!?\n]*)", re.IGNORECASE)
# A parenthesis holding a quantity or a restriction: "(multiple choice, four options each)", "(max 100 words)".
_PAREN = re.compile(
    r"\((?=[^()]*\b(?:words?|sentences?|paragraphs?|characters?|lines?|each|max|maximum|at most|no more than|"
    r"only|bullet points?|multiple choice|format|tone|please)\b)[^()\n]{2,100}\)", re.IGNORECASE)
# Marked blocks whose whole content is instructions.
_TAG = re.compile(r"<(constraints?|instructions?|rules?|requirements?|guidelines?|format|style)>(.*?)</\1>",
                  re.IGNORECASE | re.DOTALL)
# Casual restrictions after the task: "just the code, no comments", "pls dont ...", "nothing cheesy!!"
_CASUAL = re.compile(
    r"^(?:(?:pls|plz|please|and|but|oh and|also)\s+)?(?:just\s+(?:the|give|a|one|tell|say|answer|list)|"
    r"only\s+(?:the|give|a|one|tell|answer|list)|nothing\s+\w+|dont\b|don't\b|do not\b|no\s+\w+(?:,|\s*$|\s+please|"
    r"\s+pls|!)|(?:keep|make)\s+it\b)", re.IGNORECASE)
# A preference about the response, after the task.
_PREFERENCE = re.compile(
    r"^(?:i(?:'d| would)?\s+(?:like|want|prefer|need)\s+(?:it|them|the|each|every|all|this|that|my|you to|"
    r"something|a|an|one|options?)\b|"
    r"i\s+only\s+(?:want|need)\b|(?:it|the \w+|this|that)\s+(?:is|are)\s+(?:meant|supposed)\s+to\b|"
    r"i(?:'d| would)\s+appreciate\b|ideally\b|preferably\b|it would be (?:great|nice|good|helpful|best) if\b|bonus (?:points )?if\b|"
    r"(?:the|this)\s+whole\s+\w+\s+(?:is|are|should|must|has|needs))", re.IGNORECASE)
_LEAD = re.compile(r"^(?:[\s\-*•(\[]|\d{1,2}[.)]\s)*")
# Sentences that ask for more of the task ("Explain your answer.") are not noun-phrase directives.
_TASK_VERB = re.compile(r"(?:explain|justify|describe|show|give|tell|list|name|state|provide|support|defend|clarify|"
                        r"elaborate|include|add|write|check|double-check|summari[sz]e)\b", re.IGNORECASE)
# A noun phrase that directs the response, as a sentence of its own after the task: "Short answer.",
# "Plain text only.", "Formal tone please."
_NOUN_DIRECTIVE = re.compile(
    r"^(?:[\w-]+,?\s+){0,5}?(?:answers?|responses?|reply|replies|version|summary|tone|style|register|text|format|"
    r"words?|sentences?|paragraphs?|lines?|bullets?|bullet points|list|language|english|spelling|person|plural|"
    r"singular|voice|tense)(?:\s+(?:only|please|pls|max|maximum|tops))?\s*[.!]*$", re.IGNORECASE)
# A directive asked as a polite question after the task: "Could you keep it under 100 words?"
_ASKED = re.compile(
    r"^(?:please\s+)?(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:also\s+)?(?:make sure|ensure|keep|make it|"
    r"use|avoid|limit|write it|put|end|start|begin|include|stick|answer|respond|reply|format|number|sort|"
    r"not\b|try to)\b", re.IGNORECASE)
# Material after a colon: a passage to work on (a capital or a quote, four words or more).
_MATERIAL = re.compile(r"[\"“'A-Z][^\n]*?(?:\s+\S+){3,}")


_QUANTITY_IN = re.compile(r"\b(?:exactly|at most|at least|no more than|under|fewer than|less than|one|two|three|four|"
                          r"five|\d+)\s+(?:words?|sentences?|paragraphs?|lines?|bullet points?|items?)\b",
                          re.IGNORECASE)


def _clean(doc: Document, start: int, end: int) -> list[Span]:
    s, e = strip_span(doc.text, start, end, punctuation=False)
    return [] if e <= s or inside_any(s, e, doc.quotes) else [(s, e)]


def _body(doc: Document, unit: Unit) -> tuple[int, str]:
    text = doc.norm[unit.start:unit.end]
    lead = _LEAD.match(text)
    offset = lead.end() if lead else 0
    return unit.start + offset, text[offset:]


def _units(doc: Document) -> list[Unit]:
    """The sentences; in a prompt written in lower case (chat style: "ok so ... . pls dont ..."), also split
    where a sentence mark is followed by a lower-case word, which rule 1 leaves alone (``e.g. this``)."""
    if not doc.text.lstrip()[:1].islower():
        return doc.sentences
    out: list[Unit] = []
    for unit in doc.sentences:
        start = unit.start
        for m in re.finditer(r"[.!?]+\s+(?=[a-z])", doc.text[unit.start:unit.end]):
            cut = unit.start + m.start() + len(m.group().rstrip())
            if not re.search(r"\b(?:i\.e|e\.g|etc|vs)\.$", doc.text[start:cut], re.IGNORECASE):
                out.append(Unit(start, cut))
                start = unit.start + m.end()
        out.append(Unit(start, unit.end))
    return out


def without_led_task(doc: Document, spans: list[Span]) -> list[Span]:
    """Cut a span that runs from a directive over a colon into the task ("Answer only with yes or no: is
    ...?") back to the directive."""
    out = []
    for s, e in spans:
        body = doc.norm[s:e]
        lead = _LEAD_COLON.match(body)
        rest = body[lead.end():] if lead else ""
        colon = body.find(": ")
        if lead and (rest.rstrip().endswith("?") or re.match(r"(?:what|how|why|who|where|when|which|is|are|do|does)\b",
                                                              rest, re.IGNORECASE)):
            out += _clean(doc, s, s + lead.end())
        elif colon > 0 and _QUANTITY_IN.search(body[:colon]) and _MATERIAL.match(body[colon + 2:]):
            out += _clean(doc, s, s + colon + 1)  # "in exactly two sentences: The council voted ..."
        else:
            out.append((s, e))
    return out


def family_spans(doc: Document, task: int | None) -> list[Span]:
    """Rule 8 (module docstring) over ``doc``'s sentences; ``task`` is the task sentence's index (rule 7's)."""
    out: list[Span] = []
    for m in _TAG.finditer(doc.text):
        out += _clean(doc, m.start(2), m.end(2))
    units = _units(doc)
    if units is not doc.sentences:  # a lower-case prompt: its first sentence is the task
        task = 0 if task is not None or len(units) > 1 else None
    for i, unit in enumerate(units):
        start, body = _body(doc, unit)
        if _CONDITIONAL.match(body) and not body.rstrip().endswith("?"):
            out += _clean(doc, start, unit.end)
            continue
        lead = _LEAD_COLON.match(body)
        if lead and i == (task if task is not None else i):
            out += _clean(doc, start, start + lead.end())
        after_task = task is not None and i > task
        question = body.rstrip().endswith("?")
        if after_task and ((not question and (_CASUAL.match(body) or _PREFERENCE.match(body)
                                              or (_NOUN_DIRECTIVE.match(body) and not _TASK_VERB.match(body))
                                              or _QUANTITY_IN.search(body)))
                           or _ASKED.match(body)):
            out += _clean(doc, start, unit.end)
            continue
        for m in _PAREN.finditer(doc.norm, unit.start, unit.end):
            out += _clean(doc, m.start(), m.end())
        for m in _QUANTITY_TAIL.finditer(doc.norm, unit.start, unit.end):
            out += _clean(doc, m.start(1), m.end(1))
        for m in _FUSED.finditer(doc.norm, unit.start, unit.end):
            connective = re.match(r"(?:,\s*|\s)(?:[-—–]\s+)?(?:(?:but|and|while)\s+(?=only|just|never|do|don't|without|make|"
                                  r"keep|use|avoid|ensure|making|ensuring|keeping|using|staying|sticking|"
                                  r"limiting|write|limit|never))?(?:so\s+)?", doc.norm[m.start():m.end()])
            out += _clean(doc, m.start() + (connective.end() if connective else 0), m.end())
            break
    return out
