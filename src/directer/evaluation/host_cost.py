"""What decoding costs the host, counted rather than timed.

On a GPU the host issues every kernel launch and waits at every synchronisation, so for models up to
~8B at small batches the host's work per forward decides the speed. Both are counted here on any
device, deterministically, under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`:

- **aten ops**: every operator call that reaches the dispatcher (about one kernel launch each on a GPU);
- **kernels**: the aten ops that do device work, i.e. all but views (``view``, ``slice``, ``permute``,
  ``expand``, ``select``, ... only rewrite a tensor's metadata) and bare allocations (``empty``): on a GPU
  these are the kernel launches (a few fused ops launch more than one kernel);
- **synchronisations**: operations that make the host wait for the device: a scalar read
  (``.item()``, ``int(t)``, ``bool(t)``: ``aten._local_scalar_dense``, or ``aten.item`` and
  ``aten.is_nonzero`` under inference mode), ``nonzero``, ``masked_select``,
  indexing with a boolean mask, and ``Tensor.tolist()`` (which reads a tensor without the dispatcher,
  so it is counted by wrapping it);
- **host-to-device copies**: tensors built from Python data (``torch.tensor(list)``: ``aten.lift_fresh``;
  not Python scalars, which kernels take by value); on a GPU each is a small copy, blocking unless pinned
  (the engine stages a forward's arrays in one copy: ``engine/staging.py``).

    from directer.evaluation.host_cost import count_host_cost
    with count_host_cost() as cost:
        model.generate(...)
    print(cost.ops, cost.syncs)
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostCost", "count_host_cost"]

# A scalar read shows as ``_local_scalar_dense``, or as ``item``/``is_nonzero`` under inference mode.
_SYNC_OPS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.is_nonzero.default", "aten.equal.default",
             "aten.nonzero.default", "aten.masked_select.default",
             "aten.nonzero_static.default", "aten.unique.default", "aten._unique2.default"}
_COPY_OPS = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default"}
# Ops declared as possibly aliasing their input, which launch a kernel only when they do not: ``.to()``
# to another dtype or device, ``reshape`` or ``contiguous`` of a non-contiguous tensor.
_MAYBE_VIEW = ("aten.to.", "aten.reshape.", "aten.contiguous.", "aten.flatten.", "aten.type_as.", "aten.view_as.",
               "aten.expand_as.")
# Ops that touch no device memory: allocations and the marker of a tensor built from Python data.
_NO_KERNEL = {"aten.empty.memory_format", "aten.empty_strided.default", "aten.new_empty.default",
              "aten.new_empty_strided.default", "aten.empty_like.default", "aten.lift_fresh.default"}


@dataclass
class HostCost:
    """Counts of one block of work (see the module's docstring for what each counts)."""

    ops: int = 0
    kernels: int = 0
    syncs: int = 0
    copies: int = 0
    by_op: Counter = field(default_factory=Counter)
    sync_ops: Counter = field(default_factory=Counter)

    def per(self, n: int) -> dict[str, float]:
        """The counts per unit (per generated token, per forward)."""
        n = max(1, n)
        return {"ops": self.ops / n, "kernels": self.kernels / n, "syncs": self.syncs / n, "copies": self.copies / n}


def _bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices or ())


def _aliases(args: tuple, out: Any) -> bool:
    """Whether a composite op returned its input's memory (nothing was computed)."""
    first = args[0] if args else None
    return (isinstance(first, torch.Tensor) and isinstance(out, torch.Tensor) and first.device == out.device
            and out.untyped_storage().data_ptr() == first.untyped_storage().data_ptr())


class _Counter(TorchDispatchMode):
    def __init__(self, cost: HostCost):
        super().__init__()
        self.cost = cost

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = str(func)
        c = self.cost
        c.ops += 1
        c.by_op[name] += 1
        out = func(*args, **(kwargs or {}))
        if name.startswith(_MAYBE_VIEW):  # declared as possibly aliasing: a kernel only when it copied
            c.kernels += not _aliases(args, out)
        elif not (getattr(func, "is_view", False) or name in _NO_KERNEL):
            c.kernels += 1
        if name in _SYNC_OPS or (name in ("aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default")
                                 and _bool_index(args)):
            c.syncs += 1
            c.sync_ops[name] += 1
        elif name in _COPY_OPS and not (args and isinstance(args[0], torch.Tensor) and args[0].dim() == 0):
            c.copies += 1  # (a 0-dim one is a Python scalar, which a kernel takes by value: no copy)
        return out


@contextmanager
def count_host_cost() -> Iterator[HostCost]:
    """Count the aten ops, synchronisations and host-to-device copies of the enclosed work."""
    cost = HostCost()
    tolist = torch.Tensor.tolist

    def counted_tolist(self: torch.Tensor) -> Any:
        cost.syncs += 1
        cost.sync_ops["Tensor.tolist"] += 1
        return tolist(self)

    torch.Tensor.tolist = counted_tolist  # tolist reads the data without the dispatcher
    try:
        with _Counter(cost):
            yield cost
    finally:
        torch.Tensor.tolist = tolist
