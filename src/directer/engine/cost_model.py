"""What a decode forward costs by its number of rows, and whether folding a sequence's trials into its
raw forward (speculation) pays.

A decode forward costs about ``fixed + per_row * rows``: the fixed part is reading every weight once and
launching every kernel, the per-row part the arithmetic. On a 2-core CPU the bundled model's forward of
one row takes ~50 ms and each extra row ~6 ms; on a GPU, at small batches, extra rows are nearly free
until the device is compute-bound.

Speculation (:meth:`CostModel.speculation_pays`) weighs the two outcomes of a step. If the gate opens
(chance ``p``), trials already computed save the sequence a forward of waiting: the batch loses a
token's share of a forward, ``fixed / sequences``. If the gate stays shut, the ``rows`` trial rows were
wasted: ``rows * per_row``. Speculate when ``p * fixed / sequences > (1 - p) * rows * per_row``. With the
CPU's costs this holds for a sequence decoded alone whose gate opens often, and almost never in a batch;
with a GPU's, nearly always. Speculation never changes a token beyond float rounding, only the cost.

The costs are a fixed table per device type, not re-timed in every process: the choices then depend on
the batch and each sequence's own gate record alone, so every process of a run makes the same ones (a
trial computed in another forward can round differently at a float-level tie). :meth:`CostModel.fit`
reports what this device's forwards actually cost (``scripts/gpu_check.py`` records it), to revise the
table or to pass as ``EngineOptions.cost``.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CostModel", "DEFAULTS"]

# (fixed seconds, seconds per row) of a decode forward. CPU: the bundled model in float32 on 2 cores,
# fitted to the forwards of 4 IFEval prompts decoded one at a time (docs/speed.md, "Speculation"). CUDA:
# assumed (rows nearly free) until a GPU run of scripts/gpu_check.py measures it.
DEFAULTS = {"cpu": (0.045, 0.006), "cuda": (0.015, 0.00005)}


class CostModel:
    """A device's forward costs (``costs``, else its row of :data:`DEFAULTS`), and the forwards timed so far."""

    def __init__(self, device_type: str, costs: tuple[float, float] | None = None, window: int = 256):
        self.fixed, self.per_row = costs or DEFAULTS.get(device_type, DEFAULTS["cuda"])
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)

    def observe(self, rows: int, seconds: float) -> None:
        """Record a decode forward of ``rows`` rows that took ``seconds`` (launch to read-back)."""
        self.samples.append((rows, seconds))

    def fit(self) -> tuple[float, float] | None:
        """Least-squares (fixed, per-row) seconds of the recorded forwards; ``None`` until at least 8 with
        different row counts were seen. A slope below zero (noise on a weight-bound device) counts as 0."""
        n = len(self.samples)
        if n < 8:
            return None
        mx = sum(r for r, _ in self.samples) / n
        my = sum(s for _, s in self.samples) / n
        var = sum((r - mx) ** 2 for r, _ in self.samples)
        if var == 0:
            return None
        slope = max(0.0, sum((r - mx) * (s - my) for r, s in self.samples) / var)
        return my - slope * mx, slope

    def speculation_pays(self, p_open: float, sequences: int, rows: int) -> bool:
        """Whether ``rows`` trial rows folded into a forward of ``sequences`` advancing sequences cost less,
        in expectation, than the forward the sequence waits when the gate opens (chance ``p_open``)."""
        return p_open * self.fixed / max(sequences, 1) > (1.0 - p_open) * rows * self.per_row
