"""What a decoding run is asked for and what it gives back (both loops share them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..results import Ranking, Stats, TokenTrace
from ..methods.sampling import SamplingParams

__all__ = ["DecodeOptions", "DecodeOutput", "DecodeRequest"]


@dataclass
class DecodeRequest:
    """One prompt for the loop: token ids and the prompt positions to steer."""

    input_ids: list[int]
    positions: list[int]  # token indices in ``input_ids`` whose keys are steered
    ranking: Ranking | None = None  # reuse this ranking instead of computing one
    max_new_tokens: int | None = None  # this prompt's limit (default: the options')
    sample_index: int = 0  # which sample of this prompt it is (its random stream; the server's n)
    stop: Callable[[list[int]], bool] | None = None  # True when the tokens so far end the response


@dataclass
class DecodeOptions:
    alpha: float = 100.0
    max_new_tokens: int = 256
    eos_token_ids: frozenset[int] = frozenset()
    pad_token_id: int = 0
    mode: str = "paper"  # ranking variant
    trial_batching: str = "all"  # "all": every trial of a step in one forward; "sequential": one per forward
    probe_batch_size: int = 64  # ranking probes per forward (1: one layer at a time, as released)
    speculate: str = "never"  # "auto" | "always" | "never": run trials within the raw pass before the gate
    model_name: str | None = None
    sampling: SamplingParams = SamplingParams()  # greedy unless its temperature is > 0
    top_logprobs: int = 0  # record this many of the raw model's most likely tokens per step


@dataclass
class DecodeOutput:
    token_ids: list[int]
    trace: list[TokenTrace]
    stats: Stats
    ranking: Ranking | None
    finish_reason: str
    raw_logprobs: list[float] | None = None  # the raw model's log-probability of each emitted token
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per step: the raw model's most likely tokens
