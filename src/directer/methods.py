"""Steering policies: when to steer, which layer sets to try, and what to accept.

The decoding loop (``decoding.py``) runs the raw pass, asks the method whether the step may skip
steering (the gate), evaluates the method's trial layer sets with the key-scaling mechanism
(``steering.py``) and emits the first trial token the method accepts, else the raw token. A new
method is a new :class:`Method` subclass; the loop does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UsageError
from .ranking import Ranking

MODES = ("paper", "reference")
METHODS = ("directer", "none", "static")

# The released code gives up after this many trials (method.md §6.6).
REFERENCE_MAX_TRIALS = 10
# Tolerance of the released code's skip gate (method.md §6.4).
REFERENCE_GATE_EPS = 1e-9


@dataclass
class RawStep:
    """The raw pass of one row at one step, as the policies need it."""

    step: int  # index of the token being generated (0 = first)
    logits: torch.Tensor  # [V], model dtype
    probs: torch.Tensor  # [V], float32 softmax of ``logits``
    top2: torch.Tensor  # the two largest values of ``probs``

    @property
    def token(self) -> int:
        return int(torch.argmax(self.logits))


class Method:
    """Base policy: never steers (plain greedy decoding through the same loop)."""

    name = "none"
    needs_ranking = False
    steers = False

    def skip(self, raw: RawStep) -> bool:
        """The skip gate: True when no trial can change the emitted token, so none is run."""
        return True

    def schedule(self, ranking: Ranking | None, num_layers: int) -> list[frozenset[int]]:
        """The trial layer sets of one step, strongest first."""
        return []

    def accept(self, raw: RawStep, token: int) -> bool:
        """Whether the token of a steered trial may be emitted."""
        return False


class NoSteering(Method):
    """``--method none``: the same loop with steering off."""


@dataclass
class Directer(Method):
    """DIRECTER (method.md §4): gate, halving schedule over the ranking, plausibility check (Eq. 2).

    ``mode="reference"`` reproduces the authors' released code (§6): no gate on the first step and a
    1e-9 tolerance later, strict acceptance with the softmax in the model's dtype, no single-layer trial
    and at most 10 trials.
    """

    beta: float = 0.5
    mode: str = "paper"
    gate: bool = True

    name = "directer"
    needs_ranking = True
    steers = True

    def skip(self, raw: RawStep) -> bool:
        if not self.gate:
            return False
        if self.mode == "reference":
            return raw.step > 0 and not _reference_steering_possible(raw.top2, self.beta)
        # Exact under greedy decoding: nothing but the raw top-1 can pass Eq. 2.
        return float(raw.top2[1]) < self.beta * float(raw.top2[0])

    def schedule(self, ranking: Ranking | None, num_layers: int) -> list[frozenset[int]]:
        assert ranking is not None, "DIRECTER needs a layer ranking"
        sizes = halving_sizes(num_layers)
        if self.mode == "reference":
            # Trial k (1-based) runs only if its set has more than one layer and k <= 10.
            sizes = [s for k, s in enumerate(sizes, start=1) if s > 1 and k <= REFERENCE_MAX_TRIALS]
        sets = [frozenset(range(num_layers))]  # the first trial steers every layer, whatever the ranking
        sets += [frozenset(ranking.top(s)) for s in sizes[1:]]
        return sets[: len(sizes)]

    def accept(self, raw: RawStep, token: int) -> bool:
        if self.mode == "reference":
            p = torch.softmax(raw.logits, dim=-1)  # model dtype, as released
            return float(p[token] - self.beta * p[int(torch.argmax(raw.logits))]) > 0
        return float(raw.probs[token]) >= self.beta * float(raw.top2[0])


@dataclass
class Static(Method):
    """``--method static``: key scaling on a fixed layer set at every step, no rejection.

    Like DIRECTER's trials, the steered pass only chooses the token; the cache keeps the raw keys and
    values of generated tokens, so static and DIRECTER differ only in the policy.
    """

    layers: tuple[int, ...] | None = None  # None: all layers

    name = "static"
    steers = True

    def skip(self, raw: RawStep) -> bool:
        return False

    def schedule(self, ranking: Ranking | None, num_layers: int) -> list[frozenset[int]]:
        layers = range(num_layers) if self.layers is None else self.layers
        bad = [layer for layer in layers if not 0 <= layer < num_layers]
        if bad:
            raise UsageError(f"--layers {bad} out of range: the model has layers 0..{num_layers - 1}")
        return [frozenset(layers)]

    def accept(self, raw: RawStep, token: int) -> bool:
        return True


def _reference_steering_possible(top2: torch.Tensor, beta: float, eps: float = REFERENCE_GATE_EPS) -> bool:
    """The released code's gate, evaluated in float32 tensor arithmetic as it is there (the 1e-9
    tolerance vanishes in float32, and a top-2 sum rounded above 1 counts as "no room": skip)."""
    x, y = top2[0], top2[1]
    ok = ((x + y) <= (1.0 + eps)) & (y <= (x + eps)) & (y >= (beta * x - eps))
    ok = ok & (x >= -eps) & (x <= 1.0 + eps) & (y >= -eps) & (y <= 1.0 + eps)
    return bool(ok)


def halving_sizes(num_layers: int) -> list[int]:
    """L, floor(L/2), floor(L/4), ..., 1: the layer-set sizes of the weakening schedule."""
    sizes, k = [], 0
    while True:
        s = max(1, num_layers // (2**k))
        if sizes and s == sizes[-1]:
            break
        sizes.append(s)
        if s == 1:
            break
        k += 1
    return sizes


def parse_layers(spec: str | None) -> tuple[int, ...] | None:
    """Parse ``--layers``: "all", "0-3,8,10-12" or None (all layers)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    layers: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                layers.extend(range(int(a), int(b) + 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise UsageError(f"invalid --layers {spec!r}: use 'all' or indices and ranges like '0-3,8,10-12'") from None
    if not layers:
        raise UsageError(f"invalid --layers {spec!r}: no layer given")
    return tuple(sorted(set(layers)))


def make_method(name: str, *, beta: float = 0.5, mode: str = "paper", gate: bool = True,
                layers: tuple[int, ...] | None = None) -> Method:
    """Build a policy by name (``directer``, ``none``, ``static``)."""
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if name == "directer":
        return Directer(beta=beta, mode=mode, gate=gate)
    if name == "none":
        return NoSteering()
    if name == "static":
        return Static(layers=layers)
    raise UsageError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
