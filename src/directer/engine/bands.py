"""Which cache columns a forward's rows read, as at most two attention calls per layer for each kind.

**Raw rows.** A raw row reads its own slot's columns up to its position (within the window on a sliding
layer). One attention call over every slot would read every slot's columns up to the *longest* raw
row's: with one 8k-token request among short ones, each short slot would read 8k columns. So the raw
rows are split in two bands when that pays:

- the **short band**: every slot (a view of the cache, no copy), columns up to the short rows' longest;
  the long rows' results from it are discarded;
- the **long band**: the long rows' slots, as a contiguous range of slots (a view) or gathered (a
  copy), whichever reads fewer columns, up to the longest.

Column ranges start at the first column any of the band's rows can see (on a sliding layer, the
oldest position still in a window), so a sliding layer reads its windows, not the whole history.

**Extra rows** (trials, probes; :mod:`directer.engine.extra_rows`) gather their groups' slot columns up
to the widest group's limit, so a long sequence's trials would make every group of the forward copy its
width. :func:`group_bands` splits the groups in two by their limits when that copies at least
:data:`MIN_SAVING` times fewer columns.

Plans are host arithmetic on the rows' positions, made once per forward (and window).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Band", "GATHER_COST", "MIN_COLUMNS", "MIN_SAVING", "RawBand", "attend_bands", "band_masks", "group_bands",
           "raw_bands"]

GATHER_COST = 3  # a gathered column is read, written and read again; a view's is read once
MIN_SAVING = 2.0  # split only when one band would read at least this many times the columns of two
MIN_COLUMNS = 256  # nor when the rows' columns span fewer than this (a second call costs more than it saves)


@dataclass(frozen=True)
class Band:
    """One attention call of the raw rows: slots ``lo..hi-1`` of the cache (a view), or ``gather`` (a
    copy of those slots' rows), columns ``first..last-1``."""

    first: int
    last: int
    lo: int = 0
    hi: int = 0
    gather: tuple[int, ...] = ()

    def reads(self) -> int:
        """Columns read, in slot-columns (a gathered one counted :data:`GATHER_COST` times)."""
        if self.gather:
            return GATHER_COST * len(self.gather) * (self.last - self.first)
        return (self.hi - self.lo) * (self.last - self.first)


def raw_bands(slots: int, raw_slots: list[int], positions: list[int], window: int | None = None,
              split: bool = True) -> list[Band]:
    """The bands of raw rows of ``raw_slots`` at ``positions`` in a cache of ``slots`` slots: first one
    over every slot (its result gives every row not in a later band), then, when splitting (``split``)
    reads :data:`MIN_SAVING` times fewer columns, one over the long rows."""
    spans = sorted((p + 1, _first(p, window), s) for s, p in zip(raw_slots, positions))  # (end, first, slot)
    n = len(spans)
    one = Band(min(f for _, f, _ in spans), spans[-1][0], 0, slots)
    if not split or one.last - one.first <= MIN_COLUMNS:
        return [one]
    # suffix minima and maxima of the long rows' first columns and slots (one pass: host time is a GPU's)
    first_after, lo_after, hi_after = [0] * n, [0] * n, [0] * n
    for i in range(n - 1, -1, -1):
        end, first, slot = spans[i]
        later = i + 1 < n
        first_after[i] = min(first, first_after[i + 1]) if later else first
        lo_after[i] = min(slot, lo_after[i + 1]) if later else slot
        hi_after[i] = max(slot, hi_after[i + 1]) if later else slot
    best, cost, short_first = None, one.reads(), spans[0][1]
    for cut in range(1, n):  # rows [0, cut) short, [cut, n) long
        short_first = min(short_first, spans[cut - 1][1])
        if spans[cut][0] == spans[cut - 1][0]:
            continue
        short = (spans[cut - 1][0] - short_first) * slots
        columns = one.last - first_after[cut]
        long = min((hi_after[cut] + 1 - lo_after[cut]) * columns, GATHER_COST * (n - cut) * columns)
        if short + long < cost:
            best, cost = cut, short + long
    if best is None or cost * MIN_SAVING > one.reads():
        return [one]
    short = Band(min(f for _, f, _ in spans[:best]), spans[best - 1][0], 0, slots)
    ranged = Band(first_after[best], one.last, lo_after[best], hi_after[best] + 1)
    gathered = Band(first_after[best], one.last, gather=tuple(sorted(s for _, _, s in spans[best:])))
    return [short, min(ranged, gathered, key=Band.reads)]


def group_bands(limits: list[int], split: bool = True) -> list[list[int]]:
    """The extra-row groups (their column ``limits``, in forward order) as one band, or two (short limits,
    long ones; each in forward order) when splitting (``split``) copies :data:`MIN_SAVING` times fewer
    columns: a band copies its groups times its widest limit."""
    everything = list(range(len(limits)))
    if not split or len(limits) < 2 or max(limits) <= MIN_COLUMNS:
        return [everything]
    order = sorted(everything, key=lambda i: limits[i])
    widest, n = limits[order[-1]], len(order)
    best, cost = None, n * widest
    for cut in range(1, n):  # groups order[:cut] short, order[cut:] long
        if limits[order[cut]] == limits[order[cut - 1]]:
            continue
        split_cost = cut * limits[order[cut - 1]] + (n - cut) * widest
        if split_cost < cost:
            best, cost = cut, split_cost
    if best is None or cost * MIN_SAVING > n * widest:
        return [everything]
    return [sorted(order[:best]), sorted(order[best:])]


RawBand = tuple[Band, torch.Tensor, "torch.Tensor | None"]  # a band, its mask, its gathered slots (or None)


def band_masks(bands: list[Band], full: torch.Tensor, device: torch.device) -> list[RawBand]:
    """Each band with its mask (cut from ``full``, every slot's ``[slots, 1 or Hkv, 1 or g, width]``:
    visibility, or additive terms) and, for a gathered band, its slots on ``device``."""
    made: list[RawBand] = []
    for band in bands:
        if band == Band(0, full.shape[-1], 0, full.shape[0]):
            made.append((band, full, None))  # one call over every slot: the mask as it is
            continue
        index = torch.tensor(band.gather, device=device) if band.gather else None
        rows = full[band.lo:band.hi] if index is None else full.index_select(0, index.to(full.device))
        mask = rows[..., band.first:band.last].clone()
        # a row that sees none of these columns (an idle slot, a long row's discarded short-band result)
        # sees the first: no NaN
        if mask.dtype == torch.bool:
            mask[..., 0] |= ~mask.any(dim=-1)
        else:
            mask[..., 0] = torch.where(torch.isneginf(mask).all(dim=-1), 0.0, mask[..., 0])
        made.append((band, mask.to(device), index))
    return made


def attend_bands(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, bands: list[RawBand], scaling: float) -> torch.Tensor:
    """Every slot's query ``q [slots, Hkv, g, D]`` against its slot of ``K``/``V`` ``[slots, Hkv, capacity, D]``,
    one SDPA call per band: the first gives every slot's result, a later one replaces its rows'.
    Returns ``[slots, Hkv, g, Dv]``."""
    o = None
    for band, mask, index in bands:
        columns = slice(band.first, band.last)
        if index is None:
            rows = slice(band.lo, band.hi)
            qb = q if band.hi - band.lo == q.shape[0] else q[rows]
            kb, vb = K[rows, :, columns], V[rows, :, columns]
        else:
            qb = q.index_select(0, index)
            kb, vb = K[:, :, columns].index_select(0, index), V[:, :, columns].index_select(0, index)
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scaling)
        if o is None:
            o = out
        elif index is None:
            o[rows] = out
        else:
            o.index_copy_(0, index, out)
    return o


def _first(position: int, window: int | None) -> int:
    """The first column a row at ``position`` sees (a sliding window sees positions > position - window)."""
    return max(0, position - window + 1) if window else 0
