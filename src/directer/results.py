"""Result records: what one generation produced and what the steering did, step by step."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


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
    ranking_seconds: float = 0.0
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
    alpha: float
    beta: float
    model: str
    ranking: list[int] | None  # layer order used, most sensitive first
    stats: Stats
    trace: list[TokenTrace]
    finish_reason: str = "length"  # "eos" or "length"
    prompt: str | None = None  # the rendered prompt text
    instructions: list[str] = field(default_factory=list)
    ranking_scores: list[float] | None = None
    # The raw (unsteered) model's log-probability of each generated token, from the decoding's own raw
    # passes; None for a method that runs no raw model (PASTA, SpotLight, InstABoost without the filter).
    raw_logprobs: list[float] | None = None

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
