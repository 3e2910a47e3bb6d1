"""Attention-bias baselines (method.md §7): PASTA, SpotLight and InstABoost.

Each is a policy over the attention-bias mechanism (``attention_bias.py``). Unlike DIRECTER's one-step
trials, these methods steer the model as a whole: the steered model runs as its own stream with its
own KV cache (``stream``), so the keys and values of generated tokens (and, for PASTA and InstABoost,
of the prompt) are computed under steering, as in the original methods. With the plausibility filter
the raw model runs beside it as a second stream, batched into the same forward pass, and supplies
the raw distribution that Eq. 2 checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .attention_bias import AttentionBias
from .errors import UsageError
from .methods import FilteredMethod, check_positive, layer_set, register_method
from .ranking import Ranking
from .steering import Trial


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
