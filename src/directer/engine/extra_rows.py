"""How a packed forward's extra rows (trials, ranking probes) attend, all of them in one call per layer.

An extra row reads its source sequence's slot without a copy of the steered keys being kept: it sees the
columns its step could see (before the step's raw token), plus its own new key, and in its steered layers
the steered columns' keys are ``alpha`` times the cached ones. Its keys and values are never stored.

The rows of a forward are laid out ``[groups, R]`` (:class:`PaddedGroups`: one group per source step, R
the largest group, short groups padded with copies of their first row, computed and dropped), so a
layer's launches do not grow with the number of groups:

* :func:`attend_fused` (the default): ``scaled_dot_product_attention`` in float32 on each group's keys,
  gathered once per layer, and the rows' own keys; in a layer where some row steers, a second call with
  the steered columns' keys times alpha (exact for bfloat16 keys: alpha = 100 needs 5 significant bits),
  each row taking the call its layer set chooses. The logits are float32 products ``q·(alpha k)``, the
  form the reference code computes, with no bfloat16 rounding before the softmax.
* :func:`attend_explicit`: the same rows with the products written out (``alpha (q·k)`` on float32 logits),
  for soft-capped logits, which SDPA cannot apply, and for a forward whose groups mix alphas or steered
  columns among their rows (no method in this package does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import torch
import torch.nn.functional as F

from .staging import stage

__all__ = ["ExtraGroup", "ExtraRow", "PaddedGroups", "attend_explicit", "attend_fused", "gather_slots", "own_keys",
           "padded_bands"]


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


def _listed(x: list[int] | torch.Tensor) -> list[int]:
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


@dataclass
class PaddedGroups:
    """Every extra row of a forward laid out ``[groups, R]``. Built once per forward from the host's lists,
    in two transfers: no per-layer copies or filters."""

    rows: torch.Tensor  # [G * R] the forward's row of each padded row
    out_group: torch.Tensor  # [m] extra row i's group ...
    out_row: torch.Tensor  # [m] ... and its place in the group
    slots: torch.Tensor  # [G] source slots
    width: int  # W: the widest group's limit
    limits: torch.Tensor  # [G] columns < limit are the group's
    positions: torch.Tensor  # [G] query positions (sliding windows)
    steers: torch.Tensor  # [G * R, layers] bool: the row scales its columns in that layer
    alpha: torch.Tensor  # [G * R] float32
    steered: tuple[list[int], list[int]]  # (padded row, column) of each steered column, host data (the
    # written-out form stages them when it runs: most forwards never need them)
    scale: torch.Tensor | None  # [G, 1, W, 1] float32: the group's alpha on its steered columns, else 1
    # (None when some group's steering rows differ in alpha or columns: only the explicit form applies)
    per_group: int  # R
    any_layer: list[bool]  # per layer, whether any row scales columns there (known on the host)
    offset: int = 0  # padded row p's own key is at scratch column offset + p (a second band's follow the first's)
    memo: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)  # masks, built once per forward

    @classmethod
    def build(cls, groups: list[ExtraGroup], num_layers: int, device: torch.device, offset: int = 0) -> "PaddedGroups":
        R = max(len(g.steering) for g in groups)
        W = max(g.limit for g in groups)
        words = -(-num_layers // _WORD)
        rows, steers, alpha, col_rows, col_cols, scale_rows, scale_cols, scale_alpha = [], [], [], [], [], [], [], []
        padded: dict[int, int] = {}  # extra row -> its padded index
        seen: dict[tuple[int, int], tuple[int, ...]] = {}  # (id of a column list, limit) -> its visible columns
        union = 0  # the layers some row steers, as bits
        uniform = True
        for gi, g in enumerate(groups):
            idx = _listed(g.rows)
            rows += idx + [idx[0]] * (R - len(idx))
            padded.update((i, gi * R + j) for j, i in enumerate(idx))
            kinds: set[tuple[float, tuple[int, ...]]] = set()
            for j, r in enumerate(g.steering + [g.steering[0]] * (R - len(g.steering))):
                alpha.append(float(r.alpha))
                if r.alpha == 1.0 or len(r.columns) == 0:
                    steers += [0] * words
                    continue
                bits = _layer_bits(r.layers)
                union |= bits
                steers += _words(bits, words)
                key = (id(r.columns), g.limit)  # a sequence's rows share its column list
                if key not in seen:
                    seen[key] = tuple(c for c in _listed(r.columns) if 0 <= c < g.limit)
                cols = seen[key]
                col_rows += [gi * R + j] * len(cols)
                col_cols += cols
                if r.layers:
                    kinds.add((float(r.alpha), cols))
            uniform &= len(kinds) <= 1
            if len(kinds) == 1:
                (a, cols), = kinds
                scale_rows += [gi] * len(cols)
                scale_cols += cols
                scale_alpha += [a] * len(cols)
        gather = [padded[i] for i in sorted(padded)]  # in the order of the extra rows
        # The integers in one copy, the floats in another; the column and layer matrices are made on the
        # device (the layers travel as bits: a row's word per 63 layers, not a flag per layer).
        (rows_t, out_group, out_row, slots, limits, positions, steer_t, sc_r,
         sc_c) = stage(device, rows, [p // R for p in gather], [p % R for p in gather],
                       [g.slot for g in groups], [g.limit for g in groups], [g.position for g in groups],
                       steers, scale_rows, scale_cols)
        alpha_t, scale_a = stage(device, alpha, scale_alpha, dtype=torch.float32)
        scale = None
        if uniform:
            scale = torch.ones(len(groups), W, dtype=torch.float32, device=device)
            scale[sc_r, sc_c] = scale_a
            scale = scale[:, None, :, None]
        layer = torch.arange(num_layers, device=device)
        steer_bits = steer_t.view(len(rows), words)[:, layer // _WORD] >> (layer % _WORD)
        return cls(rows_t, out_group, out_row, slots, W, limits, positions, (steer_bits & 1).bool(), alpha_t,
                   (col_rows, col_cols), scale, R, [bool(union >> i & 1) for i in range(num_layers)], offset)


_WORD = 63  # layers per int64 word of a row's steered-layer bits


@lru_cache(maxsize=4096)
def _layer_bits(layers: frozenset[int]) -> int:
    """A layer set as bits (a trial's set recurs every step of its sequence: computed once)."""
    return sum(1 << layer for layer in layers)


def _words(bits: int, words: int) -> list[int]:
    return [(bits >> (_WORD * w)) & ((1 << _WORD) - 1) for w in range(words)]


def padded_bands(groups: list[ExtraGroup], bands: list[list[int]], num_layers: int,
                 device: torch.device) -> tuple[list[PaddedGroups], list[int] | None]:
    """The padded groups of each band of ``groups`` (lists of group indices; a band's own keys at
    scratch columns after the previous band's), and, when the bands' extra rows, one band after the
    other, are not in the forward's row order, the order that restores it (None when they are)."""
    padded, offset, rows = [], 0, []
    for band in bands:
        chosen = [groups[i] for i in band]
        pg = PaddedGroups.build(chosen, num_layers, device, offset)
        padded.append(pg)
        offset += pg.slots.numel() * pg.per_group
        rows += sorted(r for g in chosen for r in _listed(g.rows))
    if rows == sorted(rows):
        return padded, None
    place = {r: i for i, r in enumerate(rows)}
    return padded, [place[r] for r in sorted(rows)]


def gather_slots(pg: PaddedGroups, store: torch.Tensor, scratch: int | None = None) -> torch.Tensor:
    """A layer's cache buffer ``[rows, Hkv, capacity, D]`` read for the groups, in one gather: each
    group's slot columns ``[G, Hkv, W, D]``; with ``scratch`` (the buffer row where the forward wrote its
    extra rows' own keys, padded row ``p`` at column ``offset + p``) those follow: ``[G, Hkv, W + R, D]``."""
    kind = "slots" if scratch is None else ("slots+own", scratch)
    S, H, C = _indices(pg, kind, store.device, store.shape[1], 1)
    return store[S, H, C]


def own_keys(pg: PaddedGroups, slot_keys: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``slot_keys [G, Hkv, W, D]`` followed by the padded rows' own keys from the forward's ``key [N, Hkv,
    1, D]``: ``[G, Hkv, W + R, D]`` (what :func:`gather_slots` reads when the own keys went to scratch)."""
    return torch.cat([slot_keys, key[_indices(pg, "own", key.device, key.shape[1], 1)]], dim=2)


def attend_fused(pg: PaddedGroups, layer: int, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 visible: torch.Tensor, scaling: float) -> torch.Tensor:
    """Extra rows ``query [N, Hq, 1, D]`` (the padded rows index it) against their groups' keys and values
    ``[G, Hkv, W + R, D]``: the slot's columns (``visible [G, W]``: what each group's rows may see), then
    the rows' own. One SDPA call, two in a layer where some row steers (the second with the steered
    columns' keys times alpha, so a row whose steering touches no column it sees gets exactly the
    unsteered result). Returns the extra rows ``[m, 1, Hq, Dv]`` in ``query``'s dtype."""
    Hkv = keys.shape[1]
    g = query.shape[1] // Hkv
    here = query.device
    keys, values = _f32(keys), _f32(values)
    # The group's rows folded into the query dimension [G, Hkv, R * g, D] in one gather, as grouped-query
    # attention folds heads.
    q = _f32(query[_indices(pg, "own", here, Hkv, g)])
    mask = _fused_mask(pg, visible, g)
    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scaling)  # [G, Hkv, R * g, Dv]
    if pg.any_layer[layer]:
        steered = F.scaled_dot_product_attention(q, keys * _key_scale(pg), values, attn_mask=mask, scale=scaling)
        o = torch.where(_row_steers(pg, g)[layer], steered, o)
    o = o[_indices(pg, "out", here, Hkv, g)]  # [m, 1, Hq, Dv], the padding dropped
    return o if o.dtype == query.dtype else o.to(query.dtype)


