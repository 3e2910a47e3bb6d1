"""A forward's host data, sent to the device in one copy.

Each decode forward needs a handful of small integer arrays on the device (the slots that advance,
positions, input ids, the rows whose logits are read, the extra rows' layout). Built one by one with
``torch.tensor(list, device=...)`` each is its own blocking host-to-device copy. :func:`stage` packs them
into one host tensor, copies it once (from pinned memory, without blocking the host, on CUDA) and hands
back device views.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["stage"]


def stage(device: torch.device, *arrays: Sequence[int], dtype: torch.dtype = torch.long) -> list[torch.Tensor]:
    """``arrays`` (Python sequences of numbers) as 1-D tensors of ``dtype`` on ``device``, copied together."""
    sizes = [len(a) for a in arrays]
    host = torch.tensor([v for a in arrays for v in a], dtype=dtype)
    if device.type == "cuda":
        moved = host.pin_memory().to(device, non_blocking=True)  # the allocator keeps the pinned copy alive
    else:
        moved = host.to(device)
    return list(torch.split(moved, sizes))
