"""Progress on stderr: a tqdm bar on a terminal, one plain line per step in a log or a pipe.

In a log, tqdm's carriage-return redraws pile up on one line and its closing redraw repeats the last
state; a line per finished batch reads better there and is printed once.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(total: int, *, desc: str | None = None, initial: int = 0, position: int | None = None,
                 enabled: bool = True, unit: str = "prompt") -> Any:
    """An object with ``update(n)`` and ``close()`` (None when not ``enabled``)."""
    if not enabled:
        return None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                    position=position)
    return _Lines(total, desc, initial, unit)


class _Lines:
    def __init__(self, total: int, desc: str | None, initial: int, unit: str):
        self.total, self.n, self.unit, self.desc = total, initial, unit, desc
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        elapsed = f"{time.perf_counter() - self.start:.0f} s"
        what = f"{self.desc}, {elapsed}" if self.desc else elapsed
        print(f"directer: {self.n}/{self.total} {self.unit}s done ({what})", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
