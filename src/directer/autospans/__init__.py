"""Automatic instruction spans: find the constraint wording in a prompt that mixes a task and its
constraints (IFEval-style), so that it can be steered without marking it by hand.

``detect`` holds the entry points and the rules, ``clauses`` the selection over one prompt,
``segmentation`` sentences and quotes, ``cues`` the cue vocabulary, ``coverage`` the measured coverage
on IFEval (``python -m directer.autospans.coverage``). Used by the API and the server
(``instructions="auto"``) and by the evaluation; it depends on nothing else in the package.
"""

from .detect import (GENERAL_CUES, ID_PATTERNS, LANGUAGES, detect_instructions, detect_spans, instruction_anchors,
                     last_occurrences, occurrences)

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
