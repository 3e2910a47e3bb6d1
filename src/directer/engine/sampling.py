"""Sampling draws: the user's distribution transforms and reproducible draws, per request (the
settings are :class:`~directer.methods.sampling.SamplingParams`).

The transforms are transformers' own logits warpers, in the order ``model.generate(do_sample=True)``
applies them (temperature, top-k, top-p, min-p), on float32 logits, then a softmax: the distribution a
raw draw comes from is exactly the one ``generate`` samples. The draws are counter-based: the uniform
behind draw ``k`` of step ``t`` of a request depends only on (the request's stream, t, k), never on
which other requests share a forward, when it was admitted or how many draws came before. So one
seed gives the same tokens whatever the batch composition or the scheduling. Draw 0 of a step is
the raw pass's token; draw ``k + 1`` is trial ``k``'s token (README, Fidelity: sampling).

A forward's draws are made together on the device (:func:`draw_rows`): the uniforms are known on the
host before the forward, the rows of one setting are warped as one batch and inverted in one
``searchsorted``, and the tokens reach the host in the forward's one read-back
(:mod:`directer.engine.readback`). Temperature 0 means greedy: the argmax, no randomness, no warpers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..methods.sampling import SamplingParams, stream_key
from .staging import stage

if TYPE_CHECKING:
    import torch

__all__ = ["Draw", "Sampler", "draw_rows", "inverse_cdf", "inverse_cdf_rows"]


class Sampler:
    """One request's draws. Greedy settings take the argmax and hold no warpers."""

    def __init__(self, params: SamplingParams, stream: str):
        self.params = params
        self.stream = stream
        # requests whose draws can be warped as one batch: the same transforms (the seed only moves u)
        self.setting = (params.temperature, params.top_k, params.top_p, params.min_p)
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
        return self.warp(logits[None])[0]

    def warp(self, logits: torch.Tensor, sort: bool = False) -> torch.Tensor:
        """The warped softmax of rows ``[n, V]`` of logits, row by row what :meth:`distribution` gives.
        ``sort``: top-p sorts every row (one batched sort: a GPU's choice); else each row goes through
        the candidates' shortcut (:func:`_nucleus`: far cheaper on a CPU, reading the device per row)."""
        import torch

        none = torch.empty((logits.shape[0], 0), dtype=torch.long, device=logits.device)
        z = self.warpers(none, logits.float())
        if self.top_p is not None:
            if sort:
                z = self.top_p(none, z)
            else:
                z = torch.cat([_nucleus(self.top_p, none[:1], row[None], self.params.top_k) for row in z])
        if self.min_p is not None:
            z = self.min_p(none, z)
        return torch.softmax(z, dim=-1)

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


@dataclass(frozen=True)
class Draw:
    """One row's draw: whose (the request's sampler) and its uniform (``Sampler.uniform(step, k)``)."""

    sampler: Sampler
    uniform: float


def draw_rows(logits: torch.Tensor, draws: list[Draw | None], sort: bool, argmax: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """The draws of rows ``[n, V]`` of logits (``draws[i]`` None: row i is greedy, its token its
    ``argmax`` entry), made together: every row's token ``[n]``, the sampled rows' warped distributions
    ``[m, V]`` and the rows those are (``[m]`` on the device; None when they are all n rows in order).
    None when no row samples.

    The uniforms and row indices reach the device in one copy; each setting's rows are warped as a batch,
    and every row is inverted at once. Nothing is read back here."""
    import torch

    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(draws):
        if d is not None:
            groups.setdefault(d.sampler.setting, []).append(i)
    if not groups:
        return None
    order = [i for rows in groups.values() for i in rows]
    whole = order == list(range(logits.shape[0]))  # every row samples, in order: no gathers
    # row indices below 2**53 are exact in float64, so they travel with the uniforms
    u, index = stage(logits.device, [draws[i].uniform for i in order], [] if whole else order, dtype=torch.float64)
    index = None if whole else index.long()
    z = logits if index is None else logits.index_select(0, index)
    parts, at = [], 0
    for rows in groups.values():
        parts.append(draws[rows[0]].sampler.warp(z[at:at + len(rows)], sort))
        at += len(rows)
    probs = parts[0] if len(parts) == 1 else torch.cat(parts)
    drawn = inverse_cdf_rows(probs, u)
    return (drawn if index is None else argmax.index_copy(0, index, drawn)), probs, index


def inverse_cdf_rows(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row of ``probs`` [m, V], the token whose cumulative-probability interval holds ``u`` [m]
    (float64; a token of probability 0 never), on the device without a read."""
    import torch

    cdf = probs.double().cumsum(-1)
    x = u[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, x, right=True)[:, 0]
    # u * total rounded up to the total: the last token that can be drawn (argmax takes the first maximum)
    V = probs.shape[-1]
    last = (V - 1) - (probs > 0).flip(-1).to(torch.uint8).argmax(-1)
    return torch.where(index >= V, last, index)


def inverse_cdf(probs: torch.Tensor, u: float) -> int:
    """The token whose cumulative-probability interval holds ``u`` in one distribution ``probs`` [V]."""
    import torch

    return int(inverse_cdf_rows(probs[None], torch.tensor([u], dtype=torch.float64, device=probs.device))[0])
