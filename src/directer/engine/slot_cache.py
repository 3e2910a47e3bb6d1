"""The persistent key/value store of the continuous engine: one row (slot) per running sequence.

Each slot has its own column axis, and a sequence's column is its token's position: a prefill writes
prompt token ``t`` of a slot at column ``t``, and a decode forward writes each advancing sequence's
new key at the column of its position. A slot therefore holds exactly its sequence's written tokens,
from column 0, with no holes (a sequence waiting for its trials simply does not advance), and a freed
slot's next sequence starts again at column 0: nothing is ever trimmed, shifted or compacted.

The buffers are ``[slots + 1, kv_heads, capacity, head_dim]`` per layer, ``capacity`` the longest
sequence's columns (plus spare, amortising growth). A cache given a ``limit`` (the KV budget,
:mod:`directer.engine.kv_budget`) never holds more columns; the engine refuses a request whose prompt
and response cannot fit it, so every admitted sequence runs to its end.

Every layer is stored in full, sliding-window layers included: the window is applied by position in
the attention (a column is its position).

The extra row of each layer's buffer is the *scratch row*, which belongs to no sequence. A decode
forward writes its extra rows' (trials', probes') new keys and values there, a column for each padded
extra row, in the same write as the raw rows' keys, so the extra rows gather their slot's columns
and their own keys in one read. No slot's row is ever touched by it.
"""

from __future__ import annotations

import torch

__all__ = ["SlotCache"]

_GROW = 256  # spare columns added when the buffers are full (amortises the copy)


class SlotCache:
    """Keys/values ``[slots, kv_heads, capacity, head_dim]`` per layer, with each slot's written columns."""

    def __init__(self, num_layers: int, slots: int, device: torch.device, limit: int | None = None):
        self.num_layers = num_layers
        self.slots = slots
        self.device = device
        self.limit = limit  # most columns the buffers may hold (None: grow as needed)
        # Per layer the buffers with their scratch row [slots + 1, ...], and the slots' rows (views of them).
        self.key_store: list[torch.Tensor | None] = [None] * num_layers
        self.value_store: list[torch.Tensor | None] = [None] * num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.capacity = 0
        self.valid = torch.zeros(slots, 0, dtype=torch.bool, device=device)  # the slot's written columns
        # Columns an attention bias targets in its slot's rows (the prompt positions of a bias baseline).
        self.marked = torch.zeros(slots, 0, dtype=torch.bool, device=device)

    # -- columns ----------------------------------------------------------------------------------

    def _resize(self, capacity: int) -> None:
        """Reallocate to ``capacity`` columns (at most the limit), keeping every column held now."""
        if self.limit is not None:
            capacity = min(capacity, self.limit)
        keep = min(self.capacity, capacity)

        def moved(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            new = t.new_zeros(*t.shape[:2], capacity, t.shape[-1])
            new[:, :, :keep] = t[:, :, :keep]
            return new

        # Layer by layer, in place: each old layer is freed as its copy replaces it, so growth holds one
        # layer twice at most (not the whole cache).
        for stores, views in ((self.key_store, self.keys), (self.value_store, self.values)):
            for i, t in enumerate(stores):
                stores[i] = views[i] = None
                stores[i] = moved(t)
                del t
                views[i] = None if stores[i] is None else stores[i][:self.slots]
        for name in ("valid", "marked"):
            new = torch.zeros(self.slots, capacity, dtype=torch.bool, device=self.device)
            new[:, :keep] = getattr(self, name)[:, :keep]
            setattr(self, name, new)
        self.capacity = capacity

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` columns in every slot (a slot's columns are ``0..columns-1``)."""
        if self.limit is not None and columns > self.limit:  # the engine refuses what cannot fit: a bug
            raise RuntimeError(f"slot cache over its limit: {columns} columns > {self.limit}")
        if columns > self.capacity:
            self._resize(columns + _GROW)

    def place(self, slots: torch.Tensor, lengths: list[int]) -> None:
        """Prepare ``slots`` for prompts of ``lengths`` tokens: columns ``0..length-1`` of each."""
        self.reserve(max(lengths))
        n = torch.tensor(lengths, device=self.device)
        self.valid[slots] = torch.arange(self.capacity, device=self.device)[None, :] < n[:, None]
        self.marked[slots] = False

    def open_columns(self, slots: torch.Tensor, columns: torch.Tensor) -> None:
        """A decode forward's new column of each of ``slots`` (the column of its position): valid from now."""
        self.valid[slots, columns] = True

    def write_rows(self, layer: int, targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor], keys: torch.Tensor,
                   values: torch.Tensor) -> None:
        """Store ``keys``/``values`` ``[..., head_dim]`` where ``targets`` (buffer rows, kv heads, columns,
        broadcast to the keys' leading shape) say: one indexed write each. :meth:`row_targets` gives a
        decode forward's, :meth:`prompt_targets` a prefill's."""
        self._allocate(layer, keys, values)
        self.key_store[layer][targets] = keys
        self.value_store[layer][targets] = values

    @staticmethod
    def row_targets(rows: torch.Tensor, columns: torch.Tensor, kv_heads: int) -> tuple[torch.Tensor, ...]:
        """One new key per forward row: row ``i`` (``keys [N, kv_heads, 1, head_dim]``) at buffer row
        ``rows[i]`` (a slot, or :attr:`scratch`) and column ``columns[i]``; shaped ``[N, kv_heads, 1]`` as
        the keys are, so the write takes them without a view."""
        heads = torch.arange(kv_heads, device=rows.device)[None, :, None]
        return rows[:, None, None], heads, columns[:, None, None]

    @staticmethod
    def prompt_targets(slots: torch.Tensor, pads: torch.Tensor, width: int, kv_heads: int) -> tuple[torch.Tensor, ...]:
        """Left-padded prompts ``[B, kv_heads, width, head_dim]`` (prompt ``b`` after ``pads[b]`` pads) to
        their slots from column 0: batch position ``j`` to column ``(j - pad) mod width``. The pads land
        past the prompt (columns ``length..width-1``, not valid: a later forward overwrites them), so
        every write has a target of its own."""
        heads = torch.arange(kv_heads, device=slots.device)[None, :, None]
        return slots[:, None, None], heads, SlotCache.prompt_columns(pads, width)[:, None, :]

    @staticmethod
    def prompt_columns(pads: torch.Tensor, width: int) -> torch.Tensor:
        """``[B, width]``: the column of each batch position of left-padded prompts (see :meth:`prompt_targets`)."""
        return (torch.arange(width, device=pads.device)[None, :] - pads[:, None]) % width

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
        """Mark ``columns`` of ``slot`` as an attention bias's targets (cleared by :meth:`place`)."""
        self.marked[slot, columns.to(self.device)] = True

    def free(self, slot: int) -> None:
        self.valid[slot] = False
        self.marked[slot] = False
