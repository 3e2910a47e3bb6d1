"""Our own format checkers, for constraints IFEval has no checker for (an answer sentence, an answer in
JSON, a boxed answer); they are scored strict and loose exactly like IFEval's.

Each checker takes the response and its kwargs and says whether the response follows the instruction.
Ids are ``<namespace>:<name>``, distinct from IFEval's, and usable in task files like IFEval's ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from .answers import NUMBER_PATTERN, parse_number
from .base import loose_variants

__all__ = ["FORMAT_CHECKERS", "FormatChecker", "check_own", "own_ids"]


@dataclass(frozen=True)
class FormatChecker:
    """One of our checkers: what it is for, its check, and the kwargs it accepts."""

    description: str
    check: Callable[..., bool]
    kwargs: tuple[str, ...] = ()


def _answer_sentence(response: str) -> bool:
    # The response ends with the sentence itself: "The answer is N." (the full stop included).
    return re.search(r"(?:^|[\s.!?])The answer is (?:" + NUMBER_PATTERN + r")\.\s*$", response.strip()) is not None


def _strip_fence(text: str) -> str:
    text = text.strip()
    fenced = re.fullmatch(r"```(?:json|JSON)?\s*(.*?)\s*```", text, re.DOTALL)
    return fenced.group(1) if fenced else text


def _json_answer(response: str) -> bool:
    # The whole response is one JSON object (markdown fences allowed) whose "answer" is a number.
    try:
        data = json.loads(_strip_fence(response))
    except ValueError:
        return False
    if not isinstance(data, dict) or "answer" not in data:
        return False
    value = data["answer"]
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, str) and parse_number(value) is not None)


def _boxed(response: str) -> bool:
    # A \boxed{...} holding a number (extract_number reads boxed contents first, so this is its answer).
    return re.search(r"\\boxed\s*\{[^{}]*\d", response) is not None


FORMAT_CHECKERS: dict[str, FormatChecker] = {
    "answer_format:answer_sentence": FormatChecker(
        'the response ends with the sentence "The answer is N." (N a number)', _answer_sentence),
    "answer_format:json_answer": FormatChecker(
        'the whole response is a JSON object whose "answer" is a number (markdown fences allowed)', _json_answer),
    "answer_format:boxed": FormatChecker("the response holds a \\boxed{...} with a number in it", _boxed),
}


def own_ids() -> list[str]:
    return sorted(FORMAT_CHECKERS)


def check_own(instruction_id: str, kwargs: dict[str, Any], response: str) -> tuple[bool, bool]:
    """(strict, loose) verdicts of one of our checkers; a blank response follows nothing, as in IFEval."""
    checker = FORMAT_CHECKERS[instruction_id]
    strict = bool(response.strip()) and checker.check(response, **kwargs)
    loose = any(r.strip() and checker.check(r, **kwargs) for r in loose_variants(response))
    return bool(strict), bool(loose)
