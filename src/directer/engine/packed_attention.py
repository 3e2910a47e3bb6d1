"""Copy-free steered attention for a packed forward of the continuous engine.

A packed decode forward carries raw rows (one per advancing sequence, whose new keys and values the
:class:`~directer.engine.slot_cache.SlotCache` keeps) and extra rows (trials, ranking probes) that
read their source sequence's slot without copying it. Key scaling is ``q·(αk) = α(q·k)``: an extra
row multiplies the attention logits of its steered columns by α in its steered layers, attends to the
columns its step could see (before the step's raw token) plus its own new key, and its keys and
values are never stored. Extra rows sit on a [slots, rows per slot] grid (as grouped-query attention
folds heads into the query dimension), so one matmul per layer reads every slot's keys once, in place.

The plan travels as a keyword argument of the model call (``directer_packed``), which the attention
function registered by :mod:`directer.engine.attention_bias` hands to :meth:`PackedPlan.attend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .attention_bias import PACKED_KWARG
from .slot_cache import SlotCache

__all__ = ["ExtraGroup", "ExtraRow", "PACKED_KWARG", "PackedPlan"]


@dataclass
class ExtraRow:
    """A trial or probe row: the layers whose columns it scales, by how much, and which columns."""

    layers: frozenset[int]
    alpha: float
    columns: torch.Tensor  # physical columns of the steered tokens


@dataclass
class ExtraGroup:
    """The extra rows of one source slot in this forward (one step of one sequence)."""

    slot: int
    rows: torch.Tensor  # indices of the rows in the forward
    limit: int  # the rows see physical columns < limit (the step's raw token and later are not theirs)
    position: int  # the rows' query position (for sliding windows)
    steering: list[ExtraRow]


@dataclass
class PackedPlan:
    """One forward of the continuous engine.

    Decode: rows ``0..n_raw-1`` are raw rows of ``raw_slots`` (their keys and values are written at
    physical ``column``); the rest are the extra rows of ``groups``. Prefill (``prefill_column`` set):
    every row is a new prompt of ``raw_slots``, left-padded, written from ``prefill_column`` on; its
    last ``prefill_extra`` positions are extra rows (group row ``b * prefill_extra + i`` is position
    ``i`` of them after prompt ``b``), the strongest form of folding probes into the first forward.
    """

    cache: SlotCache
    raw_slots: torch.Tensor
    raw_positions: torch.Tensor | None = None
    column: int = 0
    groups: list[ExtraGroup] = field(default_factory=list)
    prefill_column: int | None = None
    prefill_extra: int = 0  # extra query positions after each prompt (rows of ``groups``, prompt-major)
    windows: dict[int, int | None] = field(default_factory=dict)  # layer -> sliding window, as the model passed it
    _masks: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)

    def _raw_mask(self, window: int | None, width: int) -> torch.Tensor:
        """[slots, 1, 1, width] visibility of every slot's raw query (free slots see column 0: no NaN)."""
        if window not in self._masks:
            c = self.cache
            visible = c.valid[:, :width].clone()
            if window:
                q = torch.zeros(c.slots, dtype=torch.long, device=c.device)
                q[self.raw_slots] = self.raw_positions
                visible &= c.pos[:, :width] > (q[:, None] - window)
            idle = ~visible.any(dim=1)
            visible[idle, 0] = True
            self._masks[window] = visible[:, None, None, :]
        return self._masks[window]

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, inner: Callable[..., tuple[torch.Tensor, Any]],
               **kwargs: Any) -> tuple[torch.Tensor, None]:
        layer = module.layer_idx
        if self.prefill_column is not None:
            return self._prefill(module, layer, query, key, value, attention_mask, inner, kwargs), None
        return self._decode(module, layer, query, key, value, kwargs), None

    def _prefill(self, module: torch.nn.Module, layer: int, query: torch.Tensor, key: torch.Tensor,
                 value: torch.Tensor, attention_mask: torch.Tensor | None, inner: Callable[..., tuple[torch.Tensor, Any]],
                 kwargs: dict[str, Any]) -> torch.Tensor:
        """Prompts: the model's own attention, then keep their keys and values. Extra query positions
        (``prefill_extra`` after each prompt: its probes and leading trials) attend like decode extra
        rows, against the prompt's keys just written, and are never kept."""
        e = self.prefill_extra
        if not e:
            out = inner(module, query, key, value, attention_mask, **kwargs)[0]
            self.cache.write(layer, self.raw_slots, self.prefill_column, key, value)
            return out
        B, Hq, T, D = query.shape
        w = T - e
        mask = None if attention_mask is None else attention_mask[..., :w, :w]
        out = inner(module, query[:, :, :w], key[:, :, :w], value[:, :, :w], mask, **kwargs)[0]  # [B, w, Hq, Dv]
        self.cache.write(layer, self.raw_slots, self.prefill_column, key[:, :, :w], value[:, :, :w])

        def rows(t: torch.Tensor) -> torch.Tensor:  # [B, H, e, D] -> [B * e, H, 1, D], prompt-major
            return t[:, :, w:].permute(0, 2, 1, 3).reshape(B * e, t.shape[1], 1, t.shape[-1])

        extra = self._extras(module, layer, rows(query), rows(key), rows(value), kwargs)
        return torch.cat([out, extra.view(B, e, Hq, -1).to(out.dtype)], dim=1)

    def _params(self, module: torch.nn.Module, layer: int, kwargs: dict[str, Any]) -> tuple[float, Any, Any]:
        scaling = kwargs.get("scaling")
        scaling = module.head_dim ** -0.5 if scaling is None else scaling
        window = kwargs.get("sliding_window")
        self.windows[layer] = window
        return scaling, kwargs.get("softcap"), window

    def _decode(self, module: torch.nn.Module, layer: int, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        cache = self.cache
        R, Hq, _, D = query.shape
        Hkv = key.shape[1]
        g = Hq // Hkv
        n = self.raw_slots.numel()
        scaling, softcap, window = self._params(module, layer, kwargs)
        if n:
            cache.write(layer, self.raw_slots, self.column, key[:n], value[:n])
        width = self.column + 1
        K, V = cache.keys[layer], cache.values[layer]
        out = query.new_empty(R, 1, Hq, value.shape[-1])

        if n:  # raw rows: every slot's query against its own slot (idle slots compute nothing useful)
            q = query.new_zeros(cache.slots, Hq, D)
            q[self.raw_slots] = query[:n, :, 0]
            q = q.view(cache.slots, Hkv, g, D)
            mask = self._raw_mask(window, width)
            k, v = K[:, :, :width], V[:, :, :width]
            if softcap is None:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
            else:
                s = torch.matmul(q, k.transpose(-1, -2)) * scaling
                s = torch.tanh(s / softcap) * softcap
                s = s.masked_fill(~mask, float("-inf"))
                o = torch.matmul(torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)
            out[:n, 0] = o.reshape(cache.slots, Hq, -1)[self.raw_slots]
        if self.groups:
            out[n:] = self._extras(module, layer, query[n:], key[n:], value[n:], kwargs, offset=n)
        return out

    def _extras(self, module: torch.nn.Module, layer: int, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, kwargs: dict[str, Any], offset: int = 0) -> torch.Tensor:
        """Extra rows ``[m, H, 1, D]`` (rows ``offset..`` of the forward), all groups at once: the rows are
        laid out on a [slots, rows-per-slot] grid, so one matmul reads every slot's keys in place,
        steered columns' logits times alpha, their own key one more column. Returns ``[m, 1, Hq, Dv]``."""
        grid = self._grid(offset, query.device)
        cache = self.cache
        R, Hq, _, D = query.shape
        Hkv = key.shape[1]
        g = Hq // Hkv
        S, M, W = cache.slots, grid.per_slot, grid.width
        scaling, softcap, window = self._params(module, layer, kwargs)
        K, V = cache.keys[layer][:, :, :W], cache.values[layer][:, :, :W]  # views: no copy

        def place(t: torch.Tensor) -> torch.Tensor:  # [m, H, 1, D] -> [S, H, M, D]
            out = t.new_zeros(S, M, t.shape[1], t.shape[-1])
            out[grid.slot, grid.j] = t[grid.rows, :, 0]
            return out.transpose(1, 2)

        q = place(query).reshape(S, Hkv, g, M, D).transpose(2, 3)  # [S, Hkv, M, g, D]
        s = torch.matmul(q.reshape(S, Hkv, M * g, D), K.transpose(-1, -2)).view(S, Hkv, M, g, W) * scaling
        if grid.steers[layer]:
            s = s * torch.where(grid.member[:, :, layer, None], grid.alpha, 1.0).to(s.dtype)[:, None, :, None, :]
        own = (q * place(key)[:, :, :, None, :]).sum(-1, keepdim=True) * scaling  # [S, Hkv, M, g, 1]
        s = torch.cat([s, own], dim=-1)
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        s = s.masked_fill(~self._grid_mask(grid, window)[:, None, :, None, :], float("-inf"))
        p = torch.softmax(s, dim=-1, dtype=torch.float32).to(query.dtype)
        o = torch.matmul(p[..., :W].reshape(S, Hkv, M * g, W), V).view(S, Hkv, M, g, -1)
        o = o + p[..., W:] * place(value)[:, :, :, None, :]
        o = o.permute(0, 2, 1, 3, 4).reshape(S, M, Hq, -1)
        out = query.new_empty(R, 1, Hq, o.shape[-1])
        out[grid.rows, 0] = o[grid.slot, grid.j]
        return out

    def _grid(self, offset: int, device: torch.device) -> "_Grid":
        """The extra rows' layout, built once per forward."""
        if ("grid", offset) not in self._masks:
            self._masks[("grid", offset)] = _Grid.build(self.groups, offset, self.cache, device)
        return self._masks[("grid", offset)]

    def _grid_mask(self, grid: "_Grid", window: int | None) -> torch.Tensor:
        """[S, M, W + 1] columns each grid row sees (its own key last); sliding windows by position."""
        k = ("grid-mask", window)
        if k not in self._masks:
            visible = grid.visible
            if window:
                visible = visible & (self.cache.pos[:, None, :grid.width] > grid.position[:, :, None] - window)
            self._masks[k] = torch.cat([visible, visible.new_ones(*visible.shape[:2], 1)], dim=-1)
        return self._masks[k]


@dataclass
class _Grid:
    """Extra rows on a [slots, per_slot] grid: where each row sits, which layers it steers, its column
    multipliers, the columns it may see (before its step's raw token) and its query position."""

    rows: torch.Tensor  # [m] row index (relative to the extra rows' offset)
    slot: torch.Tensor  # [m]
    j: torch.Tensor  # [m] index within its slot's rows
    per_slot: int
    width: int
    member: torch.Tensor  # [S, M, L] bool: the row steers this layer
    steers: list[bool]  # per layer: does any row steer it
    alpha: torch.Tensor  # [S, M, W] float32: alpha at the row's steered columns, else 1
    visible: torch.Tensor  # [S, M, W] bool
    position: torch.Tensor  # [S, M] long

    @classmethod
    def build(cls, groups: list[ExtraGroup], offset: int, cache: SlotCache, device: torch.device) -> "_Grid":
        S, L = cache.slots, len(cache.keys)
        per: dict[int, int] = {}
        for grp in groups:  # a slot can carry two groups (probes beside its step's trials)
            per[grp.slot] = per.get(grp.slot, 0) + len(grp.steering)
        M, W = max(per.values()), max(grp.limit for grp in groups)
        rows, slot, j = [], [], []
        member = torch.zeros(S, M, L, dtype=torch.bool)
        alpha = torch.ones(S, M, W)
        visible = torch.zeros(S, M, W, dtype=torch.bool, device=device)
        position = torch.zeros(S, M, dtype=torch.long)
        used = dict.fromkeys(per, 0)
        for grp in groups:
            m, first = len(grp.steering), used[grp.slot]
            used[grp.slot] += m
            rows += (grp.rows - offset).tolist()
            slot += [grp.slot] * m
            j += list(range(first, first + m))
            visible[grp.slot, first:first + m, :grp.limit] = cache.valid[grp.slot, :grp.limit]
            position[grp.slot, first:first + m] = grp.position
            for i, r in enumerate(grp.steering):
                cols = r.columns[(r.columns >= 0) & (r.columns < grp.limit)]
                if r.alpha != 1.0 and cols.numel():
                    member[grp.slot, first + i, sorted(r.layers)] = True
                    alpha[grp.slot, first + i, cols] = r.alpha
        t = lambda x: torch.tensor(x, dtype=torch.long, device=device)
        return cls(t(rows), t(slot), t(j), M, W, member.to(device), member.any(dim=(0, 1)).tolist(),
                   alpha.to(device), visible, position.to(device))