def _indices(pg: PaddedGroups, kind: Any, device: torch.device, Hkv: int, g: int) -> tuple[torch.Tensor, ...]:
    """Advanced-indexing tensors, built once per forward, that gather in one op:

    * ``slots``: a layer's cache ``[rows, Hkv, capacity, D]`` -> the groups' columns ``[G, Hkv, W, D]``;
      ``("slots+own", scratch)``: then the padded rows' own keys from the scratch row, ``[G, Hkv, W + R, D]``;
    * ``own`` (g = 1: keys, values; g = Hq / Hkv: queries): a forward's rows ``[N, H, 1, D]`` -> the padded
      rows ``[G, Hkv, R * g, D]``, head ``h * g + j`` of row ``r`` at ``[., h, r * g + j]``;
    * ``out``: the SDPA output ``[G, Hkv, R * g, Dv]`` -> the extra rows ``[m, 1, Hq, Dv]``.
    """
    key = ("indices", kind, str(device), Hkv, g)
    if key not in pg.memo:
        G, R, W = pg.slots.numel(), pg.per_group, pg.width
        arange = partial(torch.arange, device=device)
        heads = arange(Hkv).view(1, Hkv, 1)
        slots = pg.slots.to(device).view(G, 1, 1)
        if kind == "slots":
            idx = (slots, heads, arange(W).view(1, 1, W))
        elif kind[0] == "slots+own":
            rows = torch.cat([slots.expand(G, 1, W), torch.full((G, 1, R), kind[1], device=device)], dim=2)
            columns = torch.cat([arange(W).expand(G, 1, W), arange(pg.offset, pg.offset + G * R).view(G, 1, R)], dim=2)
            idx = (rows, heads, columns)
        elif kind == "own":
            rows = pg.rows.to(device).view(G, 1, R, 1).expand(G, 1, R, g).reshape(G, 1, R * g)
            folded = (arange(Hkv)[:, None] * g + arange(g)[None, :]).repeat(1, R).view(1, Hkv, R * g)
            idx = (rows, folded, torch.zeros(1, 1, 1, dtype=torch.long, device=device))
        else:
            Hq = Hkv * g
            idx = (pg.out_group.to(device).view(-1, 1, 1), (arange(Hq) // g).view(1, 1, Hq),
                   pg.out_row.to(device).view(-1, 1, 1) * g + (arange(Hq) % g).view(1, 1, Hq))
        pg.memo[key] = idx
    return pg.memo[key]


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32; no op at all when it is already (each op costs the host a dispatch)."""
    return t if t.dtype == torch.float32 else t.float()


def _fused_mask(pg: PaddedGroups, visible: torch.Tensor, g: int) -> torch.Tensor:
    """``[G, 1, R * g, W + R]``: a row sees its group's visible columns and its own key."""
    key = ("fused_mask", id(visible), g)
    if key not in pg.memo:
        G, R, W = pg.slots.numel(), pg.per_group, pg.width
        eye = torch.eye(R, dtype=torch.bool, device=visible.device).expand(G, R, R)
        mask = torch.cat([visible[:, None, :].expand(G, R, W), eye], dim=-1)
        pg.memo[key] = mask[:, None, :, None, :].expand(G, 1, R, g, W + R).reshape(G, 1, R * g, W + R)
    return pg.memo[key]


def _key_scale(pg: PaddedGroups) -> torch.Tensor:
    """``[G, 1, W + R, 1]``: the group's alpha on its steered columns, 1 elsewhere (own keys included)."""
    if "key_scale" not in pg.memo:
        pg.memo["key_scale"] = F.pad(pg.scale, (0, 0, 0, pg.per_group), value=1.0)
    return pg.memo["key_scale"]


def _row_steers(pg: PaddedGroups, g: int) -> tuple[torch.Tensor, ...]:
    """Per layer ``[G, 1, R * g, 1]``: whether a padded row steers there, per folded query (one tensor per
    layer, unbound once: a layer picks its own without an op)."""
    key = ("row_steers", g)
    if key not in pg.memo:
        G, R = pg.slots.numel(), pg.per_group
        steers = pg.steers.t().reshape(-1, G, 1, R, 1, 1).expand(-1, G, 1, R, g, 1)
        pg.memo[key] = steers.reshape(-1, G, 1, R * g, 1).unbind(0)
    return pg.memo[key]


def attend_explicit(pg: PaddedGroups, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    ks: torch.Tensor, vs: torch.Tensor, visible: torch.Tensor, scaling: float,
                    softcap: float | None) -> torch.Tensor:
    """As :func:`attend_fused`, the products written out: float32 logits from the product on, alpha
    multiplying the steered columns' logits unrounded, soft-capping where the model asks for it."""
    _, Hq, _, D = query.shape
    Hkv = key.shape[1]
    g = Hq // Hkv
    G, R, W = pg.slots.numel(), pg.per_group, pg.width
    # float32 from here; the softmax scale goes on the queries (one product per layer, not per column)
    q = query[:, :, 0].index_select(0, pg.rows).float() * scaling  # [G * R, Hq, D]
    q5 = q.view(G, R, Hkv, g, D).permute(0, 2, 1, 3, 4)  # [G, Hkv, R, g, D]
    s = torch.matmul(q5.reshape(G, Hkv, R * g, D), ks.float().transpose(-1, -2)).view(G, Hkv, R, g, W)
    if pg.any_layer[layer]:  # alpha on the steered columns' (float32) logits
        s = s * _multipliers(pg)[layer].view(G, R, W)[:, None, :, None, :]
    own_k = key[:, :, 0].index_select(0, pg.rows).float().view(G, R, Hkv, 1, D).permute(0, 2, 1, 3, 4)
    own = torch.matmul(q5, own_k.transpose(-1, -2))  # [G, Hkv, R, g, 1]: each row's own key
    s = torch.cat([s, own], dim=-1)  # [G, Hkv, R, g, W + 1]
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    key_ = ("hidden", id(visible))
    if key_ not in pg.memo:  # what each group's rows cannot see, then their own key (always seen)
        hidden = torch.cat([~visible, visible.new_zeros(G, 1)], dim=1)
        pg.memo[key_] = hidden[:, None, None, None, :]
    s = s.masked_fill(pg.memo[key_], float("-inf"))
    p = torch.softmax(s, dim=-1).to(query.dtype)
    o = torch.matmul(p[..., :W].reshape(G, Hkv, R * g, W), vs).view(G, Hkv, R, g, -1)
    own_v = value[:, :, 0].index_select(0, pg.rows).view(G, R, Hkv, 1, -1).permute(0, 2, 1, 3, 4)
    o = (o + p[..., W:] * own_v)[pg.out_group, :, pg.out_row]  # [m, Hkv, g, Dv], the padding dropped
    return o.view(o.shape[0], 1, Hq, -1).to(query.dtype)


def _multipliers(pg: PaddedGroups) -> torch.Tensor:
    """[layers, G * R, W] float32: alpha where a row steers a column in a layer, else 1; built once per
    forward for every layer (a layer reads its slice, a view)."""
    if "multipliers" not in pg.memo:
        columns = torch.zeros(pg.rows.numel(), pg.width, dtype=torch.bool, device=pg.rows.device)
        columns[tuple(stage(pg.rows.device, *pg.steered))] = True  # [G * R, W]: each row's steered columns
        steer = pg.steers.t()[:, :, None] & columns[None]
        pg.memo["multipliers"] = torch.where(steer, pg.alpha[None, :, None], 1.0)
    return pg.memo["multipliers"]
