"""The rows of one forward pass and how each is steered (shared by both mechanisms).

A step's forward pass carries the persistent rows (the raw pass) and extra rows (trials, ranking
probes) that read the same persistent cache rows. :class:`ForwardPlan` lists them; the key-scaling part
of the plan is read by :class:`~directer.engine.key_scaling.SteeredCache`, the attention-bias part by
the attention function of :mod:`directer.engine.attention_bias`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from ..methods.trial import AttentionBias, Trial
from .attention_bias import BiasPlan, RowBias

__all__ = ["ForwardPlan", "RowSteering"]


@dataclass
class RowSteering:
    """How one row of a forward pass is steered.

    ``source`` is the persistent-cache row whose past keys and values the row reads. ``layers`` are the
    layers whose keys are scaled (empty: an unsteered row) and ``positions`` the absolute cache columns
    (left padding included) of the steered tokens.
    """

    source: int
    layers: frozenset[int] = frozenset()
    positions: torch.Tensor | None = None  # 1-D long tensor of unique absolute columns (scaled or biased)
    alpha: float | None = None  # this row's key scale (None: the plan's)
    bias: AttentionBias | None = None  # an attention-logit bias on ``positions`` instead of key scaling

    @classmethod
    def of(cls, source: int, trial: Trial, span: torch.Tensor, outside: torch.Tensor) -> "RowSteering":
        """The row that evaluates ``trial`` for persistent row ``source``."""
        columns = outside if trial.bias is not None and trial.bias.target == "outside" else span
        return cls(source, trial.layers, columns, alpha=trial.alpha, bias=trial.bias)


@dataclass
class ForwardPlan:
    """The rows of one forward pass.

    The first ``persist`` rows must be the persistent rows ``0..persist-1`` in order: their new keys and
    values (computed by the pass itself) are kept by the view and appended to the persistent cache by
    :meth:`~directer.engine.key_scaling.SteeredCache.commit`, so that trials and probes of the same step can still run on the cache
    as it was before this token. The other rows are trials or probes whose new keys and values are
    discarded. ``persist`` is either 0 or the full batch of the persistent cache.
    """

    rows: list[RowSteering]
    alpha: float
    persist: int = 0
    _pairs: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict, repr=False)  # device -> pairs

    @property
    def sources(self) -> list[int]:
        return [r.source for r in self.rows]

    def pairs(self, num_layers: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(row, column, scale) of every scaled key and a [pairs, layers] membership mask, built once and
        kept per device (under a device map each layer's keys live on that layer's device)."""
        key = str(device)
        if key not in self._pairs:
            built = next(iter(self._pairs.values()), None)
            self._pairs[key] = (tuple(t.to(device) for t in built) if built is not None
                                else self._build_pairs(num_layers, device))
        return self._pairs[key]

    def _build_pairs(self, num_layers: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        rows, cols, scale, member = [], [], [], []
        for i, r in enumerate(self.rows):
            alpha = self.alpha if r.alpha is None else r.alpha
            if r.bias is not None or not r.layers or r.positions is None or r.positions.numel() == 0 or alpha == 1.0:
                continue
            mask = torch.zeros(num_layers, dtype=torch.bool)
            mask[list(r.layers)] = True
            n = r.positions.numel()
            rows.append(torch.full((n,), i, dtype=torch.long))
            cols.append(r.positions.to(torch.long).cpu())
            scale.append(torch.full((n,), float(alpha)))
            member.append(mask.expand(n, num_layers))
        if rows:
            return (torch.cat(rows).to(device), torch.cat(cols).to(device), torch.cat(scale).to(device),
                    torch.cat(member).to(device))
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty, empty.float(), torch.empty(0, num_layers, dtype=torch.bool, device=device)

    def bias_plan(self, cache: DynamicCache) -> BiasPlan | None:
        """The attention-bias part of the plan (None when no row carries a bias)."""
        rows = [RowBias(i, r.bias, r.layers, r.positions) for i, r in enumerate(self.rows)
                if r.bias is not None and r.positions is not None]
        return BiasPlan(rows, cache) if rows else None
