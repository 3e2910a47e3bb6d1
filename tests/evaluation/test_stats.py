"""Paired statistics (evaluation/stats.py): exact McNemar, the paired bootstrap."""

from __future__ import annotations

import math

import pytest
import torch

from directer.evaluation.stats import mcnemar, paired_bootstrap


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
