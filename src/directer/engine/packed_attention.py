"""Copy-free steered attention for a packed forward of the continuous engine.

A packed decode forward carries raw rows (one per advancing sequence, whose new keys and values the
:class:`~directer.engine.slot_cache.SlotCache` keeps) and extra rows (trials, ranking probes) that
read their source sequence's slot, see its steered columns' keys times alpha in their steered layers, and
are never stored: all the extra rows of a forward attend in one call per layer
(:mod:`directer.engine.extra_rows`), so a forward's launches do not grow with its number of trial groups.

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
from .bands import RawBand, attend_bands, band_masks, group_bands, raw_bands
from .extra_rows import (ExtraGroup, PaddedGroups, attend_explicit, attend_fused, gather_slots, own_keys,
                         padded_bands)
from .slot_cache import SlotCache

__all__ = ["PACKED_KWARG", "PackedPlan"]


@dataclass
class PackedPlan:
    """One forward of the continuous engine.

    Decode: rows ``0..n_raw-1`` are raw rows of ``raw_slots`` at ``raw_positions`` (each writes its
    key and value at the column of its position, and reads its slot's columns up to it: ``width`` is
    the widest); the rest are the extra rows of ``groups``. Prefill (``prefill_pads`` set, one per
    prompt): every row is a new prompt of ``raw_slots``, left-padded by its pads, written to its slot
    from column 0; its last ``prefill_extra`` positions are extra rows (group row ``b * prefill_extra +
    i`` is position ``i`` of them after prompt ``b``), the strongest form of folding probes into the
    first forward. ``slot_list`` and ``position_list`` are ``raw_slots`` and ``raw_positions`` on the
    host; ``bias`` the slots' attention biases, applied to every row of a biased slot; a prefill encodes
    the prompts of ``prefill_biased`` (batch indices) under their bias, the other biased prompts plainly
    but for their last query (their first step).
    """

    cache: SlotCache
    raw_slots: torch.Tensor
    raw_positions: torch.Tensor | None = None
    width: int = 0
    groups: list[ExtraGroup] = field(default_factory=list)
    prefill_pads: list[int] | None = None
    prefill_extra: int = 0  # extra query positions after each prompt (rows of ``groups``, prompt-major)
    windows: dict[int, int | None] = field(default_factory=dict)  # layer -> sliding window, as the model passed it
    slot_list: list[int] = field(default_factory=list)
    position_list: list[int] = field(default_factory=list)
    bias: SlotBias | None = None
    prefill_biased: list[int] = field(default_factory=list)
    split: bool = True  # raw rows of very different lengths in two attention calls (engine/bands.py)
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

    def _index(self, rows: list[int], device: torch.device) -> torch.Tensor:
        """``rows`` as an index tensor on ``device``, copied once per forward (the biased slots of a layer
        are mostly those of the next: no host-to-device copy per layer)."""
        key = ("index", tuple(rows), str(device))
        if key not in self._masks:
            self._masks[key] = torch.tensor(rows, device=device)
        return self._masks[key]

    def _raw_mask(self, window: int | None, width: int, device: torch.device) -> torch.Tensor:
        """[slots, 1, 1, width] visibility of every slot's raw query (free slots see column 0: no NaN)."""
        if window not in self._masks:
            c = self.cache
            visible = c.valid[:, :width].clone()
            if window:  # a column is its position
                q = torch.zeros(c.slots, dtype=torch.long, device=c.device)
                q[self.raw_slots] = self.raw_positions
                visible &= torch.arange(width, device=c.device)[None, :] > (q[:, None] - window)
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
        if self.prefill_pads is not None:
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
            self.cache.write_rows(layer, self._prompt_targets(key.device, key.shape[1], key.shape[2]), key, value)
            return self._bias_prompts(module, layer, out, query, key, value, attention_mask, kwargs)
        B, Hq, T, D = query.shape
        w = T - e
        mask = None if attention_mask is None else attention_mask[..., :w, :w]
        out = inner(module, query[:, :, :w], key[:, :, :w], value[:, :, :w], mask, **kwargs)[0]  # [B, w, Hq, Dv]
        self.cache.write_rows(layer, self._prompt_targets(key.device, key.shape[1], w), key[:, :, :w], value[:, :, :w])
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
            idx = self._index(chosen, here)
            m = mask.index_select(0, idx) if mask.shape[0] == B else mask
            q = query.index_select(0, idx)
            if not whole:
                q, m = q[:, :, w - 1:], m[..., w - 1:, :]
            targets, spot, factor = self._targets(layer, slots, w, here, prompts=chosen)
            rows_out = biased_attention(q, key.index_select(0, idx), value.index_select(0, idx), m, scaling, softcap,
                                        window, targets, spot, factor,
                                        spotlight=any(self.bias.spotlight(s) for s in slots)).to(out.dtype)
            if whole:
                out[idx] = rows_out
            else:
                out[idx, w - 1:] = rows_out
        return out

    def _targets(self, layer: int, slots: list[int], width: int, device: torch.device,
                 prompts: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``slots``' biased keys ``[n, Hq, 1, width]`` in ``layer`` (columns ``0..width-1``; for a prefill's
        ``prompts`` their left-padded batch positions), their kinds and factors, on ``device``."""
        key = ("targets", layer, tuple(slots), width, None if prompts is None else tuple(prompts))
        if key not in self._masks:
            b = self.bias
            idx = self._index(slots, b.heads.device)
            heads = b.heads.index_select(0, idx)[:, layer]  # [n, Hq]
            marked = self.cache.marked.index_select(0, idx.to(self.cache.device))
            if prompts is None:
                marked = marked[:, :width]
            else:  # batch position j of prompt b is column (j - pad) mod width (the pads' columns are unmarked)
                here = self.cache.device
                columns = SlotCache.prompt_columns(self._index(self.prefill_pads, here), width)  # [B, width]
                marked = marked.gather(1, columns.index_select(0, self._index(prompts, here)))
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
        _, Hq, _, D = query.shape
        Hkv = key.shape[1]
        g = Hq // Hkv
        n = self.raw_slots.numel()
        scaling, softcap, window = self._params(module, layer, kwargs)
        here = query.device
        # One indexed write: the raw rows' new keys to their slots at their positions' columns, and (when they
        # fit) the extra rows' own keys to the scratch row; the targets cover the forward's first rows
        targets = self._write_targets(here, Hkv)
        written = targets[0].shape[0]
        if written == key.shape[0]:  # every row (a slice, even a whole one, is an op)
            cache.write_rows(layer, targets, key, value)
        elif written:
            cache.write_rows(layer, targets, key[:written], value[:written])
        width = self.width
        K, V = cache.keys[layer], cache.values[layer]
        parts: list[torch.Tensor] = []  # the raw rows' outputs, then the extra rows' (no buffer to fill)
        if n:  # raw rows: every slot's query against its own slot (idle slots compute nothing useful)
            q_index, out_index = self._raw_indices(here, Hkv, g)
            q = query[q_index]  # [slots, Hkv, g, D]: grouped-query heads folded, an idle slot a copy of row 0
            biased = self.bias.biased(layer, self.slot_list) if self.bias is not None else []
            if softcap is None and not biased:
                o = attend_bands(q, K, V, self._bands(window, here), scaling)
            else:
                o = self._raw_biased(layer, q, K, V, biased, scaling, softcap, window, here)
            parts.append(o[out_index])  # [n, 1, Hq, Dv]
        if self.groups:  # the extra rows index the whole forward's rows (no slices of it per layer)
            parts.append(self._extras(module, layer, query, key, value, kwargs))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _bands(self, window: int | None, device: torch.device, mask: torch.Tensor | None = None) -> list[RawBand]:
        """This forward's raw bands (:func:`~directer.engine.bands.raw_bands`) with their masks cut from
        ``mask`` (the raw rows' visibility, or its additive form for biased slots), built once per mask."""
        full = self._raw_mask(window, self.width, device) if mask is None else mask
        key = ("bands", window, str(device), id(full))
        if key not in self._masks:
            bands = raw_bands(self.cache.slots, self.slot_list, self.position_list, window, self.split)
            self._masks[key] = band_masks(bands, full, device)
        return self._masks[key]

    def _raw_biased(self, layer: int, q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, biased: list[int],
                    scaling: float, softcap: float | None, window: int | None, here: torch.device) -> torch.Tensor:
        """The raw rows of a layer with biased slots or soft-capped logits: constant biases on the mask (read
        in bands, as plain rows are), soft-capped logits written out over every slot at the widest row's
        columns, then SpotLight's and soft-capped biased slots again, explicitly. Returns ``[slots, Hkv, g,
        Dv]``."""
        width, Hkv, g, D = self.width, q.shape[1], q.shape[2], q.shape[3]
        Hq = Hkv * g
        mask = self._raw_mask(window, width, here)
        k, v = K[:, :, :width], V[:, :, :width]
        explicit = [b for b in biased if softcap is not None or self.bias.spotlight(b)]
        if softcap is None:
            if len(explicit) < len(biased):  # constant biases ride on the mask as additive terms
                mask = self._additive_mask(layer, biased, mask, width, Hkv, here)
            o = attend_bands(q, K, V, self._bands(window, here, mask), scaling)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * scaling
            s = torch.tanh(s / softcap) * softcap
            s = s.masked_fill(~mask, float("-inf"))
            o = torch.matmul(torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)
        if explicit:  # SpotLight's share, soft-capped logits: the biased slots again, explicitly
            idx = self._index(explicit, here)
            targets, spot, factor = self._targets(layer, explicit, width, here)
            rows = biased_attention(q.index_select(0, idx).reshape(len(explicit), Hq, 1, D), k.index_select(0, idx),
                                    v.index_select(0, idx), mask.index_select(0, idx) if mask.dtype == torch.bool
                                    else self._raw_mask(window, width, here).index_select(0, idx),
                                    scaling, softcap, window, targets, spot, factor,
                                    spotlight=any(self.bias.spotlight(b) for b in explicit))
            o = o.index_copy(0, idx, rows[:, 0].reshape(len(explicit), Hkv, g, -1).to(o.dtype))
        return o

    def _own_in_scratch(self) -> bool:
        """Whether this forward's extra rows keep their own keys in the cache's scratch row (a decode
        forward whose padded extra rows fit its columns), so that one gather reads all a group's keys.
        Decided once per forward (every layer asks)."""
        if "own_in_scratch" not in self._masks:
            fits = bool(self.groups) and self.prefill_pads is None
            if fits:  # the bands' G * R
                padded = sum(len(band) * max(len(self.groups[i].steering) for i in band) for band in self._group_bands())
                fits = padded <= self.cache.capacity
            self._masks["own_in_scratch"] = fits
        return self._masks["own_in_scratch"]

    def _write_targets(self, device: torch.device, kv_heads: int) -> tuple[torch.Tensor, ...]:
        """Where the rows' new keys go (:meth:`SlotCache.write_rows`): a raw row's to its slot at the
        column of its position, then, when they go to scratch, each padded extra row's to its scratch column
        (a band's ``offset + p``)."""
        key = ("write_targets", str(device), kv_heads)
        if key not in self._masks:
            rows = self._on(self.raw_slots, device)
            columns = self._on(self.raw_positions, device) if rows.numel() else rows
            if self._own_in_scratch():
                bands, order = self._extra_bands(device)
                own = [pg.out_group * pg.per_group + pg.out_row + pg.offset for pg in bands]
                own = own[0] if len(own) == 1 else torch.cat(own)
                own = own if order is None else own.index_select(0, order)  # in the forward's row order
                rows = torch.cat([rows, torch.full((own.numel(),), self.cache.scratch, device=device)])
                columns = torch.cat([columns, own])
            self._masks[key] = SlotCache.row_targets(rows, columns, kv_heads)
        return self._masks[key]

    def _prompt_targets(self, device: torch.device, kv_heads: int, width: int) -> tuple[torch.Tensor, ...]:
        """Where a prefill's left-padded prompts ``[B, kv_heads, width, D]`` go (:meth:`SlotCache.prompt_targets`)."""
        key = ("prompt_targets", str(device), kv_heads, width)
        if key not in self._masks:
            pads = self._index(self.prefill_pads, device)
            self._masks[key] = SlotCache.prompt_targets(self._on(self.raw_slots, device), pads, width, kv_heads)
        return self._masks[key]

    def _raw_indices(self, device: torch.device, kv_heads: int, g: int) -> tuple[tuple[torch.Tensor, ...], ...]:
        """The raw rows' two gathers, built once per forward: the forward's queries ``[N, Hq, 1, D]`` to one
        per slot ``[slots, Hkv, g, D]`` (an idle slot takes row 0's: it sees column 0 alone and its output
        is dropped), and the attention's output ``[slots, Hkv, g, Dv]`` back to the raw rows ``[n, 1, Hq,
        Dv]``."""
        key = ("raw_indices", str(device), kv_heads, g)
        if key not in self._masks:
            slots = self._on(self.raw_slots, device)
            n, Hq = slots.numel(), kv_heads * g
            row = torch.zeros(self.cache.slots, dtype=torch.long, device=device)
            row[slots] = torch.arange(n, device=device)
            heads = torch.arange(Hq, device=device)
            q_index = (row[:, None, None], heads.view(1, kv_heads, g), torch.zeros(1, 1, 1, dtype=torch.long, device=device))
            out_index = (slots[:, None, None], (heads // g)[None, None, :], (heads % g)[None, None, :])
            self._masks[key] = (q_index, out_index)
        return self._masks[key]

    def _group_bands(self) -> list[list[int]]:
        """The groups in one band, or two by their limits (:func:`~directer.engine.bands.group_bands`)."""
        if "group_bands" not in self._masks:
            self._masks["group_bands"] = group_bands([g.limit for g in self.groups], self.split)
        return self._masks["group_bands"]

    def _extra_bands(self, device: torch.device) -> tuple[list[PaddedGroups], torch.Tensor | None]:
        """Each band's padded groups (a second band's scratch columns after the first's), and, when the
        bands' extra rows are not in the forward's order one after the other, the order that restores it."""
        key = ("extra_bands", str(device))
        if key not in self._masks:
            bands, order = padded_bands(self.groups, self._group_bands(), self.cache.num_layers, device)
            self._masks[key] = (bands, None if order is None else self._index(order, device))
        return self._masks[key]

    def _padded_visible(self, pg: PaddedGroups, window: int | None, device: torch.device) -> torch.Tensor:
        """[G, W] what each group's rows see of their slot: its valid columns below the group's limit
        (within the window)."""
        key = ("padded_visible", window, id(pg))
        if key not in self._masks:
            c = self.cache
            slots = pg.slots.to(c.device)
            columns = torch.arange(pg.width, device=c.device)[None, :]
            visible = c.valid[:, :pg.width].index_select(0, slots) & (columns < pg.limits.to(c.device)[:, None])
            if window:  # a column is its position
                visible &= columns > (pg.positions.to(c.device)[:, None] - window)
            self._masks[key] = visible.to(device)
        return self._masks[key]

    def _extras(self, module: torch.nn.Module, layer: int, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The extra rows of ``query/key/value`` (the groups' rows), every group of a band in one call
        (:mod:`directer.engine.extra_rows`): each group's slot keys gathered once per layer. Returns
        ``[m, 1, Hq, Dv]`` in the forward's row order."""
        scaling, softcap, window = self._params(module, layer, kwargs)
        here = query.device
        bands, order = self._extra_bands(here)
        out = [self._extra_band(pg, layer, query, key, value, scaling, softcap, window) for pg in bands]
        out = out[0] if len(out) == 1 else torch.cat(out)
        return out if order is None else out.index_select(0, order)

    def _extra_band(self, pg: PaddedGroups, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    scaling: float, softcap: float | None, window: int | None) -> torch.Tensor:
        here = query.device
        cache = self.cache
        visible = self._padded_visible(pg, window, here)

        def read(store: torch.Tensor, scratch: int | None = None) -> torch.Tensor:  # on the layer's cache device
            t = gather_slots(pg, store, scratch)
            return t if t.device == here else t.to(here)

        if softcap is None and pg.scale is not None:
            if self._own_in_scratch():  # [G, Hkv, W + R, D]: the slot's columns, then the rows' own
                ks, vs = read(cache.key_store[layer], cache.scratch), read(cache.value_store[layer], cache.scratch)
            else:
                ks = own_keys(pg, read(cache.key_store[layer]), key)
                vs = own_keys(pg, read(cache.value_store[layer]), value)
            return attend_fused(pg, layer, query, ks, vs, visible, scaling)
        ks, vs = read(cache.key_store[layer]), read(cache.value_store[layer])
        return attend_explicit(pg, layer, query, key, value, ks, vs, visible, scaling, softcap)
