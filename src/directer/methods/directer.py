"""DIRECTER (docs/method.md §4-6): the skip gate, the halving schedule over the layer ranking, and the
plausibility check (Eq. 2), in paper and reference mode, with the paper's ablations."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..errors import UsageError
from ..results import Ranking
from .base import MODES, Method, RawStep, check_positive, plausible
from .registry import register_method
from .sensitivity import paper_scores, rank_from_scores, reference_scores
from .trial import Trial

if TYPE_CHECKING:
    import torch

__all__ = ["Directer", "halving_sizes"]

# The released code gives up after this many trials (docs/method.md §6.6).
REFERENCE_MAX_TRIALS = 10
# Tolerance of the released code's skip gate (docs/method.md §6.4).
REFERENCE_GATE_EPS = 1e-9


@register_method("directer")
@dataclass
class Directer(Method):
    """DIRECTER (docs/method.md §4): gate, halving schedule over the ranking, plausibility check (Eq. 2).

    ``mode="reference"`` reproduces the authors' released code (§6): no gate on the first step and a
    1e-9 tolerance later, strict acceptance with the softmax in the model's dtype, no single-layer trial
    and at most 10 trials. Ablations (docs/method.md §8): ``ranking="reversed"`` or ``"random"`` (a seeded
    layer order per prompt instead of the sensitivity ranking) and ``positions="random"`` (as many
    seeded random prompt positions outside the instruction, instead of the instruction).
    """

    alpha: float = 100.0
    beta: float = 0.5
    mode: str = "paper"
    gate: bool = True
    ranking: str = "sensitivity"  # "sensitivity" | "reversed" | "random"
    positions: str = "instruction"  # "instruction" | "random"
    seed: int = 0

    name = "directer"
    steers = True

    def __post_init__(self) -> None:
        check_positive("directer alpha", self.alpha, " (the paper uses 100; 1 disables steering)")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.ranking not in ("sensitivity", "reversed", "random"):
            raise UsageError(f"unknown directer ranking {self.ranking!r}: choose sensitivity, reversed or random")
        if self.positions not in ("instruction", "random"):
            raise UsageError(f"unknown directer positions {self.positions!r}: choose instruction or random")

    @property
    def needs_ranking(self) -> bool:  # type: ignore[override]
        return self.ranking != "random"

    @property
    def uses_beta(self) -> bool:
        return True

    def skip(self, raw: RawStep) -> bool:
        if not self.gate:
            return False
        if self.mode == "reference":
            return raw.step > 0 and not _reference_steering_possible(raw.top2, self.beta)
        # Exact under greedy decoding: nothing but the raw top-1 can pass Eq. 2.
        return float(raw.top2[1]) < self.beta * float(raw.top2[0])

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        if self.ranking == "random":
            order = list(range(num_layers))
            random.Random(_mix(self.seed, seed_key)).shuffle(order)
        else:
            assert ranking is not None, "DIRECTER needs a layer ranking"
            order = list(ranking.order) if self.ranking == "sensitivity" else list(reversed(ranking.order))
        sizes = halving_sizes(num_layers)
        if self.mode == "reference":
            # Trial k (1-based) runs only if its set has more than one layer and k <= 10.
            sizes = [s for k, s in enumerate(sizes, start=1) if s > 1 and k <= REFERENCE_MAX_TRIALS]
        # The first trial steers every layer, whatever the order.
        sets = [frozenset(range(num_layers))] + [frozenset(order[:s]) for s in sizes[1:]]
        return [Trial(layers, self.alpha) for layers in sets[: len(sizes)]]

    @property
    def trials_every_step(self) -> bool:
        return not self.gate

    def trials_before_ranking(self, num_layers: int) -> list[Trial]:
        # The first trial steers every layer, whatever the order (see schedule).
        return [Trial(frozenset(range(num_layers)), self.alpha)]

    def rank_layers(self, pre, post, pre_s, post_s) -> Ranking:
        scores = (reference_scores if self.mode == "reference" else paper_scores)(pre, post, pre_s, post_s)
        return rank_from_scores(scores, self.mode)

    def accept(self, raw: RawStep, token: int) -> bool:
        if self.mode == "reference":
            p = raw.logits.softmax(dim=-1)  # model dtype, as released
            return float(p[token] - self.beta * p[int(raw.logits.argmax())]) > 0
        return plausible(raw, token, self.beta)

    def steering_positions(self, input_ids: Sequence[int], positions: Sequence[int], seed_key: int = 0) -> list[int]:
        if self.positions == "instruction":
            return list(positions)
        # Cached prompt positions (the last prompt token is the first query) outside the instruction.
        taken = set(positions)
        pool = [i for i in range(len(input_ids) - 1) if i not in taken] or list(range(len(input_ids) - 1))
        rng = random.Random(_mix(self.seed, seed_key))
        return sorted(rng.sample(pool, min(len(taken), len(pool))))


def halving_sizes(num_layers: int) -> list[int]:
    """L, floor(L/2), floor(L/4), ..., 1: the layer-set sizes of the weakening schedule."""
    sizes, k = [], 0
    while True:
        s = max(1, num_layers // (2**k))
        if sizes and s == sizes[-1]:
            break
        sizes.append(s)
        if s == 1:
            break
        k += 1
    return sizes


def _mix(seed: int, key: int) -> int:
    return (int(seed) * 1_000_003 + int(key)) & 0xFFFFFFFF


def _reference_steering_possible(top2: torch.Tensor, beta: float, eps: float = REFERENCE_GATE_EPS) -> bool:
    """The released code's gate, evaluated in float32 tensor arithmetic as it is there (the 1e-9
    tolerance vanishes in float32, and a top-2 sum rounded above 1 counts as "no room": skip)."""
    x, y = top2[0], top2[1]
    ok = ((x + y) <= (1.0 + eps)) & (y <= (x + eps)) & (y >= (beta * x - eps))
    ok = ok & (x >= -eps) & (x <= 1.0 + eps) & (y >= -eps) & (y <= 1.0 + eps)
    return bool(ok)
