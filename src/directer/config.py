"""Steering configuration with validation of user input."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

from .errors import UsageError
from .methods.sampling import SamplingParams, check_sampling, fresh_seed
from .methods import MODES, make_method

__all__ = ["SPECULATE", "TRIAL_BATCHING", "SteeringConfig"]

TRIAL_BATCHING = ("all", "sequential")
SPECULATE = ("auto", "always", "never")


@dataclass
class SteeringConfig:
    """Everything that decides what DIRECTER emits. Defaults follow the paper (docs/method.md §2).

    ``trial_batching``, ``probe_batch_size`` and ``speculate`` only change speed, never tokens beyond float
    rounding. ``speculate``: fold a sequence's trials into its raw row's forward ("always"), never, or where
    this device's measured forward costs say it pays ("auto", engine/cost_model.py). ``trial_batching``:
    ``None`` picks the fast choice in ``paper`` mode and the released code's one-at-a-time evaluation
    in ``reference`` mode, so that reference mode reproduces it token for token.
    """

    alpha: float = 100.0
    beta: float = 0.5
    mode: str = "paper"
    method: str = "directer"  # a name, or NAME:KEY=VALUE:... (see methods.make_method)
    layers: tuple[int, ...] | None = None  # static and the bias baselines; None: all layers
    plausibility_filter: bool = False  # baselines: emit a steered token only if Eq. 2 accepts it
    gate: bool = True
    max_new_tokens: int = 256
    trial_batching: str | None = None
    probe_batch_size: int | None = None
    speculate: str = "auto"
    ignore_eos: bool = False  # benchmarks: decode exactly max_new_tokens tokens, so methods cost the same work
    # Sampling (README, Fidelity: sampling). temperature 0 is greedy decoding, the paper's setting.
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    seed: int | None = None  # None: a fresh seed per call, recorded in each result

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise UsageError(f"invalid --alpha {_shown(self.alpha)}: it must be a finite number > 0 (the paper uses 100; 1 disables steering)")
        if not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) or self.beta < 0:
            raise UsageError(f"invalid --beta {_shown(self.beta)}: it must be a number >= 0 (the paper uses 0.5; above 1 nothing is accepted)")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        policy = self.policy()  # an unknown method or parameter fails here, before any work
        if policy.uses_beta:
            _warn_about_beta(policy.beta)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UsageError(f"invalid --max-new-tokens {self.max_new_tokens}: it must be an integer >= 1")
        if self.trial_batching is not None and self.trial_batching not in TRIAL_BATCHING:
            raise UsageError(f"unknown trial_batching {self.trial_batching!r}: choose one of {', '.join(TRIAL_BATCHING)}")
        if self.speculate not in SPECULATE:
            raise UsageError(f"unknown speculate {self.speculate!r}: choose one of {', '.join(SPECULATE)}")
        if self.probe_batch_size is not None and self.probe_batch_size < 1:
            raise UsageError(f"invalid probe_batch_size {self.probe_batch_size}: it must be >= 1")
        check_sampling(self.temperature, self.top_p, self.top_k, self.min_p, self.seed)
        if self.mode == "reference" and self.temperature > 0:
            raise UsageError(f"--mode reference reproduces the released code, which decodes greedily: --temperature "
                             f"{self.temperature:g} needs --mode paper (or --temperature 0)")

    def seeded(self) -> "SteeringConfig":
        """These settings with a fresh seed when they sample without one (results record the seed)."""
        return replace(self, seed=fresh_seed()) if self.temperature > 0 and self.seed is None else self

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k, self.min_p, self.seed)

    def policy(self):
        """The method object these settings describe."""
        return make_method(self.method, alpha=self.alpha, beta=self.beta, mode=self.mode, gate=self.gate, layers=self.layers,
                           plausibility_filter=self.plausibility_filter)

    @property
    def effective_trial_batching(self) -> str:
        if self.trial_batching is not None:
            return self.trial_batching
        return "sequential" if self.mode == "reference" else "all"

    @property
    def effective_probe_batch_size(self) -> int:
        if self.probe_batch_size is not None:
            return self.probe_batch_size
        return 1 if self.mode == "reference" else 64


def _shown(value: object) -> str:
    """A number as a user typed it (100, not 100.0); anything else as its repr."""
    return f"{value:g}" if isinstance(value, (int, float)) else repr(value)


def _warn_about_beta(beta: float) -> None:
    """Legal but degenerate thresholds: say once what they do (the warning registry shows each once)."""
    if beta > 1:
        warnings.warn(f"beta {beta:g} > 1: no steered token can reach beta times the raw top probability, so every "
                      "step emits the raw token (plain greedy decoding); the paper uses 0.5", stacklevel=1)
    elif beta == 0:
        warnings.warn("beta 0: the plausibility check accepts every steered token, so each step that tries a trial "
                      "emits the strongest trial's token (DIRECTER: all layers at every step, heavy over-steering); "
                      "the paper uses 0.5", stacklevel=1)
