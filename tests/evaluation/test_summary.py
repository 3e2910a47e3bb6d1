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
