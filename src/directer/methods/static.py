"""``--method static``: DIRECTER's key scaling on a fixed layer set at every step, no rejection."""

from __future__ import annotations

from dataclasses import dataclass

from ..results import Ranking
from .base import FilteredMethod, check_positive, layer_set
from .registry import register_method
from .trial import Trial

__all__ = ["Static"]


@register_method("static")
@dataclass
class Static(FilteredMethod):
    """``--method static``: key scaling on a fixed layer set at every step, no rejection.

    Like DIRECTER's trials, the steered pass only chooses the token; the cache keeps the raw keys and
    values of generated tokens, so static and DIRECTER differ only in the policy. ``alpha`` (the run's
    ``--alpha`` unless the spec sets it) is the strength.
    """

    layers: tuple[int, ...] | None = None  # None: all layers
    alpha: float = 100.0

    name = "static"

    def __post_init__(self) -> None:
        check_positive("static alpha", self.alpha)

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        return [Trial(layer_set(self.layers, num_layers), alpha=self.alpha)]
