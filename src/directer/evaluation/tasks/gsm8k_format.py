"""GSM8K-Format: grade-school maths problems with a format constraint appended, scored for both the
format (F.Acc, strict and loose) and the answer (T.Acc), as in the DIRECTER paper's task-fidelity test.

The paper names the benchmark and its two metrics but not its constraints, so this is **our
reconstruction** (version ``GSM8K_FORMAT_VERSION``): each GSM8K test problem gets one of the
:data:`FORMATS` below, appended after a blank line, and that constraint is the instruction span that
steering amplifies. Nine constraints are IFEval instructions (IFEval's wording and reference
checkers); three ask for the answer in a form graders read (an answer sentence, JSON, ``\\boxed{}``),
checked by :mod:`.formats`. Constraints are dealt out by a seeded shuffle (seed
``ASSIGNMENT_SEED``), cycling through the list so that every constraint gets a twelfth of the problems;
the assignment is part of the version: changing the list or the seed is a new version.

The problems come from the user: ``--data FILE`` (JSON lines with ``question`` and ``answer``, the
answer GSM8K's worked solution ending ``#### N`` or the bare number), or, only when asked, the
Hub's ``openai/gsm8k`` (``main``, ``test`` split) through the ``datasets`` library.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UsageError
from .answers import gsm8k_reference, parse_number
from .base import EvalItem
from .jsonl import read_json_lines

__all__ = ["ASSIGNMENT_SEED", "Format", "FORMATS", "GSM8K_FORMAT_VERSION", "gsm8k_format_items", "load_gsm8k"]

GSM8K_FORMAT_VERSION = "1"
ASSIGNMENT_SEED = 0
HUB_DATASET = ("openai/gsm8k", "main", "test")


@dataclass(frozen=True)
class Format:
    """A format constraint: the checker id and its arguments, and the sentence appended to the problem."""

    id: str
    text: str
    kwargs: dict[str, Any] = field(default_factory=dict)


FORMATS: tuple[Format, ...] = (
    Format("answer_format:answer_sentence",
           'End your response with the sentence "The answer is N." where N is your final answer, a number.'),
    Format("answer_format:json_answer",
           'Give your entire response as a JSON object, with your final answer, a number, under the key "answer".'),
    Format("answer_format:boxed", "Put your final answer, a number, inside \\boxed{}."),
    Format("change_case:english_lowercase",
           "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."),
    Format("punctuation:no_comma", "In your entire response, refrain from the use of any commas."),
    Format("length_constraints:number_sentences", "Your response should contain less than 4 sentences.",
           {"num_sentences": 4, "relation": "less than"}),
    Format("detectable_format:number_highlighted_sections",
           "Highlight at least 2 sections in your answer with markdown, i.e. *highlighted section*.",
           {"num_highlights": 2}),
    Format("startend:quotation", "Wrap your entire response with double quotation marks."),
    Format("change_case:english_capital", "Your entire response should be in English, and in all capital letters."),
    Format("startend:end_checker",
           "Finish your response with this exact phrase Is there anything else I can help with?. "
           "No other words should follow this phrase.", {"end_phrase": "Is there anything else I can help with?"}),
    Format("detectable_format:number_bullet_lists",
           "Your answer must contain exactly 3 bullet points. Use the markdown bullet points such as:\n"
           "* This is point 1.\n* This is point 2", {"num_bullets": 3}),
    Format("detectable_format:title",
           "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."),
)


def _rows_from_file(path: Path) -> list[tuple[str, str]]:
    rows = []
    for number, row in read_json_lines(path, "--data")[1]:
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "answer" not in row:
            raise UsageError(f"{path}:{number}: a record needs a string 'question' and an 'answer' "
                             "(GSM8K's solution ending '#### N', or the number)")
        rows.append((row["question"], _reference(row["answer"], f"{path}:{number}")))
    if not rows:
        raise UsageError(f"--data {path} holds no problems")
    return rows


def _reference(answer: Any, where: str) -> str:
    text = str(answer)
    final = gsm8k_reference(text) if "####" in text else text.strip()
    if parse_number(final) is None:
        raise UsageError(f"{where}: the answer {final!r} is not a number: GSM8K answers end with '#### <number>'")
    return final


def _rows_from_hub() -> list[tuple[str, str]]:
    try:
        import datasets
    except ImportError:
        raise UsageError("GSM8K comes from the Hub through the `datasets` library, which is not installed: "
                         "pip install datasets, or pass --data FILE (JSON lines with question and answer)") from None
    name, config, split = HUB_DATASET
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - the Hub and datasets raise many kinds; the user needs one line
        raise UsageError(f"cannot load {name} ({config}, {split}) from the Hub: {type(exc).__name__}: {exc}; "
                         "pass --data FILE to use a local copy") from None
    return [(r["question"], _reference(r["answer"], f"{name} row {i}")) for i, r in enumerate(data)]


def load_gsm8k(data: str | None) -> tuple[list[tuple[str, str]], str]:
    """The (question, final answer) pairs and their sha256: from ``data`` (a JSON-lines file) or, when
    ``data`` is None, from the Hub."""
    rows = _rows_from_file(Path(data)) if data is not None else _rows_from_hub()
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    return rows, digest


def gsm8k_format_items(rows: list[tuple[str, str]]) -> list[EvalItem]:
    """One item per problem, keyed by its index in the data, with its seeded format constraint."""
    order = list(range(len(rows)))
    random.Random(ASSIGNMENT_SEED).shuffle(order)
    assigned = {row: FORMATS[j % len(FORMATS)] for j, row in enumerate(order)}
    items = []
    for i, (question, answer) in enumerate(rows):
        fmt = assigned[i]
        items.append(EvalItem(key=i, prompt=f"{question.strip()}\n\n{fmt.text}", instruction_id_list=[fmt.id],
                              kwargs=[dict(fmt.kwargs)], instructions=[fmt.text], answer=answer, matcher="number"))
    return items
