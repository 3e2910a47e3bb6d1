"""The persistent key/value store of the continuous engine: one row (slot) per running sequence.

Every slot shares the column axis. A prefill writes a prompt's keys and values into the last columns
of a free slot (the cache grows at the front when the prompt is longer than the cache); each decode
forward opens one new column for all slots, written only by the slots whose raw row ran (the others,
waiting for trials or free, leave a hole that their masks hide). Columns are addressed *logically*
(stable for a sequence's lifetime) and mapped to physical buffer columns by ``origin``, which grows
when leading columns that no running sequence uses are trimmed away.

A cache given a ``limit`` (the KV budget, :mod:`directer.engine.kv_budget`) never holds more columns:
when the next column would pass it, the engine trims, then squeezes every slot's holes out
(:meth:`compact`), which leaves each running sequence exactly its written columns (prompt plus
emitted tokens), so a sequence whose prompt and response fit the limit always runs.

Every layer is stored in full, sliding-window layers included: the window is applied by position in
the attention (holes make "the last W columns" differ from "the last W tokens").

Each layer's buffer has one row more than there are slots: the *scratch row*, which belongs to no
sequence. A decode forward writes its extra rows' (trials', probes') new keys and values there, column
``p`` for padded extra row ``p``, in the same write as the raw rows' keys, so the extra rows gather their
slot's columns and their own keys in one read. No slot's row is ever touched by it.
"""

from __future__ import annotations

import torch

__all__ = ["SlotCache"]

_GROW = 256  # spare columns added when the buffers are full (amortises the copy)


