"""The steering mechanism: key scaling applied to a read-only view of the KV cache.

DIRECTER's primitive (method.md §3) multiplies the cached keys of the instruction tokens by alpha in a
set of layers. We never edit the persistent cache: each forward pass gets a :class:`SteeredCache`, a
view that hands every attention layer the keys it would see from the cache, with the selected
positions scaled for the selected rows, and appends only the rows marked as raw to the persistent
cache. One view can carry several rows that share one persistent row (the raw pass and its trials,
or the L ranking probes), so the trials of a step run as one batched forward without copying the cache.

Keys are scaled where the model reads them from the cache: after RoPE and after any key norm (Qwen3,
Gemma3), which is exactly what ``Cache.update`` receives and returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicSlidingWindowLayer

if TYPE_CHECKING:
    from .attention_bias import AttentionBias, BiasPlan


@dataclass(frozen=True)
class Trial:
    """One steered variant of a decoding step, as a policy asks for it.

    Key scaling (DIRECTER, static) multiplies the steered positions' keys by ``alpha`` (None: the run's
    alpha) in ``layers``; an attention-bias method (PASTA, SpotLight, InstABoost) sets ``bias`` instead,
    applied in ``layers``. ``size`` is what the trace reports for an accepted trial.
    """

    layers: frozenset[int]
    alpha: float | None = None
    bias: "AttentionBias | None" = None

    @property
    def size(self) -> int:
        return len(self.layers)


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
    bias: "AttentionBias | None" = None  # an attention-logit bias on ``positions`` instead of key scaling

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
    :meth:`SteeredCache.commit`, so that trials and probes of the same step can still run on the cache
    as it was before this token. The other rows are trials or probes whose new keys and values are
    discarded. ``persist`` is either 0 or the full batch of the persistent cache.
    """

    rows: list[RowSteering]
    alpha: float
    persist: int = 0
    _pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def sources(self) -> list[int]:
        return [r.source for r in self.rows]

    def pairs(self, num_layers: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(row, column, scale) of every scaled key and a [pairs, layers] membership mask, built once."""
        if self._pairs is None:
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
                self._pairs = (
                    torch.cat(rows).to(device),
                    torch.cat(cols).to(device),
                    torch.cat(scale).to(device),
                    torch.cat(member).to(device),
                )
            else:
                empty = torch.empty(0, dtype=torch.long, device=device)
                self._pairs = (empty, empty, empty.float(), torch.empty(0, num_layers, dtype=torch.bool, device=device))
        return self._pairs

    def bias_plan(self, cache: DynamicCache) -> "BiasPlan | None":
        """The attention-bias part of the plan (None when no row carries a bias)."""
        from .attention_bias import BiasPlan, RowBias

        rows = [RowBias(i, r.bias, r.layers, r.positions) for i, r in enumerate(self.rows)
                if r.bias is not None and r.positions is not None]
        return BiasPlan(rows, cache) if rows else None


class SteeredCache(Cache):
    """A one-pass view of a persistent :class:`DynamicCache` that scales instruction keys per row.

    The persistent cache is read, never modified, until :meth:`commit` appends the new keys and values
    of the first ``plan.persist`` rows (the raw pass). Works for full-attention and
    sliding-window layers; on a sliding layer, columns are mapped from absolute positions to the slots
    the layer still holds, and evicted columns are simply not scaled (the query cannot see them).
    """

    def __init__(self, base: DynamicCache, plan: ForwardPlan):
        # Share the base's layer objects for everything the model asks before `update`
        # (sequence length, mask sizes, sliding flags), then intercept `update`.
        super().__init__(layers=base.layers)
        self.base = base
        self.plan = plan
        self._index: dict[torch.device, torch.Tensor] = {}
        first = base.layers[0] if base.layers else None
        batch = first.keys.shape[0] if getattr(first, "keys", None) is not None else -1
        self._identity = plan.sources == list(range(batch))
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _source_index(self, device: torch.device) -> torch.Tensor:
        if device not in self._index:
            self._index[device] = torch.tensor(self.plan.sources, dtype=torch.long, device=device)
        return self._index[device]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.base.layers[layer_idx]
        past_k, past_v = layer.keys, layer.values
        past_len = past_k.shape[-2]
        if not self._identity:
            idx = self._source_index(past_k.device)
            past_k, past_v = past_k.index_select(0, idx), past_v.index_select(0, idx)
        keys = torch.cat([past_k, key_states], dim=-2)
        values = torch.cat([past_v, value_states], dim=-2)

        rows, cols, scale, member = self.plan.pairs(len(self.base.layers), keys.device)
        if rows.numel():
            sel = member[:, layer_idx]
            if bool(sel.any()):
                r, c, a = rows[sel], cols[sel] - column_offset(layer), scale[sel]
                keep = (c >= 0) & (c < past_len)  # evicted (sliding) or not yet cached columns stay as they are
                r, c, a = r[keep], c[keep], a[keep]
                keys[r, :, c, :] = keys[r, :, c, :] * a.to(keys.dtype)[:, None, None]

        n = self.plan.persist
        if n:
            self.pending[layer_idx] = (key_states[:n], value_states[:n])
        return keys, values

    def commit(self) -> None:
        """Append the raw rows' new keys and values to the persistent cache (once per step)."""
        for layer_idx, (k, v) in sorted(self.pending.items()):
            self.base.layers[layer_idx].update(k, v)
        self.pending.clear()


def column_offset(layer: Any) -> int:
    """Absolute column of the first slot a cache layer holds (non-zero once a sliding window is full)."""
    if isinstance(layer, DynamicSlidingWindowLayer):
        return layer.cumulative_length - layer.keys.shape[-2]
    return 0


def evicted_layers(cache: DynamicCache, row_columns: Sequence[int]) -> list[int]:
    """Layers whose sliding window no longer holds some of the given absolute columns."""
    if not row_columns:
        return []
    first = min(row_columns)
    return [i for i, layer in enumerate(cache.layers) if column_offset(layer) > first]
