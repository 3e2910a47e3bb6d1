"""What every benchmark hands the evaluation: items (a prompt, its instructions and what checks a
response) and per-response scores.

An :class:`EvalItem` carries IFEval-style checks (``instruction_id_list`` with one ``kwargs`` dict
each: a reference IFEval checker id, or one of our own format checkers from
:mod:`directer.evaluation.tasks.formats`), optionally a reference ``answer`` with its ``matcher``
(task accuracy), and the instruction spans to steer: ``instructions`` (exact texts of the prompt) or
None for the automatic detector. IFEval, GSM8K-Format and user task files all produce these, so the
run directory, the summary and the report need not know which benchmark they hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EvalItem", "loose_variants", "PromptScore"]


@dataclass
class EvalItem:
    """One prompt of a benchmark and what its response is checked against."""

    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]
    # Instruction texts to steer, each a substring of the prompt (its last occurrence is steered);
    # None: detected automatically from the prompt and the checks.
    instructions: list[str] | None = None
    answer: str | None = None  # the reference answer, for task accuracy
    matcher: str = "number"  # how ``answer`` is matched: number, exact or regex (see answers.py)
    # Automatic spans: "general" (all rules) or "ifeval" (rules 1-6, with which IFEval is evaluated,
    # so that its results stay comparable; see docs/autospans.md).
    span_rules: str = "general"


@dataclass
class PromptScore:
    """Checker verdicts for one response: one entry per instruction, in the prompt's order, and whether
    the answer is right (None: the item has no reference answer)."""

    key: int
    instruction_ids: list[str]
    strict: list[bool]
    loose: list[bool]
    answer: bool | None = None

    @property
    def prompt_strict(self) -> bool:
        """The prompt counts as followed (strict) only if every instruction is."""
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)

    @property
    def both_strict(self) -> bool:
        """Format followed (strict) and answer right: what a user of a formatted answer needs."""
        return self.prompt_strict and bool(self.answer)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prompt_strict": self.prompt_strict, "prompt_loose": self.prompt_loose}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptScore:
        """Inverse of :meth:`to_dict` (the derived prompt-level fields are ignored)."""
        answer = data.get("answer")
        return cls(key=data["key"], instruction_ids=list(data["instruction_ids"]),
                   strict=[bool(v) for v in data["strict"]], loose=[bool(v) for v in data["loose"]],
                   answer=None if answer is None else bool(answer))


def loose_variants(response: str) -> list[str]:
    """IFEval's eight loose variants of a response: as it is, without its first line, its last line or
    both, each also with every ``*`` removed (a checker passes loosely if it passes on any)."""
    lines = response.split("\n")
    cuts = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return cuts + [c.replace("*", "") for c in cuts]
