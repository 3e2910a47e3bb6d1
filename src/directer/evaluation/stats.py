"""Paired statistics for comparing two methods on the same prompts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["mcnemar", "paired_bootstrap", "PairedDifference"]


@dataclass
class PairedDifference:
    """Mean difference (b - a) of a per-prompt metric, with a paired bootstrap 95% interval."""

    diff: float
    low: float
    high: float


def paired_bootstrap(a: Sequence[float], b: Sequence[float], weights: Sequence[float] | None = None,
                     resamples: int = 2000, seed: int = 0) -> PairedDifference:
    """Bootstrap over prompts: resample prompt indices, recompute the (weighted) mean difference.

    ``weights`` turns per-prompt rates into a pooled rate, e.g. instruction-level accuracy where a prompt
    with 3 instructions counts 3 times (pass ``a``/``b`` as per-prompt rates and the instruction counts).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired samples must be non-empty and of equal length")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    ww = w[idx]
    diffs = ((y[idx] - x[idx]) * ww).sum(axis=1) / ww.sum(axis=1)
    point = float(((y - x) * w).sum() / w.sum())
    low, high = np.percentile(diffs, [2.5, 97.5])
    return PairedDifference(point, float(low), float(high))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, float]:
    """Exact McNemar test on paired binary outcomes: (a-only successes, b-only successes, two-sided p)."""
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return only_a, only_b, 1.0
    k = min(only_a, only_b)
    # Two-sided exact binomial test of k successes in n trials with p = 0.5.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return only_a, only_b, min(1.0, 2 * tail)
