"""The policy interface: what the decoding loop asks of a method, and the plausibility filter.

The engine (``engine/continuous.py``) runs the raw pass, asks the method whether the step may skip
steering (the gate), evaluates the method's trials with the mechanisms (``engine/packed_attention.py``:
key scaling; ``engine/attention_bias.py``: attention-logit biases) and emits the first trial token the
method accepts, else the raw token. A method is a :class:`Method` subclass in a module of its own in
this package, registered with :func:`~directer.methods.registry.register_method`; its dataclass fields
are its ``NAME:KEY=VALUE`` parameters. The loop does not change.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..errors import UsageError
from ..results import Ranking
from .trial import Trial

if TYPE_CHECKING:  # policies only read tensors the loop hands them; importing torch here would slow the CLI
    import torch

__all__ = [
    "MODES",
    "FilteredMethod",
    "Method",
    "RawStep",
    "check_positive",
    "layer_set",
    "plausible",
    "prompt_key",
]

MODES = ("paper", "reference")


@dataclass
class RawStep:
    """The raw pass of one row at one step, as the policies need it."""

    step: int  # index of the token being generated (0 = first)
    logits: torch.Tensor  # [V], model dtype
    probs: torch.Tensor  # [V], float32 softmax of ``logits``
    top2: torch.Tensor | tuple[float, float]  # the two largest values of ``probs`` (read back: floats)
    # Under sampling: the raw pass's own draw, and the (warped) distribution it was drawn from, whose
    # support bounds what may be emitted. None under greedy decoding (the token is the argmax).
    choice: int | None = None
    support: torch.Tensor | None = None
    # What the engine already read back from the device in its one transfer per forward: the argmax,
    # and for the step's draw and the tokens its trials proposed, their raw probability and
    # log-probability and (under sampling) whether ``support`` keeps them. A policy asks through
    # :attr:`token`, :meth:`prob` and :meth:`in_support`, which read the device only for what is not here.
    argmax: int | None = None
    known: dict[int, tuple[float, float]] | None = None  # token -> (probability, log-probability)
    supported: dict[int, bool] | None = None  # token -> whether support[token] > 0

    @property
    def token(self) -> int:
        """The raw pass's token: its draw under sampling, its argmax under greedy decoding."""
        if self.choice is not None:
            return self.choice
        return self.argmax if self.argmax is not None else int(self.logits.argmax())

    def prob(self, token: int) -> float:
        """The raw model's float32 probability of ``token``."""
        if self.known is not None and token in self.known:
            return self.known[token][0]
        return float(self.probs[token])

    def in_support(self, token: int) -> bool:
        """Whether the user's sampling settings let the raw pass draw ``token`` (True under greedy)."""
        if self.support is None:
            return True
        if self.supported is not None and token in self.supported:
            return self.supported[token]
        return float(self.support[token]) > 0


def plausible(raw: RawStep, token: int, beta: float) -> bool:
    """Eq. 2: the raw model gives ``token`` at least beta times its top probability (float32), on the
    model's own distribution. Under sampling the token must also be one the user's sampling settings
    allow the raw model to draw (top-k, top-p, min-p keep it)."""
    if not raw.in_support(token):
        return False
    return raw.prob(token) >= beta * float(raw.top2[0])


class Method:
    """Base policy: never steers (plain greedy decoding through the same loop).

    A policy decides *when* to steer and *what to accept*; how a trial steers is the mechanism's
    business (``engine/packed_attention.py``: key scaling; ``engine/attention_bias.py``: attention-logit biases). Attributes:
    ``needs_ranking`` (the per-prompt layer ranking is computed before the first step), ``steers``,
    ``stream`` (the steered model runs as its own persistent stream with its own cache, as PASTA and
    InstABoost do, instead of one-step trials on the raw cache), ``bias_prefill`` (a stream's prompt is
    encoded steered too).
    """

    name = "none"
    needs_ranking = False
    steers = False
    stream = False
    bias_prefill = False

    def skip(self, raw: RawStep) -> bool:
        """The skip gate: True when no trial can change the emitted token, so none is run."""
        return True

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        """The trials of one step, strongest first (``seed_key`` identifies the prompt, for seeded variants)."""
        return []

    def accept(self, raw: RawStep, token: int) -> bool:
        """Whether the token of a steered trial may be emitted."""
        return False

    def rank_layers(self, pre: torch.Tensor, post: torch.Tensor, pre_s: torch.Tensor, post_s: torch.Tensor) -> Ranking:
        """The layer ranking from the states the engine recorded (see :mod:`directer.methods.sensitivity`);
        only a policy with ``needs_ranking`` is asked."""
        raise NotImplementedError(f"{self.name} does not rank layers")

    def trials_before_ranking(self, num_layers: int) -> list[Trial]:
        """The leading trials of :meth:`schedule` that do not depend on the ranking: the engine runs
        them beside the ranking probes, before the ranking is known."""
        return []

    def steering_positions(self, input_ids: Sequence[int], positions: Sequence[int], seed_key: int = 0) -> list[int]:
        """The prompt positions to steer, given the instruction's (ablations replace them)."""
        return list(positions)

    def check_model(self, num_layers: int, num_heads: int) -> None:
        """Refuse settings the model cannot take (layers, heads out of range)."""

    @property
    def trials_every_step(self) -> bool:
        """Whether every step runs trials (no gate): the engine then computes them beside the raw pass."""
        return False

    @property
    def raw_model(self) -> bool:
        """Whether the raw (unsteered) model runs: not for a stream method without the filter, whose
        steered logits stand in for the raw pass (no raw log-probabilities then)."""
        return True

    @property
    def uses_beta(self) -> bool:
        """Whether the plausibility check (Eq. 2, threshold ``beta``) decides what this policy emits."""
        return False


@dataclass
class FilteredMethod(Method):
    """A steering baseline with the optional plausibility filter (docs/method.md §7): with ``filter`` the
    steered token is emitted only if it passes Eq. 2 against the raw distribution, else the raw token."""

    filter: bool = False
    beta: float = 0.5

    steers = True

    def skip(self, raw: RawStep) -> bool:
        # With the filter the gate is exact (only the raw top-1 can pass); without it, always steer.
        return self.filter and float(raw.top2[1]) < self.beta * float(raw.top2[0])

    def accept(self, raw: RawStep, token: int) -> bool:
        return plausible(raw, token, self.beta) if self.filter else True

    @property
    def trials_every_step(self) -> bool:
        return not self.filter

    @property
    def raw_model(self) -> bool:
        return self.filter or not self.stream

    @property
    def uses_beta(self) -> bool:
        return self.filter


def layer_set(layers: Sequence[int] | None, num_layers: int) -> frozenset[int]:
    """The layers of ``--layers`` (None: all), checked against the model."""
    chosen = range(num_layers) if layers is None else layers
    bad = [layer for layer in chosen if not 0 <= layer < num_layers]
    if bad:
        raise UsageError(f"--layers {_ranges(bad)} out of range: the model has {num_layers} layers, "
                         f"0-{num_layers - 1}")
    return frozenset(chosen)


def _ranges(numbers: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 30, 31]`` as ``0-2,5,30-31``."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def check_positive(what: str, value: float | None, hint: str = "") -> None:
    """Refuse a strength that is not a finite number > 0 (None: the run's default, accepted)."""
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"invalid {what} {value}: it must be a finite number > 0{hint}")


def prompt_key(input_ids: Sequence[int]) -> int:
    """A stable per-prompt seed key (independent of batching and process)."""
    return zlib.crc32(",".join(map(str, input_ids)).encode())
