"""PASTA (Zhang et al., 2024; docs/method.md §7): down-weight the attention to the prompt outside the
instruction, in all heads (untuned) or the heads of a profile from ``directer profile-heads``.

Like every attention-bias baseline, it steers the model as a whole: the steered model runs as its
own stream with its own KV cache (``stream``), so the keys and values of generated tokens are computed
under steering, as in the original method. With the plausibility filter the raw model runs beside it
as a second stream in the same forward pass and supplies the distribution that Eq. 2 checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..results import Ranking
from .base import FilteredMethod, check_positive, layer_set
from .registry import register_method
from .trial import AttentionBias, Trial

__all__ = ["Pasta", "load_head_profile"]


@register_method("pasta")
@dataclass
class Pasta(FilteredMethod):
    """PASTA (Zhang et al., 2024): ``log(alpha_p)`` on the attention logits of the prompt positions
    outside the instruction, for every query (prompt encoding included), in the heads of a profile.

    Without ``profile`` (a JSON file from ``directer profile-heads``) every head of ``layers`` (default:
    all) is steered: the untuned variant, labelled so in results.
    """

    alpha_p: float = 0.01
    layers: tuple[int, ...] | None = None
    profile: str | None = None

    name = "pasta"
    stream = True
    bias_prefill = True

    def __post_init__(self) -> None:
        check_positive("pasta alpha_p", self.alpha_p, " (PASTA uses 0.01)")
        self._heads = load_head_profile(self.profile) if self.profile else None

    def check_model(self, num_layers: int, num_heads: int) -> None:
        for layer, heads in (self._heads or {}).items():
            bad = [h for h in heads if not 0 <= h < num_heads]
            if not 0 <= layer < num_layers or bad:
                raise UsageError(f"head profile {self.profile} does not fit this model ({num_layers} layers x "
                                 f"{num_heads} heads): layer {layer}, heads {list(heads)}")

    @property
    def untuned(self) -> bool:
        return self._heads is None

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        if self._heads is not None:
            layers = layer_set(sorted(self._heads), num_layers)
        else:
            layers = layer_set(self.layers, num_layers)
        bias = AttentionBias("add", self.alpha_p, target="outside", heads=self._heads)
        return [Trial(layers, bias=bias)]


def load_head_profile(path: str | Path) -> dict[int, tuple[int, ...]]:
    """Read a PASTA head profile (``{"heads": [[layer, head], ...], ...}``) as layer -> heads."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        pairs = [(int(layer), int(head)) for layer, head in data["heads"]]
    except FileNotFoundError:
        raise UsageError(f"head profile {p} not found: create it with 'directer profile-heads'") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"corrupt head profile {p} ({exc}): recreate it with 'directer profile-heads'") from None
    if not pairs:
        raise UsageError(f"head profile {p} lists no heads")
    heads: dict[int, list[int]] = {}
    for layer, head in pairs:
        heads.setdefault(layer, []).append(head)
    return {layer: tuple(sorted(set(hs))) for layer, hs in sorted(heads.items())}
