"""Sampling settings: how a request's tokens are drawn (temperature 0: greedy, the paper's setting),
checked, and the random stream each request draws from. The draws themselves are the engine's
(:mod:`directer.engine.sampling`); what steering does with them is each method's ``skip`` and
``accept`` (README, Fidelity: sampling)."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from ..errors import UsageError

__all__ = ["SamplingParams", "check_sampling", "fresh_seed", "stream_key"]


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn. ``temperature=0`` is greedy decoding (the paper's setting)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p, self.top_k, self.min_p, self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_sampling(temperature: float, top_p: float, top_k: int, min_p: float, seed: int | None,
                   names: dict[str, str] | None = None) -> None:
    """Refuse settings no sampler can take, naming the option as the caller spells it (``names``)."""
    n = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
         **(names or {})}

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not number(temperature) or temperature < 0:
        raise UsageError(f"invalid {n['temperature']} {temperature!r}: it must be a number >= 0 (0: greedy decoding)")
    if not number(top_p) or not 0 < top_p <= 1:
        raise UsageError(f"invalid {n['top_p']} {top_p!r}: it must be a number in (0, 1] (1: off)")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise UsageError(f"invalid {n['top_k']} {top_k!r}: it must be an integer >= 0 (0: off)")
    if not number(min_p) or not 0 <= min_p <= 1:
        raise UsageError(f"invalid {n['min_p']} {min_p!r}: it must be a number in [0, 1] (0: off)")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UsageError(f"invalid {n['seed']} {seed!r}: it must be an integer")


def fresh_seed() -> int:
    """A seed for a sampled request that gave none (recorded in its result, so it can be replayed)."""
    return secrets.randbits(31)


def stream_key(seed: int, prompt_key: int, sample_index: int = 0) -> str:
    """The random stream of one request: its seed, its prompt and which of its samples it is (``n``)."""
    return f"{int(seed)}:{int(prompt_key)}:{int(sample_index)}"
