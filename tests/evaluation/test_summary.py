"""The comparison table (evaluation/summary.py): time ratios only between methods timed alike."""

from __future__ import annotations

import pytest


def _timed_records(n: int, seconds: float, timing: dict | None) -> list[dict]:
    stats = {"steps": 10, "gate_skips": 5, "fallbacks": 0, "trials": 5, "accepted": {}}
    recs = [{"key": k, "response": "a b c d", "spans": [], "num_tokens": 10, "finish_reason": "eos",
             "perplexity": 1.0, "stats": stats, "cost_seconds": seconds} for k in range(n)]
    for r in recs:
        if timing is not None:
            r["timing"] = timing
    return recs


@pytest.mark.parametrize("other_timing, comparable", [
    ({"threads": 2, "device": "cpu"}, True),
    ({"threads": 1, "device": "cpu"}, False),
    (None, False),
])
def test_time_ratio_only_between_records_timed_alike(other_timing, comparable):
    from directer.evaluation.tasks.ifeval import PromptScore
    from directer.evaluation.summary import compare, markdown_table, summarize_method

    scores = [PromptScore(k, ["punctuation:no_comma"], [k % 2 == 0], [True]) for k in range(6)]
    base = _timed_records(6, 0.1, {"threads": 2, "device": "cpu"})
    other = _timed_records(6, 0.3, other_timing)
    s = summarize_method("directer", other, scores)
    compare((base, scores), (other, scores), s)
    if comparable:
        assert s.time_ratio == pytest.approx(3.0) and not s.time_note
    else:
        assert s.time_ratio is None and "none with 2 threads on cpu" in s.time_note
        assert "no ratio" in markdown_table([s])


def test_task_accuracy_columns_and_answer_only_items():
    from directer.evaluation.summary import compare, markdown_table, summarize_method
    from directer.evaluation.tasks.base import PromptScore

    recs = _timed_records(6, 0.1, {"threads": 2, "device": "cpu"})
    # four items with a format check and an answer, two with an answer only
    base = [PromptScore(k, ["punctuation:no_comma"], [k == 0], [k < 2], answer=k == 1) for k in range(4)]
    base += [PromptScore(k, [], [], [], answer=False) for k in (4, 5)]
    other = [PromptScore(k, ["punctuation:no_comma"], [True], [True], answer=k in (1, 2)) for k in range(4)]
    other += [PromptScore(k, [], [], [], answer=True) for k in (4, 5)]
    s_base, s = summarize_method("none", recs, base), summarize_method("directer", recs, other)
    assert (s_base.prompt_strict, s_base.prompt_loose) == (0.25, 0.5)  # over the four checked items only
    assert (s_base.task_acc, s_base.both_strict) == (1 / 6, 0.0)
    assert (s.prompt_strict, s.task_acc, s.both_strict) == (1.0, 4 / 6, 4 / 6)  # answer-only: both = answer
    compare((recs, base), (recs, other), s)
    assert s.diffs["prompt_strict"][0] == pytest.approx(0.75) and s.diffs["task_acc"][0] == pytest.approx(0.5)
    assert s.mcnemar[:2] == [0, 3] and s.mcnemar_task[:2] == [0, 3]
    table = markdown_table([s_base, s])
    assert "task acc." in table and "format strict + task" in table and "| 16.7 |" in table


def test_no_answer_columns_without_answers():
    from directer.evaluation.summary import markdown_table, summarize_method
    from directer.evaluation.tasks.base import PromptScore

    s = summarize_method("none", _timed_records(2, 0.1, None),
                         [PromptScore(k, ["punctuation:no_comma"], [True], [True]) for k in range(2)])
    assert s.task_acc is None and "task acc." not in markdown_table([s])
