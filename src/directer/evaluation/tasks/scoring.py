"""Scoring any benchmark's item: IFEval's reference checkers for IFEval ids, ours for our format ids
(:mod:`.formats`), and the answer matcher for task accuracy."""

from __future__ import annotations

from dataclasses import replace

from ...errors import UsageError
from .answers import answer_matches
from .base import EvalItem, PromptScore
from .formats import FORMAT_CHECKERS, check_own
from .ifeval import checker_package, score_response

__all__ = ["check_ids", "score_item"]


def check_ids(ids: list[str], where: str) -> None:
    """Refuse an instruction id that neither IFEval's registry nor ours knows, naming ``where``."""
    registry = checker_package().INSTRUCTION_DICT
    unknown = [i for i in ids if i not in registry and i not in FORMAT_CHECKERS]
    if unknown:
        raise UsageError(f"{where}: unknown check id(s) {', '.join(unknown)}: use an IFEval instruction id "
                         f"(e.g. punctuation:no_comma) or one of {', '.join(sorted(FORMAT_CHECKERS))}")


def score_item(item: EvalItem, response: str) -> PromptScore:
    """Every check of ``item`` (strict and loose, in the item's order) and its answer, if it has one."""
    if len(item.kwargs) != len(item.instruction_id_list):
        raise UsageError(f"item {item.key}: {len(item.instruction_id_list)} checks but {len(item.kwargs)} kwargs entries")
    own = [i for i, iid in enumerate(item.instruction_id_list) if iid in FORMAT_CHECKERS]
    strict: list[bool] = [False] * len(item.instruction_id_list)
    loose: list[bool] = [False] * len(item.instruction_id_list)
    reference = [i for i in range(len(item.instruction_id_list)) if i not in own]
    if reference:
        # The reference functions see only their own ids; the key still seeds their random draws.
        sub = replace(item, instruction_id_list=[item.instruction_id_list[i] for i in reference],
                      kwargs=[item.kwargs[i] for i in reference])
        score = score_response(sub, response)
        for j, i in enumerate(reference):
            strict[i], loose[i] = score.strict[j], score.loose[j]
    for i in own:
        strict[i], loose[i] = check_own(item.instruction_id_list[i], item.kwargs[i], response)
    answer = None if item.answer is None else answer_matches(response, item.answer, item.matcher)
    return PromptScore(key=item.key, instruction_ids=list(item.instruction_id_list), strict=strict, loose=loose,
                       answer=answer)
