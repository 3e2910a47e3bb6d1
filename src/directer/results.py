"""Result records: what one generation produced, what the steering did step by step, and the layer
ranking of a prompt (reusable as JSON). Plain data that every layer of the package may import."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import DirecterError, UsageError

__all__ = ["GenerationResult", "Ranking", "Stats", "TokenTrace"]


@dataclass
class TokenTrace:
    """What happened at one decoding step."""

    skipped: bool  # the gate emitted the raw token without trials
    trials: int  # steered trials the policy made (trials evaluated speculatively are not counted)
    layers: int | None  # size of the accepted layer set, None when the raw token was emitted


@dataclass
class Stats:
    steps: int = 0
    gate_skips: int = 0
    trials: int = 0
    accepted: dict[int, int] = field(default_factory=dict)  # accepted layer-set size -> count
    fallbacks: int = 0  # steps whose trials were all rejected: the raw token was emitted
    seconds: float = 0.0  # wall time of the prompt: prefill, ranking and decoding (model load excluded)
    ranking_seconds: float = 0.0  # the forward that ran the ranking probes (engine: the prompt's prefill)
    first_token_seconds: float = 0.0  # prefill + ranking + first step
    trial_rows: int = 0  # steered rows actually computed (speculative ones included): the cost of the trials
    evicted_layers: list[int] = field(default_factory=list)  # sliding layers that evicted instruction tokens

    def record(self, t: TokenTrace) -> None:
        self.steps += 1
        self.gate_skips += t.skipped
        self.trials += t.trials
        if t.layers is not None:
            self.accepted[t.layers] = self.accepted.get(t.layers, 0) + 1
        elif t.trials:
            self.fallbacks += 1


@dataclass
class GenerationResult:
    """One prompt's output. ``to_dict`` gives the ``--json`` record."""

    text: str
    token_ids: list[int]  # generated ids, an end-of-sequence id included if produced
    prompt_token_ids: list[int]
    instruction_token_spans: list[tuple[int, int]]  # [start, end) positions steered in the prompt
    method: str
    mode: str
    # The key scale the tokens were decoded with (the method's own, e.g. static:alpha=3); None for a
    # method that scales no keys (none, the attention-bias baselines: their parameters say what they used).
    alpha: float | None
    beta: float | None  # the plausibility threshold of the method (its own, e.g. directer:beta=0.3); None if it has none
    model: str
    ranking: list[int] | None  # layer order used, most sensitive first
    stats: Stats
    trace: list[TokenTrace]
    finish_reason: str = "length"  # "eos", "length" or "stop" (a stop condition of the caller)
    prompt: str | None = None  # the rendered prompt text
    instructions: list[str] = field(default_factory=list)
    ranking_scores: list[float] | None = None
    # The raw (unsteered) model's log-probability of each generated token, from the decoding's own raw
    # passes; None for a method that runs no raw model (PASTA, SpotLight, InstABoost without the filter).
    raw_logprobs: list[float] | None = None
    appended_instructions: list[str] = field(default_factory=list)  # not in the prompt: appended after it
    # Sampling settings of a sampled generation (temperature, top_p, top_k, min_p and the seed that
    # reproduces it); None for greedy decoding.
    sampling: dict[str, Any] | None = None
    # When asked for: per step, the raw model's most likely (token id, log-probability) pairs.
    top_logprobs: list[list[tuple[int, float]]] | None = None
    # Every parameter of the method as decoded (alpha, beta, layers, filter, ...).
    parameters: dict[str, Any] = field(default_factory=dict)
    # What the caller should know about this prompt, e.g. "no instruction found; nothing steered".
    notes: list[str] = field(default_factory=list)

    @property
    def perplexity(self) -> float | None:
        """Perplexity of the response under the raw model, given the prompt (None when not known or empty)."""
        if not self.raw_logprobs:
            return None
        return math.exp(-sum(self.raw_logprobs) / len(self.raw_logprobs))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["perplexity"] = self.perplexity
        d["instruction_token_spans"] = [list(s) for s in self.instruction_token_spans]
        d["stats"]["accepted"] = {str(k): v for k, v in sorted(self.stats.accepted.items(), reverse=True)}
        d["trace"] = [asdict(t) for t in self.trace]
        return d


@dataclass
class Ranking:
    """Layers ordered from most to least sensitive, with their scores."""

    order: list[int]
    scores: list[float]  # aligned with ``order``
    mode: str = "paper"
    model: str | None = None

    @property
    def num_layers(self) -> int:
        return len(self.order)

    def top(self, k: int) -> list[int]:
        return self.order[:k]

    def to_json(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, num_layers: int | None = None) -> "Ranking":
        """Read a ranking written by :meth:`save` (or ``--json`` output), checking it fits the model."""
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"ranking file not found: {p} (write one with `directer generate --json` or Ranking.save)")
        try:
            data = json.loads(p.read_text())
            if "ranking" in data and isinstance(data["ranking"], (dict, list)):  # a --json result
                data = data["ranking"] if isinstance(data["ranking"], dict) else {"order": data["ranking"]}
            order = [int(x) for x in data["order"]]
            scores = [float(x) for x in data.get("scores") or [0.0] * len(order)]
        except (ValueError, KeyError, TypeError) as exc:
            raise DirecterError(f"corrupt ranking file {p}: {exc} (expected JSON with an 'order' list of layer indices)") from None
        if sorted(order) != list(range(len(order))):
            raise DirecterError(f"corrupt ranking file {p}: 'order' must be a permutation of 0..L-1")
        if num_layers is not None and len(order) != num_layers:
            raise UsageError(
                f"ranking file {p} has {len(order)} layers but the model has {num_layers}: "
                "compute a ranking with this model"
            )
        return cls(order=order, scores=scores, mode=data.get("mode", "paper"), model=data.get("model"))
