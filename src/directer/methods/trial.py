"""What a policy asks of the mechanisms: a :class:`Trial` (which layers, how strongly) and, for the
attention-bias methods, an :class:`AttentionBias` (which keys, by how much).

These are plain descriptions: the engine's mechanisms carry them out (``engine/packed_attention.py`` scales
keys, ``engine/attention_bias.py`` biases attention logits), so policies never touch the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from ..errors import UsageError

__all__ = ["AttentionBias", "Trial"]


@dataclass(frozen=True)
class AttentionBias:
    """What a biased row adds to its attention logits.

    ``kind="add"``: ``log(factor)`` on the target keys of every query (PASTA: factor 0.01 on the prompt
    outside the instruction; InstABoost: factor m on the instruction). ``kind="spotlight"``: per head
    and query, when the attention share of the target keys is below ``factor`` (the target share),
    add ``log(target / share)`` to them and recompute. ``heads`` restricts the bias to some heads of
    some layers (a PASTA head profile: layer -> heads); ``None`` biases every head.
    """

    kind: str  # "add" | "spotlight"
    factor: float
    target: str = "span"  # "span": the instruction positions; "outside": the prompt outside the span
    heads: Mapping[int, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("add", "spotlight"):
            raise ValueError(f"unknown bias kind {self.kind!r}")
        if self.target not in ("span", "outside"):
            raise ValueError(f"unknown bias target {self.target!r}")
        if self.kind == "spotlight" and not 0 <= self.factor < 1:
            raise UsageError(f"invalid spotlight target share {self.factor}: it must be in [0, 1) (0: off)")
        if self.kind == "add" and not (math.isfinite(self.factor) and self.factor > 0):
            raise UsageError(f"invalid bias factor {self.factor}: it must be a finite number > 0 (1: off)")



@dataclass(frozen=True)
class Trial:
    """One steered variant of a decoding step, as a policy asks for it.

    Key scaling (DIRECTER, static) multiplies the steered positions' keys by ``alpha`` in ``layers``
    (1: not at all); an attention-bias method (PASTA, SpotLight, InstABoost) sets ``bias`` instead,
    applied in ``layers``. ``size`` is what the trace reports for an accepted trial.
    """

    layers: frozenset[int]
    alpha: float = 1.0
    bias: AttentionBias | None = None

    @property
    def size(self) -> int:
        return len(self.layers)

