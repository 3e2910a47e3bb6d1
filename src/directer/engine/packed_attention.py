"""Copy-free steered attention for a packed forward of the continuous engine.

A packed decode forward carries raw rows (one per advancing sequence, whose new keys and values the
:class:`~directer.engine.slot_cache.SlotCache` keeps) and extra rows (trials, ranking probes) that
read their source sequence's slot without scaling a copy of it. Key scaling is ``q·(αk) = α(q·k)``: an
extra row multiplies the (float32) attention logits of its steered columns by α in its steered layers,
attends to the columns its step could see (before the step's raw token) plus its own new key, and its
keys and values are never stored. Rows that share a source are folded into the query dimension (as
grouped-query attention folds heads), and all the groups of a forward are attended in one batched
product per layer (:class:`_PaddedGroups`): a forward's launches do not grow with its number of groups.

Rows of a slot with an attention bias (the bias baselines' streams, :class:`~directer.engine.attention_bias.SlotBias`)
add ``log(factor)`` to their targets' logits: as an additive mask of the same attention call where it
can, explicitly (:func:`~directer.engine.attention_bias.biased_attention`) for SpotLight's share and
soft-capped logits, and in the prompt's own encoding when the method encodes it steered.

The plan travels as a keyword argument of the model call (``directer_packed``), which the attention
function registered by :mod:`directer.engine.attention` hands to :meth:`PackedPlan.attend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .attention import PACKED_KWARG
from .attention_bias import SlotBias, biased_attention, causal_visibility
from .slot_cache import SlotCache
from .staging import stage

__all__ = ["ExtraGroup", "ExtraRow", "PACKED_KWARG", "PackedPlan"]


@dataclass
class ExtraRow:
    """A trial or probe row: the layers whose columns it scales, by how much, and which columns."""

    layers: frozenset[int]
    alpha: float
    columns: list[int] | torch.Tensor  # physical columns of the steered tokens (host data)


@dataclass
class ExtraGroup:
    """The extra rows of one source slot in this forward (one step of one sequence)."""

    slot: int
    rows: list[int] | torch.Tensor  # indices of the rows in the forward (host data)
    limit: int  # the rows see physical columns < limit (the step's raw token and later are not theirs)
    position: int  # the rows' query position (for sliding windows)
    steering: list[ExtraRow]


@dataclass
class _PaddedGroups:
    """Every extra row of a forward laid out ``[groups, R]`` (R: the largest group; short groups are
    padded with copies of their first row, computed and dropped), so that each layer attends to all of
    them with one batched product whatever the number of groups. Built once per forward, on the host's
    lists in one transfer: no per-layer copies or filters."""

    rows: torch.Tensor  # [G * R] extra-row index (relative to the first extra row) of each padded row
    gather: torch.Tensor  # [m] the padded index of extra row i (the output is one gather)
    slots: torch.Tensor  # [G] source slots
    width: int  # W: the widest group's limit
    limits: torch.Tensor  # [G] columns < limit are the group's
    positions: torch.Tensor  # [G] query positions (sliding windows)
    steers: torch.Tensor  # [G * R, layers] bool: the row scales its columns in that layer
    alpha: torch.Tensor  # [G * R] float32
    columns: torch.Tensor  # [G * R, W] bool: the row's steered columns
    per_group: int  # R
    any_layer: list[bool]  # per layer, whether any row scales columns there (known on the host)

    @classmethod
    def build(cls, groups: list[ExtraGroup], offset: int, num_layers: int, device: torch.device) -> "_PaddedGroups":
        R = max(len(g.steering) for g in groups)
        W = max(g.limit for g in groups)
        rows, steers, alpha, col_rows, col_cols = [], [], [], [], []
        padded: dict[int, int] = {}  # extra row -> its padded index
        for gi, g in enumerate(groups):
            idx = [i - offset for i in (g.rows.tolist() if isinstance(g.rows, torch.Tensor) else g.rows)]
            rows += idx + [idx[0]] * (R - len(idx))
            padded.update((i, gi * R + j) for j, i in enumerate(idx))
            for j, r in enumerate(g.steering + [g.steering[0]] * (R - len(g.steering))):
                active = r.alpha != 1.0 and len(r.columns) > 0
                steers.append([active and layer in r.layers for layer in range(num_layers)])
                alpha.append(float(r.alpha))
                if active:
                    listed = r.columns.tolist() if isinstance(r.columns, torch.Tensor) else r.columns
                    cols = [c for c in listed if 0 <= c < g.limit]
                    col_rows += [gi * R + j] * len(cols)
                    col_cols += cols
        gather = [padded[i] for i in range(len(padded))]
        # The integers in one copy, alpha in another; the steered-column matrix is made on the device.
        rows_t, gather_t, slots, limits, positions, steer_t, col_r, col_c = stage(
            device, rows, gather, [g.slot for g in groups], [g.limit for g in groups],
            [g.position for g in groups], [int(x) for row in steers for x in row], col_rows, col_cols)
        (alpha_t,) = stage(device, alpha, dtype=torch.float32)
        columns = torch.zeros(len(rows), W, dtype=torch.bool, device=device)
        columns[col_r, col_c] = True
        return cls(rows_t, gather_t, slots, W, limits, positions, steer_t.view(len(rows), num_layers).bool(),
                   alpha_t, columns, R, [any(layer) for layer in zip(*steers)])


@dataclass
class PackedPlan:
    """One forward of the continuous engine.

    Decode: rows ``0..n_raw-1`` are raw rows of ``raw_slots`` (their keys and values are written at
    physical ``column``); the rest are the extra rows of ``groups``. Prefill (``prefill_column`` set):
    every row is a new prompt of ``raw_slots``, left-padded, written from ``prefill_column`` on; its
    last ``prefill_extra`` positions are extra rows (group row ``b * prefill_extra + i`` is position
    ``i`` of them after prompt ``b``), the strongest form of folding probes into the first forward.
    ``slot_list`` is ``raw_slots`` on the host; ``bias`` the slots' attention biases, applied to every
    row of a biased slot; a prefill encodes the prompts of ``prefill_biased`` (batch indices) under
    their bias, the other biased prompts plainly but for their last query (their first step).
    """

    cache: SlotCache
    raw_slots: torch.Tensor
    raw_positions: torch.Tensor | None = None
    column: int = 0
    groups: list[ExtraGroup] = field(default_factory=list)
    prefill_column: int | None = None
    prefill_extra: int = 0  # extra query positions after each prompt (rows of ``groups``, prompt-major)
    windows: dict[int, int | None] = field(default_factory=dict)  # layer -> sliding window, as the model passed it
    slot_list: list[int] = field(default_factory=list)
    bias: SlotBias | None = None
    prefill_biased: list[int] = field(default_factory=list)
    _masks: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)
    _moved: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict, repr=False)

    def _on(self, t: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``t`` on ``device``, copied once per forward: the plan's index tensors live on the input's
        device, a layer's keys on that layer's (a device map spreads the layers over devices)."""
        if t.device == device:
            return t
        k = (id(t), str(device))
        if k not in self._moved:
            self._moved[k] = t.to(device)
        return self._moved[k]

    def _raw_mask(self, window: int | None, width: int, device: torch.device) -> torch.Tensor:
        """[slots, 1, 1, width] visibility of every slot's raw query (free slots see column 0: no NaN)."""
        if window not in self._masks:
            c = self.cache
            visible = c.valid[:, :width].clone()
            if window:
                q = torch.zeros(c.slots, dtype=torch.long, device=c.device)
                q[self.raw_slots] = self.raw_positions
                visible &= c.pos[:, :width] > (q[:, None] - window)
            visible[:, 0] |= ~visible.any(dim=1)  # an idle slot sees column 0 (no boolean indexing: no device read)
            self._masks[window] = visible[:, None, None, :]
        return self._on(self._masks[window], device)

    def _additive_mask(self, layer: int, biased: list[int], visible: torch.Tensor, width: int, kv_heads: int,
                       device: torch.device) -> torch.Tensor:
        """The raw rows' mask as additive terms ``[slots, Hkv, g, width]``: -inf where a slot cannot see,
        ``log(factor)`` on a biased slot's targets in the heads its bias applies to, else 0."""
        b = self.bias
        # Without head profiles the mask depends on the biased slots only: built once, shared by their layers.
        key = ("additive", None if b.every_head(biased) else layer, tuple(biased), width, id(visible))
        if key not in self._masks:
            heads = self._on(b.heads, device)[:, layer]  # [slots, Hq]
            marked = self._on(self.cache.marked, device)[:, :width]
            targets = heads[:, :, None] & marked[:, None, :] & ~self._on(b.spot, device)[:, None, None]
            add = torch.where(targets, self._on(b.factor, device).log()[:, None, None], 0.0)
            add = add.masked_fill(~visible[:, 0], float("-inf"))  # [slots, Hq, width]
            self._masks[key] = add.view(add.shape[0], kv_heads, -1, width).to(self.cache.keys[layer].dtype)
        return self._masks[key]

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
            self.cache.write(layer, self._on(self.raw_slots, key.device), self.prefill_column, key, value)
            return self._bias_prompts(module, layer, out, query, key, value, attention_mask, kwargs)
        B, Hq, T, D = query.shape
        w = T - e
        mask = None if attention_mask is None else attention_mask[..., :w, :w]
        out = inner(module, query[:, :, :w], key[:, :, :w], value[:, :, :w], mask, **kwargs)[0]  # [B, w, Hq, Dv]
        self.cache.write(layer, self._on(self.raw_slots, key.device), self.prefill_column, key[:, :, :w], value[:, :, :w])
        out = self._bias_prompts(module, layer, out, query[:, :, :w], key[:, :, :w], value[:, :, :w], mask, kwargs)

        def rows(t: torch.Tensor) -> torch.Tensor:  # [B, H, e, D] -> [B * e, H, 1, D], prompt-major
            return t[:, :, w:].permute(0, 2, 1, 3).reshape(B * e, t.shape[1], 1, t.shape[-1])

        extra = self._extras(module, layer, rows(query), rows(key), rows(value), kwargs)
        return torch.cat([out, extra.view(B, e, Hq, -1).to(out.dtype)], dim=1)

    def _bias_prompts(self, module: torch.nn.Module, layer: int, out: torch.Tensor, query: torch.Tensor,
                      key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      kwargs: dict[str, Any]) -> torch.Tensor:
        """Recompute the biased prompt rows of this layer: every query of a prompt its method encodes
        steered (``prefill_biased``), else only the last one, whose query is its stream's first step."""
        if self.bias is None:
            return out
        biased = self.bias.biased(layer, self.slot_list)
        rows = [b for b, slot in enumerate(self.slot_list) if slot in biased]
        if not rows:
            return out
        here = query.device
        B, w = query.shape[0], query.shape[2]
        scaling, softcap, window = self._params(module, layer, kwargs)
        if mask is None:
            mask = causal_visibility(w, w, window, here)[None, None]
        out = out.clone()
        for whole in (True, False):
            chosen = [b for b in rows if (b in self.prefill_biased) == whole]
            if not chosen:
                continue
            slots = [self.slot_list[b] for b in chosen]
            idx = torch.tensor(chosen, device=here)
            m = mask.index_select(0, idx) if mask.shape[0] == B else mask
            q = query.index_select(0, idx)
            if not whole:
                q, m = q[:, :, w - 1:], m[..., w - 1:, :]
            targets, spot, factor = self._targets(layer, slots, self.prefill_column, w, here)
            rows_out = biased_attention(q, key.index_select(0, idx), value.index_select(0, idx), m, scaling, softcap,
                                        window, targets, spot, factor,
                                        spotlight=any(self.bias.spotlight(s) for s in slots)).to(out.dtype)
            if whole:
                out[idx] = rows_out
            else:
                out[idx, w - 1:] = rows_out
        return out

    def _targets(self, layer: int, slots: list[int], first: int, width: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``slots``' biased keys ``[n, Hq, 1, width]`` (physical columns ``first..``) in ``layer``, their
        kinds and factors, on ``device``."""
        key = ("targets", layer, tuple(slots), first, width)
        if key not in self._masks:
            b = self.bias
            idx = torch.tensor(slots, device=b.heads.device)
            heads = b.heads.index_select(0, idx)[:, layer]  # [n, Hq]
            marked = self.cache.marked.index_select(0, idx.to(self.cache.device))[:, first:first + width]
            targets = heads[:, :, None, None] & marked.to(heads.device)[:, None, None, :]
            self._masks[key] = (targets, b.spot.index_select(0, idx), b.factor.index_select(0, idx))
        return tuple(self._on(t, device) for t in self._masks[key])

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
        here = query.device
        slots = self._on(self.raw_slots, here)
        if n:
            cache.write(layer, slots, self.column, key[:n], value[:n])
        width = self.column + 1
        K, V = cache.keys[layer], cache.values[layer]
        out = query.new_empty(R, 1, Hq, value.shape[-1])

        if n:  # raw rows: every slot's query against its own slot (idle slots compute nothing useful)
            q = query.new_zeros(cache.slots, Hq, D)
            q[slots] = query[:n, :, 0]
            q = q.view(cache.slots, Hkv, g, D)
            mask = self._raw_mask(window, width, here)
            k, v = K[:, :, :width], V[:, :, :width]
            biased = self.bias.biased(layer, self.slot_list) if self.bias is not None else []
            explicit = [b for b in biased if softcap is not None or self.bias.spotlight(b)]
            if softcap is None:
                if len(explicit) < len(biased):  # constant biases ride on the mask as additive terms
                    mask = self._additive_mask(layer, biased, mask, width, Hkv, here)
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
            else:
                s = torch.matmul(q, k.transpose(-1, -2)) * scaling
                s = torch.tanh(s / softcap) * softcap
                s = s.masked_fill(~mask, float("-inf"))
                o = torch.matmul(torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)
            o = o.reshape(cache.slots, Hq, -1)
            if explicit:  # SpotLight's share, soft-capped logits: the biased slots again, explicitly
                idx = torch.tensor(explicit, device=here)
                targets, spot, factor = self._targets(layer, explicit, 0, width, here)
                rows = biased_attention(q.index_select(0, idx).reshape(len(explicit), Hq, 1, D), k.index_select(0, idx),
                                        v.index_select(0, idx), mask.index_select(0, idx) if mask.dtype == torch.bool
                                        else self._raw_mask(window, width, here).index_select(0, idx),
                                        scaling, softcap, window, targets, spot, factor,
                                        spotlight=any(self.bias.spotlight(b) for b in explicit))
                o = o.index_copy(0, idx, rows[:, 0].to(o.dtype))
            out[:n, 0] = o[slots]
        if self.groups:
            out[n:] = self._extras(module, layer, query[n:], key[n:], value[n:], kwargs, offset=n)
        return out

    def _padded(self, device: torch.device, offset: int) -> _PaddedGroups:
        key = ("padded", str(device))
        if key not in self._masks:
            self._masks[key] = _PaddedGroups.build(self.groups, offset, self.cache.num_layers, device)
        return self._masks[key]

    def _padded_visible(self, pg: _PaddedGroups, window: int | None, device: torch.device) -> torch.Tensor:
        """[G, W + 1] what each group's rows see: its slot's valid columns below its limit (within the
        window), then the row's own key."""
        key = ("padded_visible", window, str(device))
        if key not in self._masks:
            c = self.cache
            slots = pg.slots.to(c.device)
            visible = c.valid[:, :pg.width].index_select(0, slots)
            visible = visible & (torch.arange(pg.width, device=c.device)[None, :] < pg.limits.to(c.device)[:, None])
            if window:
                visible &= c.pos[:, :pg.width].index_select(0, slots) > (pg.positions.to(c.device)[:, None] - window)
            visible = torch.cat([visible, visible.new_ones(visible.shape[0], 1)], dim=1)
            self._masks[key] = (~visible)[:, None, None, None, :].to(device)  # hidden, as masked_fill wants
        return self._masks[key]

    def _multipliers(self, pg: _PaddedGroups, device: torch.device) -> torch.Tensor:
        """[layers, G * R, W] float32: alpha where a row steers a column in a layer, else 1; built once per
        forward for every layer (a layer reads its slice, a view)."""
        key = ("multipliers", str(device))
        if key not in self._masks:
            steer = pg.steers.t()[:, :, None] & pg.columns[None]
            self._masks[key] = torch.where(steer, pg.alpha[None, :, None], 1.0).to(device)
        return self._masks[key]

    def _extras(self, module: torch.nn.Module, layer: int, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, kwargs: dict[str, Any], offset: int = 0) -> torch.Tensor:
        """Extra rows ``[m, H, 1, D]`` (rows ``offset..`` of the forward), all groups at once: each group's
        rows are folded into the query dimension against its slot's keys (gathered once per layer),
        steered columns' logits times alpha, their own key one more column. The logits are float32
        from the product on: alpha multiplies them unrounded. Returns ``[m, 1, Hq, Dv]``."""
        _, Hq, _, D = query.shape
        Hkv = key.shape[1]
        g = Hq // Hkv
        scaling, softcap, window = self._params(module, layer, kwargs)
        here = query.device
        pg = self._padded(here, offset)
        G, R, W = pg.slots.numel(), pg.per_group, pg.width
        K, V = self.cache.keys[layer], self.cache.values[layer]
        slots = pg.slots.to(K.device)
        ks = K[:, :, :W].index_select(0, slots).to(here)  # [G, Hkv, W, D]
        vs = V[:, :, :W].index_select(0, slots).to(here)
        # float32 from here; the softmax scale goes on the queries (one product per layer, not per column)
        q = query[:, :, 0].index_select(0, pg.rows).float() * scaling  # [G * R, Hq, D]
        q5 = q.view(G, R, Hkv, g, D).permute(0, 2, 1, 3, 4)  # [G, Hkv, R, g, D]
        s = torch.matmul(q5.reshape(G, Hkv, R * g, D), ks.float().transpose(-1, -2)).view(G, Hkv, R, g, W)
        if pg.any_layer[layer]:  # alpha on the steered columns' (float32) logits
            s = s * self._multipliers(pg, here)[layer].view(G, R, W)[:, None, :, None, :]
        own_k = key[:, :, 0].index_select(0, pg.rows).float().view(G, R, Hkv, 1, D).permute(0, 2, 1, 3, 4)
        own = torch.matmul(q5, own_k.transpose(-1, -2))  # [G, Hkv, R, g, 1]: each row's own key
        s = torch.cat([s, own], dim=-1)  # [G, Hkv, R, g, W + 1]
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        s = s.masked_fill(self._padded_visible(pg, window, here), float("-inf"))
        p = torch.softmax(s, dim=-1).to(query.dtype)
        o = torch.matmul(p[..., :W].reshape(G, Hkv, R * g, W), vs).view(G, Hkv, R, g, -1)
        own_v = value[:, :, 0].index_select(0, pg.rows).view(G, R, Hkv, 1, -1).permute(0, 2, 1, 3, 4)
        o = o + p[..., W:] * own_v
        o = o.permute(0, 2, 1, 3, 4).reshape(G * R, Hq, -1)
        return o.index_select(0, pg.gather)[:, None].to(query.dtype)  # [m, 1, Hq, Dv], the padding dropped
