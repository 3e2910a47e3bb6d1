"""How much a forward costs by its number of rows, learnt from the engine's own forwards.

A decode forward costs about ``fixed + per_row * rows``: the fixed part is reading every weight once
(on a CPU ~120 ms for the bundled model, the bulk of a small forward), the per-row part the
arithmetic (~8 ms a row on 2 cores; on a GPU nearly nothing until the device is compute-bound). The
engine fits both by least squares over its recent forwards, starting from a per-device default, and
asks :meth:`CostModel.rows_for_free` how many rows a forward can take before extra rows cost more than
the forward a sequence would otherwise wait for.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CostModel", "DEFAULTS"]

# (fixed seconds, seconds per row) before any forward was timed: measured on the bundled model in
# float32 (CPU: docs/speed.md's forward-cost table) and assumed for a GPU (rows nearly free).
DEFAULTS = {"cpu": (0.120, 0.008), "cuda": (0.015, 0.0002)}


class CostModel:
    def __init__(self, device_type: str, window: int = 64):
        self.fixed, self.per_row = DEFAULTS.get(device_type, DEFAULTS["cuda"])
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)

    def observe(self, rows: int, seconds: float) -> None:
        self.samples.append((rows, seconds))
        if len(self.samples) < 8:
            return
        n = len(self.samples)
        mx = sum(r for r, _ in self.samples) / n
        my = sum(s for _, s in self.samples) / n
        var = sum((r - mx) ** 2 for r, _ in self.samples)
        if var < 1.0:  # every forward had about the same rows: the slope is unknown, keep the prior
            return
        slope = sum((r - mx) * (s - my) for r, s in self.samples) / var
        if slope > 0 and my - slope * mx > 0:
            self.per_row, self.fixed = slope, my - slope * mx

    def rows_for_free(self) -> float:
        """Rows that together cost one forward's fixed part: below this a forward is weight-bound."""
        return self.fixed / max(self.per_row, 1e-9)
