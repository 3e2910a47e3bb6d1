"""What the engine (and reference mode) is asked for and gives back, per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..results import Ranking, Stats, TokenTrace

__all__ = ["DecodeOutput", "DecodeRequest"]


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
class DecodeOutput:
    token_ids: list[int]
    trace: list[TokenTrace]
    stats: Stats
    ranking: Ranking | None
    finish_reason: str
    raw_logprobs: list[float] | None = None  # the raw model's log-probability of each emitted token
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per step: the raw model's most likely tokens
