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

from ..methods.sampling import SamplingParams, stream_key

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

            # generate's order and conditions (a transform that is off is left out): temperature and
            # top-k, then top-p, then min-p
            before = []
            if params.temperature != 1.0:
                before.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                before.append(TopKLogitsWarper(top_k=params.top_k))
            self.warpers = LogitsProcessorList(before)
            self.top_p = TopPLogitsWarper(top_p=params.top_p) if params.top_p < 1.0 else None
            self.min_p = MinPLogitsWarper(min_p=params.min_p) if params.min_p else None

    @classmethod
    def for_request(cls, sampling: SamplingParams, prompt_key: int, sample_index: int) -> "Sampler | None":
        """The sampler of one request (None under greedy decoding); its seed must be resolved."""
        if sampling.greedy:
            return None
        if sampling.seed is None:
            raise ValueError("a sampled request needs a seed (Directer resolves a missing one)")
        return cls(sampling, stream_key(sampling.seed, prompt_key, sample_index))

    @property
    def greedy(self) -> bool:
        return self.warpers is None

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The float32 distribution draws come from: the warped softmax of one row of logits [V]."""
        import torch

        none = torch.empty((1, 0), dtype=torch.long, device=logits.device)
        z = self.warpers(none, logits.float()[None])
        if self.top_p is not None:
            z = _nucleus(self.top_p, none, z, self.params.top_k)
        if self.min_p is not None:
            z = self.min_p(none, z)
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


CANDIDATES = 512  # top-p on this many candidates when they hold the nucleus (a full sort costs ~10x)
STAND_INS = 4096  # at most this many stand-ins for the other tokens


def _nucleus(warper, none: torch.Tensor, z: torch.Tensor, top_k: int) -> torch.Tensor:
    """transformers' TopPLogitsWarper on [1, V] scores, run on a short equivalent input when one exists.

    The warper sorts all V scores. The same result comes from the K best scores plus n equal stand-ins
    sharing the mass of all the others (each logit log(mass / n): every candidate's probability is
    unchanged), provided the stand-ins sort below every candidate (mass / n below the smallest
    candidate's) and the warper removes them (mass at most 1 - top_p): then every other token is
    removed in the full computation too, and each candidate sees the same ascending cumulative mass.
    Otherwise (a nucleus of more than K tokens) the warper runs on all V scores.
    """
    import math

    import torch

    V = z.shape[-1]
    k = min(top_k, CANDIDATES) if top_k else CANDIDATES
    if k >= V:
        return warper(none, z)
    values, index = z[0].topk(k)
    total = torch.logsumexp(z[0], dim=0)
    rest = float(1.0 - torch.exp(torch.logsumexp(values, dim=0) - total))  # the others' probability mass
    smallest = float(torch.exp(values[-1] - total))
    if rest > 1.0 - warper.top_p or not smallest > 0:
        return warper(none, z)
    n = math.ceil(rest / smallest) + 1 if rest > 0 else 1
    if n > STAND_INS:
        return warper(none, z)
    stand_in = (total + math.log(rest / n)) if rest > 0 else torch.tensor(-float("inf"), device=z.device)
    short = warper(none, torch.cat([values, stand_in.expand(n)])[None])[0]
    if bool((short[k:] > -float("inf")).any()):  # a stand-in survived: decide on the full scores
        return warper(none, z)
    out = torch.full_like(z, -float("inf"))
    out[0, index] = short[:k]
    return out


def inverse_cdf(probs: torch.Tensor, u: float) -> int:
    """The token whose cumulative-probability interval holds ``u`` (a token of probability 0 never)."""
    import torch

    cdf = probs.double().cumsum(0)
    x = torch.tensor(u, dtype=torch.float64, device=cdf.device) * cdf[-1]
    index = int(torch.searchsorted(cdf, x[None], right=True)[0])
    if index >= probs.shape[0]:  # u * total rounded up to the total: the last token that can be drawn
        index = int(probs.nonzero()[-1])
    return index