class SlotCache:
    """Keys/values ``[slots, kv_heads, capacity, head_dim]`` per layer, with per-slot validity and positions."""

    def __init__(self, num_layers: int, slots: int, device: torch.device, limit: int | None = None):
        self.num_layers = num_layers
        self.slots = slots
        self.device = device
        self.limit = limit  # most columns the buffers may hold (None: grow as needed)
        self.compactions = 0
        # Per layer the buffers with their scratch row [slots + 1, ...], and the slots' rows (views of them).
        self.key_store: list[torch.Tensor | None] = [None] * num_layers
        self.value_store: list[torch.Tensor | None] = [None] * num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.capacity = 0
        self.width = 0  # physical columns in use
        self.origin = 0  # logical column of physical column 0
        self.valid = torch.zeros(slots, 0, dtype=torch.bool, device=device)
        self.pos = torch.zeros(slots, 0, dtype=torch.long, device=device)
        # Columns an attention bias targets in its slot's rows (the prompt positions of a bias baseline).
        self.marked = torch.zeros(slots, 0, dtype=torch.bool, device=device)

    # -- columns ----------------------------------------------------------------------------------

    def physical(self, logical: int) -> int:
        return logical - self.origin

    def fits(self, columns: int) -> bool:
        """Whether ``columns`` more columns fit under the limit."""
        return self.limit is None or self.width + columns <= self.limit

    def _resize(self, capacity: int, front: int = 0) -> None:
        """Reallocate to ``capacity`` columns (at most the limit), shifting the used ones right by ``front``."""
        if self.limit is not None:
            capacity = min(capacity, self.limit)
            if self.width + front > capacity:
                raise RuntimeError(f"slot cache over its limit: {self.width + front} columns > {self.limit}")
        def moved(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            new = t.new_zeros(*t.shape[:2], capacity, t.shape[-1])
            new[:, :, front:front + self.width] = t[:, :, :self.width]
            return new

        # Layer by layer, in place: each old layer is freed as its copy replaces it, so growth holds one
        # layer twice at most (not the whole cache).
        for stores, views in ((self.key_store, self.keys), (self.value_store, self.values)):
            for i, t in enumerate(stores):
                stores[i] = views[i] = None
                stores[i] = moved(t)
                del t
                views[i] = None if stores[i] is None else stores[i][:self.slots]
        valid = torch.zeros(self.slots, capacity, dtype=torch.bool, device=self.device)
        pos = torch.zeros(self.slots, capacity, dtype=torch.long, device=self.device)
        marked = torch.zeros(self.slots, capacity, dtype=torch.bool, device=self.device)
        valid[:, front:front + self.width] = self.valid[:, :self.width]
        pos[:, front:front + self.width] = self.pos[:, :self.width]
        marked[:, front:front + self.width] = self.marked[:, :self.width]
        self.valid, self.pos, self.marked, self.capacity = valid, pos, marked, capacity
        self.width += front
        self.origin -= front

    def reserve(self, columns: int) -> None:
        if self.width + columns > self.capacity:
            self._resize(self.width + columns + _GROW)

    def open_column(self, slots: torch.Tensor, positions: torch.Tensor) -> int:
        """Open the next column for a decode forward: valid for ``slots`` (at ``positions``), a hole
        for every other slot. Returns its physical index (the forward writes it)."""
        self.reserve(1)
        col = self.width
        self.valid[:, col] = False
        self.marked[:, col] = False
        self.valid[slots, col] = True
        self.pos[slots, col] = positions
        self.width += 1
        return col

    def place(self, slots: torch.Tensor, lengths: list[int]) -> int:
        """Prepare ``slots`` for prompts of ``lengths`` tokens ending at the last used column; return the
        physical column of the first prefill column (prompts are left-padded to the longest)."""
        longest = max(lengths)
        if longest > self.width:
            front = longest - self.width
            self._resize(max(self.capacity, self.width) + front + _GROW, front=front)
        start = self.width - longest
        self.valid[slots] = False
        self.marked[slots] = False
        for s, n in zip(slots.tolist(), lengths):
            self.valid[s, self.width - n:self.width] = True
            self.pos[s, self.width - n:self.width] = torch.arange(n, device=self.device)
        return start

    def write(self, layer: int, slots: torch.Tensor, column: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``keys``/``values`` ``[n, kv_heads, q, head_dim]`` of ``slots`` from physical ``column`` on."""
        self._allocate(layer, keys, values)
        n = keys.shape[2]
        slots = slots.to(keys.device)  # the layer's device (a device map spreads the layers)
        self.keys[layer][slots, :, column:column + n] = keys
        self.values[layer][slots, :, column:column + n] = values

    def write_rows(self, layer: int, targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor], keys: torch.Tensor,
                   values: torch.Tensor) -> None:
        """Store one new key/value per forward row (``keys``/``values`` ``[N, kv_heads, 1, head_dim]``), row
        ``i`` at buffer row ``rows[i]`` (a slot, or :attr:`scratch`) and physical column ``columns[i]``:
        one write each. ``targets`` is :meth:`row_targets`'s."""
        self._allocate(layer, keys, values)
        self.key_store[layer][targets] = keys
        self.value_store[layer][targets] = values

    @staticmethod
    def row_targets(rows: torch.Tensor, columns: torch.Tensor, kv_heads: int) -> tuple[torch.Tensor, ...]:
        """The index of :meth:`write_rows` for buffer ``rows``/``columns`` ``[N]``: shaped ``[N, kv_heads,
        1]`` as the keys are, so the write takes them without a view."""
        heads = torch.arange(kv_heads, device=rows.device)[None, :, None]
        return rows[:, None, None], heads, columns[:, None, None]

    @property
    def scratch(self) -> int:
        """The buffer row that belongs to no slot (a forward's extra rows' own keys)."""
        return self.slots

    def _allocate(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        if self.keys[layer] is None:  # the first write: the layer's device and dtype are the model's
            shape = (self.slots + 1, keys.shape[1], max(self.capacity, 1), keys.shape[-1])
            self.key_store[layer] = keys.new_zeros(shape)
            self.value_store[layer] = values.new_zeros(shape[:3] + (values.shape[-1],))
            self.keys[layer] = self.key_store[layer][:self.slots]
            self.values[layer] = self.value_store[layer][:self.slots]

    def mark(self, slot: int, columns: torch.Tensor) -> None:
        """Mark physical ``columns`` of ``slot`` as an attention bias's targets (cleared by :meth:`place`)."""
        self.marked[slot, columns.to(self.device)] = True

    def free(self, slot: int) -> None:
        self.valid[slot] = False
        self.marked[slot] = False

    def trim(self, running: list[int], force: bool = False) -> None:
        """Drop leading columns no running slot uses, once they are a quarter of the cache or more
        (``force``: any)."""
        if not running:
            self.origin += self.width
            self.width = 0
            return
        used = self.valid[running, :self.width].any(dim=0)
        first = int(used.nonzero()[0]) if bool(used.any()) else self.width
        if first == 0 or (not force and (first < 64 or first * 4 < self.width)):
            return
        keep = self.width - first
        for layers in (self.keys, self.values):
            for t in layers:
                if t is not None:
                    t[:, :, :keep] = t[:, :, first:self.width].clone()
        self.valid[:, :keep] = self.valid[:, first:self.width].clone()
        self.pos[:, :keep] = self.pos[:, first:self.width].clone()
        self.marked[:, :keep] = self.marked[:, first:self.width].clone()
        self.valid[:, keep:] = False
        self.marked[:, keep:] = False
        self.width = keep
        self.origin += first

    def make_room(self, running: list[int]) -> dict[int, list[int]] | None:
        """One more column under the limit: drop the leading columns no running slot uses, then, if that is
        not enough, :meth:`compact` (its column map is returned; None when trimming sufficed)."""
        self.trim(running, force=True)
        if self.fits(1):
            return None
        moved = self.compact(running)
        if not self.fits(1):  # the engine refuses what cannot fit, so this is a bug, not a user error
            raise RuntimeError(f"the slot cache is full after compaction ({self.width} columns)")
        return moved

    def compact(self, running: list[int]) -> dict[int, list[int]]:
        """Squeeze the holes out of ``running`` slots: each keeps its valid columns, in order, from physical
        column 0 on (other slots are emptied). Returns, per running slot, the new physical column of each
        old one (-1 for a hole) so its sequence can move its logical columns. One layer at a time, through
        one gathered layer (never a second copy of the cache)."""
        width = self.width
        valid = torch.zeros_like(self.valid[:, :width])
        valid[running] = self.valid[running, :width]
        count = valid.sum(dim=1)
        new_width = int(count.max()) if running else 0
        # order[s, j]: the old column that lands in new column j (valid columns first, stable)
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :new_width]
        kept = torch.arange(new_width, device=self.device)[None, :] < count[:, None]  # [slots, new_width]
        rank = torch.where(valid, valid.long().cumsum(dim=1) - 1, -1)
        for layers in (self.keys, self.values):
            for t in layers:
                if t is not None:  # in place, through one gathered layer
                    index = order.to(t.device)[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[-1])
                    t[:, :, :new_width] = torch.gather(t[:, :, :width], 2, index) * kept.to(t.device)[:, None, :, None]
        for name in ("valid", "pos", "marked"):
            old = getattr(self, name)
            new = torch.zeros_like(old)
            new[:, :new_width] = torch.gather(old[:, :width], 1, order) * kept if name != "valid" else kept
            setattr(self, name, new)
        self.width = new_width
        self.compactions += 1
        ranks = rank.tolist()
        return {s: ranks[s] for s in running}
