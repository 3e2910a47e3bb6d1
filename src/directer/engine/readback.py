"""Everything a forward's decisions need from the device, computed batched and read back at once.

On a GPU every scalar read makes the host wait for the device; reading a row's gate, token and
log-probability one at a time costs a synchronisation each. Here the raw rows' argmax, top-2
probabilities and the argmax's log-probability, and the trial rows' tokens with the raw model's
probability and log-probability of them (Eq. 2's operands), are stacked into one small float64 tensor
and read back with a single transfer. Under sampling the draws are made on the device too
(:func:`~directer.engine.sampling.draw_rows`): a raw row's draw 0 with its raw probability and
log-probability, a trial row's draw ``k + 1``, and for each drawn token whether the raw step's warped
distribution keeps it (the support half of the plausibility test); and, when a request asks for them,
the raw rows' most likely tokens with their log-probabilities. Token ids are exact in float64; the
probabilities are the float32 values the policies compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import Draw, draw_rows
from .staging import stage

__all__ = ["RawRead", "StepRead", "TrialRead", "TrialSource", "read_back"]


@dataclass(frozen=True)
class RawRead:
    token: int  # argmax
    top2: tuple[float, float]  # the two largest float32 probabilities
    logprob: float  # log-probability of the argmax
    # Under sampling: the row's draw 0, its raw probability and log-probability, and whether the warped
    # distribution it was drawn from keeps it. None: a greedy row.
    choice: int | None = None
    choice_prob: float = 0.0
    choice_logprob: float = 0.0
    choice_supported: bool = False
    top: list[tuple[int, float]] | None = None  # the most likely tokens and their log-probabilities, if asked


@dataclass(frozen=True)
class TrialRead:
    token: int  # the trial's token: the argmax of its logits, or its draw under sampling
    prob: float  # the raw model's probability of it (float32)
    logprob: float  # and its log-probability
    supported: bool | None = None  # under sampling: whether the raw step's warped distribution keeps it


@dataclass
class TrialSource:
    """Where a trial row's raw distribution is: a raw row of this forward (``row``), or a step opened by
    an earlier forward (its float32 ``probs``, its ``logits``, log-normaliser ``lse`` and, under
    sampling, the warped distribution ``support`` its draw came from)."""

    row: int | None = None
    probs: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    lse: torch.Tensor | None = None
    support: torch.Tensor | None = None

    def tensors(self, n: int) -> tuple[torch.Tensor, ...]:
        # a greedy step has no support; its probs stand in (a greedy trial's flag is never read)
        return (self.probs, self.logits, self.lse, self.probs if self.support is None else self.support)[:n]


@dataclass
class StepRead:
    """The device tensors of the raw rows (kept by the steps they open) and what was read back."""

    probs: torch.Tensor  # [n_raw, V] float32
    lse: torch.Tensor  # [n_raw]
    raw: list[RawRead]
    trials: list[TrialRead]
    support: torch.Tensor | None = None  # [n_raw, V]: the warped distributions of sampled rows (others 0)


def read_back(raw_logits: torch.Tensor, trial_logits: torch.Tensor | None, sources: list[TrialSource],
              rows: torch.Tensor | None = None, raw_draws: list[Draw | None] | None = None,
              trial_draws: list[Draw | None] | None = None, sort: bool = False, top: int = 0) -> StepRead:
    """``raw_logits`` [n_raw, V] open steps; ``trial_logits`` [n_trial, V] (one source each); ``rows``, when
    every source is a raw row of this forward, their indices already on the device. ``raw_draws`` and
    ``trial_draws``: each row's draw (None, or a None entry: greedy); ``sort``: how top-p warps
    (:meth:`~directer.engine.sampling.Sampler.warp`); ``top``: read each raw row's ``top`` most likely tokens
    and their log-probabilities too."""
    z = raw_logits.float()
    lse = torch.logsumexp(z, dim=-1)
    probs = torch.softmax(z, dim=-1)
    top2 = probs.topk(2, dim=-1).values
    token = z.argmax(dim=-1)
    lp = z.gather(1, token[:, None])[:, 0] - lse
    raw_cols = [token, top2[:, 0], top2[:, 1], lp]
    drawn = draw_rows(z, raw_draws, sort, token) if raw_draws else None
    support = None
    if drawn is not None:
        choice, warped, index = drawn
        support = warped if index is None else torch.zeros_like(probs).index_copy_(0, index, warped)
        c = choice[:, None]
        raw_cols += [choice, probs.gather(1, c)[:, 0], z.gather(1, c)[:, 0] - lse, support.gather(1, c)[:, 0] > 0]
    parts = [torch.stack([c.double() for c in raw_cols], dim=1)]
    if top:
        top_lp, top_ids = (z - lse[:, None]).topk(top, dim=-1)
        parts = [torch.cat([parts[0], top_ids.double(), top_lp.double()], dim=1)]
    width = parts[0].shape[1]
    n_trial = 0 if trial_logits is None else trial_logits.shape[0]
    t_drawn = None
    if n_trial:
        t_token = trial_logits.argmax(dim=-1)
        t_drawn = draw_rows(trial_logits, trial_draws, sort, t_token) if trial_draws else None
        if t_drawn is not None:
            t_token = t_drawn[0]
        # the supports only when a trial was drawn (a greedy forward gathers what it did before)
        now = (probs, z, lse) + ((probs if support is None else support,) if t_drawn is not None else ())
        src = _sources(sources, now, rows)
        t = t_token[:, None]
        trial_cols = [t_token, src[0].gather(1, t)[:, 0], src[1].gather(1, t)[:, 0] - src[2]]
        if t_drawn is not None:
            trial_cols.append(src[3].gather(1, t)[:, 0] > 0)
        trial_cols += trial_cols[-1:] * (width - len(trial_cols))  # one width: one cat
        parts.append(torch.stack([c.double() for c in trial_cols], dim=1))
    values = torch.cat(parts).tolist()  # the forward's one device read
    n_raw = z.shape[0]
    w = len(raw_cols)  # then the top tokens' ids and log-probabilities, ``top`` each
    raw = [_raw_read(v, raw_draws[i] if drawn is not None else None, v[w:w + top], v[w + top:w + 2 * top])
           for i, v in enumerate(values[:n_raw])]
    trials = [_trial_read(v, trial_draws[j] if t_drawn is not None else None) for j, v in enumerate(values[n_raw:])]
    return StepRead(probs, lse, raw, trials, support)


def _raw_read(v: list[float], draw: Draw | None, ids: list[float] = (), values: list[float] = ()) -> RawRead:
    top = [(int(i), lp) for i, lp in zip(ids, values)] or None
    if draw is None:
        return RawRead(int(v[0]), (v[1], v[2]), v[3], top=top)
    return RawRead(int(v[0]), (v[1], v[2]), v[3], int(v[4]), v[5], v[6], bool(v[7]), top)


def _trial_read(v: list[float], draw: Draw | None) -> TrialRead:
    return TrialRead(int(v[0]), v[1], v[2], None if draw is None else bool(v[3]))


def _sources(sources: list[TrialSource], now: tuple[torch.Tensor, ...], rows: torch.Tensor | None
             ) -> tuple[torch.Tensor, ...]:
    """The trial rows' raw tensors (``now``: this forward's raw rows' probs, logits, log-normalisers and
    supports): rows of this forward in one ``index_select`` each, earlier steps' stacked; a few ops
    whatever the number of trials."""
    device = now[0].device
    here = [i for i, s in enumerate(sources) if s.row is not None]
    if len(here) == len(sources):
        (index,) = (rows,) if rows is not None else stage(device, [s.row for s in sources])
        return tuple(t.index_select(0, index) for t in now)
    stored = [torch.stack(list(col)) for col in zip(*(s.tensors(len(now)) for s in sources if s.row is None))]
    stored[1] = stored[1].float()  # the logits, kept in the model's dtype
    if not here:
        return tuple(stored)
    # both kinds: this forward's rows, then the stored ones, put back in the trials' order in one gather
    n = now[0].shape[0]
    order, stored_at = [], n
    for s in sources:
        order.append(s.row if s.row is not None else stored_at)
        stored_at += s.row is None
    (index,) = stage(device, order)
    return tuple(torch.cat([a, b]).index_select(0, index) for a, b in zip(now, stored))
