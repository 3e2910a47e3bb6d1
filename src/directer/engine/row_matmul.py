"""Linear layers computed as ``W @ x.T`` for the engine's multi-row forwards on a CPU.

A packed forward carries a handful of rows (a raw row and its trials, a few sequences and their
probes). For such skinny inputs oneDNN/MKL's ``x @ W.T`` (what ``nn.Linear`` computes) is far from
weight-bound on a CPU: on the bundled model in float32 (2 cores) its 210 decoder linears cost 41 ms
for one row, 58 ms for two and 92 ms for eight, while the same products as ``(W @ x.T).T`` cost
34-52 ms up to eight rows and 0.7-0.85x ``x @ W.T`` at 16-128 rows; the output embedding 0.35-0.6x
(``scripts/row_matmul_speed.py``). That is what makes a trial row cheap beside a raw row.

:func:`install` gives every plain ``nn.Linear`` of a model a forward that takes the transposed
product while :func:`transposed` is active in this thread and the input has 2 to ``MAX_ROWS`` rows, and is
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

__all__ = ["MATMUL_CHOICES", "MAX_ROWS", "install", "padded", "pays_off", "product", "transposed", "wanted"]

MATMUL_CHOICES = ("auto", "transposed", "stock")
_STATE = threading.local()
_MARK = "_directer_row_matmul"
# Above this many rows (a long prefill) x @ W.T is as fast or faster: 1,100 rows took 1.07x with W @ x.T.
MAX_ROWS = 512


def wanted(choice: str, device: torch.device, dtype: torch.dtype, model: torch.nn.Module | None = None) -> bool:
    """Whether to use the transposed product. ``auto``: only on a CPU in float32 (GPU GEMMs and the CPU's
    reduced-precision kernels are left as they are), and there only if it is faster on this machine for
    ``model``'s linears (:func:`pays_off`, measured once per process): the gain depends on the CPU and its
    BLAS (on one 2-core Xeon it made 2-8 rows cost about one row; on another it made 2 rows cost 2.2x)."""
    if choice not in MATMUL_CHOICES:
        raise ValueError(f"unknown matmul choice {choice!r}: choose one of {', '.join(MATMUL_CHOICES)}")
    if choice == "auto":
        if device.type != "cpu" or dtype != torch.float32:
            return False
        return pays_off(model) if model is not None else True
    return choice == "transposed"


_DECISIONS: dict[tuple, bool] = {}


def pays_off(model: torch.nn.Module, rows: tuple[int, ...] = (2, 8), repeats: int = 3) -> bool:
    """Whether ``W @ x.T`` beats ``x @ W.T`` on this machine for the model's largest linears at a few
    rows (the engine's usual widths): the best of ``repeats`` timings of both on the four largest
    weights, summed over ``rows``; transposed only when it is at least 10 % faster. Cached per weight
    shapes and thread count (a few tens of milliseconds, once)."""
    import time

    weights = sorted((m.weight for m in model.modules() if type(m) is torch.nn.Linear),
                     key=lambda w: w.numel(), reverse=True)[:4]
    if not weights:
        return False
    key = (tuple(tuple(w.shape) for w in weights), torch.get_num_threads(), rows)
    if key in _DECISIONS:
        return _DECISIONS[key]
    totals = [0.0, 0.0]
    with torch.no_grad():
        for n in rows:
            xs = [torch.randn(n, w.shape[1], dtype=w.dtype) for w in weights]
            for which, run in enumerate((lambda w, x: F.linear(x, w), lambda w, x: product(w, x))):
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    for w, x in zip(weights, xs):
                        run(w, x)
                    best = min(best, time.perf_counter() - start)
                totals[which] += best
    _DECISIONS[key] = totals[1] < 0.9 * totals[0]
    return _DECISIONS[key]


def padded(rows: int) -> int:
    """The row count the product is computed at: 2, 4, 8, 16, then multiples of 8. MKL's kernels for
    ``W @ x.T`` are fastest at these widths and markedly slower between them (31 rows cost 1.8x 32 on
    the bundled model), so zero rows are cheaper than the odd width."""
    if rows <= 16:
        return 1 << max(0, rows - 1).bit_length()
    return -(-rows // 8) * 8


def product(weight: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``flat @ weight.T`` for ``[rows, in]`` inputs, computed as the engine does: ``W @ x.T`` at the
    padded width, contiguous."""
    rows = flat.shape[0]
    width = padded(rows)
    if width > rows:
        flat = torch.cat([flat, flat.new_zeros(width - rows, flat.shape[1])])
    # contiguous: the transposed view slowed every later op of a 1,100-token prefill by ~1.6x
    return torch.mm(weight, flat.t()).t()[:rows].contiguous()


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if getattr(_STATE, "on", False) and x.dim() >= 2 and 2 * x.shape[-1] <= x.numel() <= MAX_ROWS * x.shape[-1]:
        y = product(self.weight, x.reshape(-1, x.shape[-1]))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])
    return F.linear(x, self.weight, self.bias)


def install(model: torch.nn.Module) -> int:
    """Give the model's plain linear layers the switchable forward (once); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not getattr(module, _MARK, False):
            # Under a device map accelerate wraps some modules' forward in a hook (which moves the input
            # to the module's device, or brings offloaded weights in) that calls ``_old_forward``:
            # replace that, inside the hook.
            target = "_old_forward" if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") else "forward"
            setattr(module, target, types.MethodType(_forward, module))
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
