"""Task accuracy: a response's final answer, and whether it matches the reference.

The numeric extractor (GSM8K and ``matcher: number``) reads the final answer the way a careful grader
would whatever format the response was asked for, in this order, the first that yields a number:

1. the last ``\\boxed{...}``;
2. the ``answer`` field of a JSON object (the whole response, or a fenced ``json`` block);
3. the last "answer is N", "answer: N", "answer = N" or "#### N" (any case, so an all-capitals
   "THE ANSWER IS 18" counts);
4. the last number anywhere in the response.

A number may carry a sign, thousands separators, decimals, a currency sign or a percent sign, and may
be written with a trailing full stop; ``1,000``, ``$1000.00`` and ``1000`` are the same answer.
Numbers compare exactly as decimals. ``exact`` compares the response's text, stripped of surrounding
whitespace, quotes and a final full stop, case-insensitively; ``regex`` is :func:`re.search` of the
reference pattern in the response.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

__all__ = ["MATCHERS", "NUMBER_PATTERN", "answer_matches", "extract_number", "gsm8k_reference", "parse_number"]

MATCHERS = ("number", "exact", "regex")

NUMBER_PATTERN = r"[-+−]?\s?[$€£]?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\s?[$€£]?\s?\.\d+"
_NUMBER_RE = re.compile(NUMBER_PATTERN)
_CUE_RE = re.compile(r"(?:answer\s*(?:is|:|=)|####)\s*:?\s*\**\s*(" + NUMBER_PATTERN + ")", re.IGNORECASE)


def parse_number(text: str) -> Decimal | None:
    """The number ``text`` holds (signs, separators, currency, %, a final full stop allowed), or None."""
    cleaned = text.strip().rstrip(".").replace(",", "").replace("−", "-")
    cleaned = re.sub(r"[\s$€£%*]", "", cleaned)
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _boxed(response: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, braces balanced (``\\boxed{\\frac{1}{2}}`` whole)."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", response):
        depth, i = 1, m.end()
        while i < len(response) and depth:
            depth += {"{": 1, "}": -1}.get(response[i], 0)
            i += 1
        if depth == 0:
            out.append(response[m.end():i - 1])
    return out


def _json_answer(response: str) -> str | None:
    text = response.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL | re.IGNORECASE)
    for candidate in ([fenced.group(1)] if fenced else []) + [text]:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            value = next((v for k, v in data.items() if str(k).lower() == "answer"), None)
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                return str(value)
    return None


def extract_number(response: str) -> Decimal | None:
    """The response's final numeric answer by the documented order (module docstring), or None."""
    for content in reversed(_boxed(response)):
        numbers = _NUMBER_RE.findall(content)
        if numbers and (value := parse_number(numbers[-1])) is not None:
            return value
    if (value_text := _json_answer(response)) is not None:
        numbers = _NUMBER_RE.findall(value_text)
        if numbers and (value := parse_number(numbers[-1])) is not None:
            return value
    cues = _CUE_RE.findall(response)
    if cues and (value := parse_number(cues[-1])) is not None:
        return value
    numbers = _NUMBER_RE.findall(response)
    return parse_number(numbers[-1]) if numbers else None


def gsm8k_reference(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after its ``####``."""
    if "####" not in solution:
        raise ValueError("a GSM8K answer must end with '#### <number>'")
    return solution.rsplit("####", 1)[1].strip()


def _plain(text: str) -> str:
    return text.strip().strip("\"'“”‘’`").strip().rstrip(".").strip().casefold()


def answer_matches(response: str, answer: str, matcher: str = "number") -> bool:
    """Whether ``response`` gives ``answer`` under ``matcher`` (number, exact or regex)."""
    if matcher == "number":
        gold = parse_number(answer)
        if gold is None:
            raise ValueError(f"reference answer {answer!r} is not a number (use matcher exact or regex)")
        found = extract_number(response)
        return found is not None and found == gold
    if matcher == "exact":
        return _plain(response) == _plain(answer)
    if matcher == "regex":
        return re.search(answer, response) is not None
    raise ValueError(f"unknown matcher {matcher!r}: use one of {', '.join(MATCHERS)}")
