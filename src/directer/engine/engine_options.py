"""The continuous engine's options, and which methods and models it runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import base_implementation
from .kv_budget import CacheBudget

__all__ = ["NUCLEUS", "PROBE_PLACES", "TRIAL_POLICIES", "EngineOptions", "fits"]

TRIAL_POLICIES = ("auto", "all", "first")
NUCLEUS = ("auto", "sort", "candidates")
PROBE_PLACES = ("prefill", "decode")


def fits(model: torch.nn.Module) -> bool:
    """Whether the model's attention can carry packed forwards (eager or sdpa; flash kernels cannot)."""
    config = model.config.get_text_config(decoder=True)
    name = getattr(config, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    return base_implementation(name) in ("eager", "sdpa")


@dataclass
class EngineOptions:
    slots: int = 8  # sequences decoded at once
    pad_token_id: int = 0
    # Per opening: "all" remaining trials in the next forward, or "first" (strongest first, one per
    # forward). "auto" is "all": measured on CPU at batch 1, 16 and 32, a sequence waiting one more
    # forward costs more than the trial rows strongest-first saves (docs/speed.md).
    trials: str = "auto"
    admit_min: int | None = None  # admit prompts once this many slots are free (None: slots // 8, at least 1)
    max_prefill_tokens: int = 16384  # padded prompt tokens per prefill forward
    # Where the ranking probes and the leading (all-layer) trial run: as extra query positions of the
    # prompt's own prefill forward ("prefill"), or as rows of a later decode forward ("decode": beside
    # the all-layer trial when the first gate opens, else beside the second raw row).
    probes: str = "prefill"
    # Multi-row linears as W @ x.T ("auto": on a CPU in float32, where x @ W.T is far slower for a few
    # rows; engine/row_matmul.py) or as nn.Linear computes them ("stock").
    matmul: str = "auto"
    # Columns the slot cache may hold (engine/kv_budget.py); None: it grows as the sequences need.
    budget: CacheBudget | None = None
    # A decode forward's (fixed, per-row) seconds for speculate="auto" (engine/cost_model.py); None: the
    # device type's row of cost_model.DEFAULTS.
    cost: tuple[float, float] | None = None
    # How top-p warps a forward's sampled rows (engine/sampling.py): "sort" sorts every row in one batched
    # call (a GPU's few launches); "candidates" takes each row's best 512 tokens when they hold its
    # nucleus (a tenth of the CPU work, one device read per row); "auto": candidates on a CPU, else sort.
    # The tokens are the same either way.
    nucleus: str = "auto"
    # Raw rows whose lengths differ enough attend in two calls (engine/bands.py: the short rows over
    # every slot at their width, the long ones over their own slots), so a long request does not make
    # every slot read its columns. False: one call over every slot at the longest row's width.
    bands: bool = True

    def __post_init__(self) -> None:
        if self.trials not in TRIAL_POLICIES:
            raise ValueError(f"unknown trial policy {self.trials!r}: choose one of {', '.join(TRIAL_POLICIES)}")
        if self.probes not in PROBE_PLACES:
            raise ValueError(f"unknown probe placement {self.probes!r}: choose one of {', '.join(PROBE_PLACES)}")
        if self.nucleus not in NUCLEUS:
            raise ValueError(f"unknown top-p warping {self.nucleus!r}: choose one of {', '.join(NUCLEUS)}")
