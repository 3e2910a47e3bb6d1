"""Sampling draws: the user's distribution transforms and reproducible draws, per request (the
settings are :class:`~directer.methods.sampling.SamplingParams`).

The transforms are transformers' own logits warpers, in the order ``model.generate(do_sample=True)``
applies them (temperature, top-k, top-p, min-p), on float32 logits, then a softmax: the distribution a
raw draw comes from is exactly the one ``generate`` samples. The draws are counter-based: the uniform
behind draw ``k`` of step ``t`` of a request depends only on (the request's stream, t, k), never on
which other requests share a forward, when it was admitted or how many draws came before. So one
seed gives the same tokens whatever the batch composition or the scheduling. Draw 0 of a step is
the raw pass's token; draw ``k + 1`` is trial ``k``'s token (README, Fidelity: sampling).

Temperature 0 means greedy: the argmax, no randomness, no warpers.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from ..methods.sampling import SamplingParams

if TYPE_CHECKING:
    import torch

__all__ = ["Sampler", "inverse_cdf"]


class Sampler:
    """One request's draws. Greedy settings take the argmax and hold no warpers."""

    def __init__(self, params: SamplingParams, stream: str):
        self.params = params
        self.stream = stream
        self.warpers = None
        if not params.greedy:
            from transformers import LogitsProcessorList
            from transformers.generation.logits_process import (
                MinPLogitsWarper,
                TemperatureLogitsWarper,
                TopKLogitsWarper,
                TopPLogitsWarper,
            )

            warpers = []  # generate's order and conditions (a transform that is off is left out)
            if params.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                warpers.append(TopKLogitsWarper(top_k=params.top_k))
            if params.top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p=params.top_p))
            if params.min_p:
                warpers.append(MinPLogitsWarper(min_p=params.min_p))
            self.warpers = LogitsProcessorList(warpers)

    @property
    def greedy(self) -> bool:
        return self.warpers is None

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The float32 distribution draws come from: the warped softmax of one row of logits [V]."""
        import torch

        z = logits.float()[None]
        z = self.warpers(torch.empty((1, 0), dtype=torch.long, device=z.device), z)
        return torch.softmax(z, dim=-1)[0]

    def draw(self, logits: torch.Tensor, step: int, k: int) -> tuple[int, torch.Tensor | None]:
        """Draw ``k`` of step ``step`` (0: the raw token, k + 1: trial k's token) and the distribution it
        came from (None under greedy)."""
        if self.greedy:
            return int(logits.argmax()), None
        probs = self.distribution(logits)
        return inverse_cdf(probs, self.uniform(step, k)), probs

    def uniform(self, step: int, k: int) -> float:
        # String seeds go through SHA-512 in CPython: stable across processes and platforms.
        return random.Random(f"{self.stream}:{step}:{k}").random()


def inverse_cdf(probs: torch.Tensor, u: float) -> int:
    """The token whose cumulative-probability interval holds ``u`` (a token of probability 0 never)."""
    import torch

    cdf = probs.double().cumsum(0)
    x = torch.tensor(u, dtype=torch.float64, device=cdf.device) * cdf[-1]
    index = int(torch.searchsorted(cdf, x[None], right=True)[0])
    if index >= probs.shape[0]:  # u * total rounded up to the total: the last token that can be drawn
        index = int(probs.nonzero()[-1])
    return index

