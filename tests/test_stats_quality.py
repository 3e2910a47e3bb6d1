"""Paired statistics and the judge-free quality signals."""

from __future__ import annotations

import math

import pytest
import torch

from directer.quality import perplexities, repetition, restates_instruction
from directer.stats import mcnemar, paired_bootstrap

from tiny import tiny_model


def test_mcnemar_exact_two_sided():
    a = [True] * 10 + [False] * 10
    b = [True] * 10 + [True] * 8 + [False] * 2  # 8 discordant pairs, all in b's favour
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == (0, 8)
    assert p == pytest.approx(2 * 0.5**8)
    assert mcnemar(a, a)[2] == 1.0
    # 3 vs 5 discordant: two-sided exact p = 2 * P(X <= 3 | n=8, 1/2)
    x = [True, True, True, False, False, False, False, False]
    y = [not v for v in x]
    assert mcnemar(x, y)[2] == pytest.approx(2 * sum(math.comb(8, i) for i in range(4)) / 256)


def test_paired_bootstrap_interval_contains_the_difference_and_is_seeded():
    rng = torch.Generator().manual_seed(0)
    a = (torch.rand(300, generator=rng) < 0.5).float().tolist()
    b = [min(1.0, v + (1.0 if i % 5 == 0 else 0.0)) for i, v in enumerate(a)]
    d = paired_bootstrap(a, b)
    assert d.low <= d.diff <= d.high and d.low > 0
    assert d.diff == pytest.approx(sum(y - x for x, y in zip(a, b)) / len(a))
    assert paired_bootstrap(a, b) == d
    same = paired_bootstrap(a, a)
    assert same.diff == same.low == same.high == 0.0


def test_weighted_bootstrap_pools_instruction_counts():
    # Prompt 1: 1 of 1 followed; prompt 2: 0 of 3 -> pooled 1/4, not the mean of rates 1/2.
    d = paired_bootstrap([0.0, 0.0], [1.0, 0.0], weights=[1, 3])
    assert d.diff == pytest.approx(0.25)


def test_repetition_and_restatement():
    assert repetition("a b c d e f g h") == 0.0
    loop = "the summer breeze " * 10
    assert repetition(loop) > 0.8
    instr = ["Do not use any commas in your response."]
    assert restates_instruction("Do not use any commas in your response. Do not use any commas.", instr)
    assert restates_instruction("do not use any commas", instr)
    assert not restates_instruction("Leaves fall slowly\nGolden light on quiet paths\nAutumn breathes its last", instr)
    assert not restates_instruction("", instr)
    # Over-steered word salad made of the instruction's words (seen with static steering at alpha 100).
    assert restates_instruction("use the any commas in in response your do use not commas any the", instr)
    assert not restates_instruction("Not one comma appears in this response, which is about the sea.", instr)


def test_perplexity_matches_a_direct_computation():
    model = tiny_model("llama")
    prompts, responses = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], []]
    ppl = perplexities(model, prompts, responses, batch_size=2)
    assert ppl[1] is None
    ids = torch.tensor([prompts[0] + responses[0]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    nll = -sum(logp[3 + i, responses[0][i]] for i in range(3)) / 3
    assert ppl[0] == pytest.approx(math.exp(float(nll)), rel=1e-4)


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
    from directer.ifeval import PromptScore
    from directer.summary import compare, markdown_table, summarize_method

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


def test_wilson_interval_contains_the_proportion():
    # Rounding once put the lower bound of 0/27 above 0, which the report's error bars refused.
    from directer.report import wilson

    for n in range(1, 61):
        for k in range(n + 1):
            lo, hi = wilson(k / n, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def test_report_figures_with_zero_and_full_categories():
    from directer.report import _figures
    from directer.summary import MethodSummary

    summaries = [MethodSummary(m, 27, 0.0, 0.0, 1.0, 1.0, categories={"combination": [0.0, 0.0, 27],
                                                                      "startend": [1.0, 1.0, 21]})
                 for m in ("none", "directer")]
    figs = _figures(summaries)
    assert set(figs) >= {"accuracy", "categories"} and all(f.startswith(b"\x89PNG") for f in figs.values())
