"""InstABoost (Guardieiro et al., 2025; docs/method.md §7): up-weight the attention to the instruction, in
every layer and head, prompt encoding included.

Like every attention-bias baseline, it steers the model as a whole: the steered model runs as its
own stream with its own KV cache (``stream``), so the keys and values of generated tokens are computed
under steering, as in the original method. With the plausibility filter the raw model runs beside it
as a second stream in the same forward pass and supplies the distribution that Eq. 2 checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..results import Ranking
from .base import FilteredMethod, check_positive, layer_set
from .registry import register_method
from .trial import AttentionBias, Trial

__all__ = ["InstaBoost"]


@register_method("instaboost")
@dataclass
class InstaBoost(FilteredMethod):
    """InstABoost (Guardieiro et al., 2025): ``log(m)`` on the instruction positions' attention logits in
    all layers and heads, for every query (prompt encoding included). ``m`` has no canonical value
    (the authors tune it per task); 5 is our default."""

    m: float = 5.0
    layers: tuple[int, ...] | None = None

    name = "instaboost"
    stream = True
    bias_prefill = True

    def __post_init__(self) -> None:
        check_positive("instaboost m", self.m)

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        return [Trial(layer_set(self.layers, num_layers), bias=AttentionBias("add", self.m, target="span"))]
