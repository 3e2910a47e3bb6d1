"""Everything a forward's decisions need from the device, computed batched and read back at once.

On a GPU every scalar read makes the host wait for the device; reading a row's gate, token and
log-probability one at a time costs a synchronisation each. Here the raw rows' argmax, top-2
probabilities and the argmax's log-probability, and the trial rows' argmax with the raw model's
probability and log-probability of it (Eq. 2's operands), are stacked into one small float64 tensor
and read back with a single transfer. Token ids are exact in float64; the probabilities are the
float32 values the policies compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .staging import stage

__all__ = ["RawRead", "StepRead", "TrialRead", "TrialSource", "read_back"]


@dataclass(frozen=True)
class RawRead:
    token: int  # argmax
    top2: tuple[float, float]  # the two largest float32 probabilities
    logprob: float  # log-probability of the argmax


@dataclass(frozen=True)
class TrialRead:
    token: int  # argmax of the trial's logits
    prob: float  # the raw model's probability of it (float32)
    logprob: float  # and its log-probability


@dataclass
class TrialSource:
    """Where a trial row's raw distribution is: a raw row of this forward (``row``), or a step opened by
    an earlier forward (its float32 ``probs``, its ``logits`` and log-normaliser ``lse``)."""

    row: int | None = None
    probs: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    lse: torch.Tensor | None = None


@dataclass
class StepRead:
    """The device tensors of the raw rows (kept by the steps they open) and what was read back."""

    probs: torch.Tensor  # [n_raw, V] float32
    lse: torch.Tensor  # [n_raw]
    raw: list[RawRead]
    trials: list[TrialRead]


def read_back(raw_logits: torch.Tensor, trial_logits: torch.Tensor | None, sources: list[TrialSource],
              rows: torch.Tensor | None = None) -> StepRead:
    """``raw_logits`` [n_raw, V] open steps; ``trial_logits`` [n_trial, V] (one source each); ``rows``, when
    every source is a raw row of this forward, their indices already on the device."""
    z = raw_logits.float()
    lse = torch.logsumexp(z, dim=-1)
    probs = torch.softmax(z, dim=-1)
    top2 = probs.topk(2, dim=-1).values
    token = z.argmax(dim=-1)
    lp = z.gather(1, token[:, None])[:, 0] - lse
    parts = [torch.stack([token.double(), top2[:, 0].double(), top2[:, 1].double(), lp.double()], dim=1)]
    n_trial = 0 if trial_logits is None else trial_logits.shape[0]
    if n_trial:
        t_token = trial_logits.argmax(dim=-1)
        src_probs, src_logits, src_lse = _sources(sources, probs, z, lse, rows)
        t_prob = src_probs.gather(1, t_token[:, None])[:, 0]
        t_lp = src_logits.gather(1, t_token[:, None])[:, 0] - src_lse
        parts.append(torch.stack([t_token.double(), t_prob.double(), t_lp.double(), t_lp.double()], dim=1))
    values = torch.cat(parts).tolist()  # the forward's one device read
    n_raw = z.shape[0]
    raw = [RawRead(int(v[0]), (v[1], v[2]), v[3]) for v in values[:n_raw]]
    trials = [TrialRead(int(v[0]), v[1], v[2]) for v in values[n_raw:]]
    return StepRead(probs, lse, raw, trials)


def _sources(sources: list[TrialSource], probs: torch.Tensor, z: torch.Tensor, lse: torch.Tensor,
             rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The trial rows' raw distributions ``[n_trial, V]`` (and log-normalisers): rows of this forward in
    one ``index_select`` each, earlier steps' stacked; a few ops whatever the number of trials."""
    here = [i for i, s in enumerate(sources) if s.row is not None]
    if len(here) == len(sources):
        (index,) = (rows,) if rows is not None else stage(z.device, [s.row for s in sources])
        return probs.index_select(0, index), z.index_select(0, index), lse.index_select(0, index)
    kept = [s for s in sources if s.row is None]
    stored = (torch.stack([s.probs for s in kept]), torch.stack([s.logits for s in kept]).float(),
              torch.stack([s.lse for s in kept]))
    if not here:
        return stored
    # both kinds: this forward's rows, then the stored ones, put back in the trials' order in one gather
    n = probs.shape[0]
    order, stored_at = [], n
    for s in sources:
        order.append(s.row if s.row is not None else stored_at)
        stored_at += s.row is None
    (index,) = stage(z.device, order)
    return tuple(torch.cat([now, then]).index_select(0, index) for now, then in zip((probs, z, lse), stored))
