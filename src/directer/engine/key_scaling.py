"""The key-scaling mechanism (DIRECTER, static) applied to a read-only view of the KV cache.

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

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache

from .plan import ForwardPlan
from .sliding_window import column_offset

__all__ = ["SteeredCache"]


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
