"""SpotLight (Venkateswaran & Contractor, 2025; docs/method.md §7): lift the instruction's attention share to
a target, per layer, head and generated token, where it falls short.

Like every attention-bias baseline, it steers the model as a whole: the steered model runs as its
own stream with its own KV cache (``stream``), so the keys and values of generated tokens are computed
under steering, as in the original method. With the plausibility filter the raw model runs beside it
as a second stream in the same forward pass and supplies the distribution that Eq. 2 checks. SpotLight encodes the prompt unsteered: its rule is
per generated token.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..results import Ranking
from .base import FilteredMethod, layer_set
from .registry import register_method
from .trial import AttentionBias, Trial

__all__ = ["SpotLight"]


@register_method("spotlight")
@dataclass
class SpotLight(FilteredMethod):
    """SpotLight (Venkateswaran & Contractor, 2025): per layer and generated token, where the attention
    share of the instruction is below ``target``, add ``log(target / share)`` to the instruction's logits
    and recompute the attention output (per head). The prompt is encoded unsteered."""

    target: float = 0.2
    layers: tuple[int, ...] | None = None

    name = "spotlight"
    stream = True
    bias_prefill = False

    def __post_init__(self) -> None:
        if not 0 <= self.target < 1:
            raise UsageError(f"invalid spotlight target {self.target}: it must be a share in [0, 1) (default 0.2, 0: off)")

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        return [Trial(layer_set(self.layers, num_layers), bias=AttentionBias("spotlight", self.target))]
