"""Linear layers computed as ``W @ x.T`` for the engine's multi-row forwards on a CPU.

A packed forward carries a handful of rows (a raw row and its trials, a few sequences and their
probes). For such skinny inputs oneDNN/MKL's ``x @ W.T`` (what ``nn.Linear`` computes) is far from
weight-bound on a CPU: on the bundled model in float32 (2 cores) the 210 decoder linears cost 45 ms
for one row but 61-73 ms for 2-8 rows, while the same products as ``(W @ x.T).T`` cost 34-48 ms,
about a one-row pass; at 32-256 rows (prefill) the transposed product is still 1.25-1.4x faster, and the
output embedding (49152 x 576) 2-3x (``scripts/row_matmul_speed.py``). That is what lets trial rows
ride along nearly for free.

:func:`install` gives every plain ``nn.Linear`` of a model a forward that takes the transposed
product while :func:`transposed` is active in this thread and the input has at least two rows, and is
``nn.Linear.forward`` otherwise (bit for bit), so the model behaves as before outside the engine.
The results equal ``nn.Linear``'s up to float rounding (a different summation order: ~1e-6 relative
in float32). A one-row forward is computed by ``nn.Linear`` itself, so a single sequence's raw pass is
plain decoding's, bit for bit.
"""

from __future__ import annotations

import threading
import types
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

__all__ = ["MATMUL_CHOICES", "install", "padded", "transposed", "wanted"]

MATMUL_CHOICES = ("auto", "transposed", "stock")
_STATE = threading.local()
_MARK = "_directer_row_matmul"


def wanted(choice: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether to use the transposed product: ``auto`` on a CPU in float32 (where it was measured to
    pay; GPU GEMMs and the CPU's reduced-precision kernels are left as they are)."""
    if choice not in MATMUL_CHOICES:
        raise ValueError(f"unknown matmul choice {choice!r}: choose one of {', '.join(MATMUL_CHOICES)}")
    if choice == "auto":
        return device.type == "cpu" and dtype == torch.float32
    return choice == "transposed"


def padded(rows: int) -> int:
    """The row count the product is computed at: 2, 4, 8, 16, then multiples of 8. MKL's kernels for
    ``W @ x.T`` are fastest at these widths and markedly slower between them (31 rows cost 1.8x 32 on
    the bundled model), so zero rows are cheaper than the odd width."""
    if rows <= 16:
        return 1 << max(0, rows - 1).bit_length()
    return -(-rows // 8) * 8


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if getattr(_STATE, "on", False) and x.dim() >= 2 and x.numel() >= 2 * x.shape[-1]:
        flat = x.reshape(-1, x.shape[-1])
        rows = flat.shape[0]
        width = padded(rows)
        if width > rows:
            flat = torch.cat([flat, flat.new_zeros(width - rows, flat.shape[1])])
        y = torch.mm(self.weight, flat.t()).t()[:rows]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])
    return F.linear(x, self.weight, self.bias)


def install(model: torch.nn.Module) -> int:
    """Give the model's plain linear layers the switchable forward (once); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not getattr(module, _MARK, False):
            module.forward = types.MethodType(_forward, module)
            setattr(module, _MARK, True)
            count += 1
    return count


@contextmanager
def transposed(enabled: bool = True) -> Iterator[None]:
    """Within this block (this thread only), installed linears with 2+ rows take ``W @ x.T``."""
    before = getattr(_STATE, "on", False)
    _STATE.on = enabled
    try:
        yield
    finally:
        _STATE.on = before
