"""Steering policies: when to steer, which trials to make, and what to accept.

The decoding loop (``decoding.py``) runs the raw pass, asks the method whether the step may skip
steering (the gate), evaluates the method's trials with the mechanisms (``steering.py``: key scaling;
``attention_bias.py``: attention-logit biases) and emits the first trial token the method accepts,
else the raw token. A new method is a new :class:`Method` subclass registered with
:func:`register_method` (``baselines.py`` holds PASTA, SpotLight and InstABoost); its dataclass fields
are its ``NAME:KEY=VALUE`` parameters. The loop does not change.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import torch

from .errors import UsageError
from .ranking import Ranking
from .steering import Trial

MODES = ("paper", "reference")

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


def plausible(raw: RawStep, token: int, beta: float) -> bool:
    """Eq. 2: the raw model gives ``token`` at least beta times its top probability (float32)."""
    return float(raw.probs[token]) >= beta * float(raw.top2[0])


class Method:
    """Base policy: never steers (plain greedy decoding through the same loop).

    A policy decides *when* to steer and *what to accept*; how a trial steers is the mechanism's
    business (``steering.py``: key scaling; ``attention_bias.py``: attention-logit biases). Attributes:
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

    def steering_positions(self, input_ids: Sequence[int], positions: Sequence[int], seed_key: int = 0) -> list[int]:
        """The prompt positions to steer, given the instruction's (ablations replace them)."""
        return list(positions)

    def check_model(self, num_layers: int, num_heads: int) -> None:
        """Refuse settings the model cannot take (layers, heads out of range)."""


METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a policy available as ``--method NAME`` (parameters: its dataclass fields)."""
    def deco(cls: type) -> type:
        METHODS[name] = cls
        return cls
    return deco


@register_method("none")
class NoSteering(Method):
    """``--method none``: the same loop with steering off."""


@dataclass
class FilteredMethod(Method):
    """A steering baseline with the optional plausibility filter (method.md §7): with ``filter`` the
    steered token is emitted only if it passes Eq. 2 against the raw distribution, else the raw token."""

    filter: bool = False
    beta: float = 0.5

    steers = True

    def skip(self, raw: RawStep) -> bool:
        # With the filter the gate is exact (only the raw top-1 can pass); without it, always steer.
        return self.filter and float(raw.top2[1]) < self.beta * float(raw.top2[0])

    def accept(self, raw: RawStep, token: int) -> bool:
        return plausible(raw, token, self.beta) if self.filter else True


@register_method("directer")
@dataclass
class Directer(Method):
    """DIRECTER (method.md §4): gate, halving schedule over the ranking, plausibility check (Eq. 2).

    ``mode="reference"`` reproduces the authors' released code (§6): no gate on the first step and a
    1e-9 tolerance later, strict acceptance with the softmax in the model's dtype, no single-layer trial
    and at most 10 trials. Ablations (method.md §8): ``ranking="reversed"`` or ``"random"`` (a seeded
    layer order per prompt instead of the sensitivity ranking) and ``positions="random"`` (as many
    seeded random prompt positions outside the instruction, instead of the instruction).
    """

    beta: float = 0.5
    mode: str = "paper"
    gate: bool = True
    ranking: str = "sensitivity"  # "sensitivity" | "reversed" | "random"
    positions: str = "instruction"  # "instruction" | "random"
    seed: int = 0

    name = "directer"
    steers = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.ranking not in ("sensitivity", "reversed", "random"):
            raise UsageError(f"unknown directer ranking {self.ranking!r}: choose sensitivity, reversed or random")
        if self.positions not in ("instruction", "random"):
            raise UsageError(f"unknown directer positions {self.positions!r}: choose instruction or random")

    @property
    def needs_ranking(self) -> bool:  # type: ignore[override]
        return self.ranking != "random"

    def skip(self, raw: RawStep) -> bool:
        if not self.gate:
            return False
        if self.mode == "reference":
            return raw.step > 0 and not _reference_steering_possible(raw.top2, self.beta)
        # Exact under greedy decoding: nothing but the raw top-1 can pass Eq. 2.
        return float(raw.top2[1]) < self.beta * float(raw.top2[0])

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        if self.ranking == "random":
            order = list(range(num_layers))
            random.Random(_mix(self.seed, seed_key)).shuffle(order)
        else:
            assert ranking is not None, "DIRECTER needs a layer ranking"
            order = list(ranking.order) if self.ranking == "sensitivity" else list(reversed(ranking.order))
        sizes = halving_sizes(num_layers)
        if self.mode == "reference":
            # Trial k (1-based) runs only if its set has more than one layer and k <= 10.
            sizes = [s for k, s in enumerate(sizes, start=1) if s > 1 and k <= REFERENCE_MAX_TRIALS]
        # The first trial steers every layer, whatever the order.
        sets = [frozenset(range(num_layers))] + [frozenset(order[:s]) for s in sizes[1:]]
        return [Trial(layers) for layers in sets[: len(sizes)]]

    def accept(self, raw: RawStep, token: int) -> bool:
        if self.mode == "reference":
            p = torch.softmax(raw.logits, dim=-1)  # model dtype, as released
            return float(p[token] - self.beta * p[int(torch.argmax(raw.logits))]) > 0
        return plausible(raw, token, self.beta)

    def steering_positions(self, input_ids: Sequence[int], positions: Sequence[int], seed_key: int = 0) -> list[int]:
        if self.positions == "instruction":
            return list(positions)
        # Cached prompt positions (the last prompt token is the first query) outside the instruction.
        taken = set(positions)
        pool = [i for i in range(len(input_ids) - 1) if i not in taken] or list(range(len(input_ids) - 1))
        rng = random.Random(_mix(self.seed, seed_key))
        return sorted(rng.sample(pool, min(len(taken), len(pool))))


@register_method("static")
@dataclass
class Static(FilteredMethod):
    """``--method static``: key scaling on a fixed layer set at every step, no rejection.

    Like DIRECTER's trials, the steered pass only chooses the token; the cache keeps the raw keys and
    values of generated tokens, so static and DIRECTER differ only in the policy. ``alpha`` (None: the
    run's alpha) sets the strength.
    """

    layers: tuple[int, ...] | None = None  # None: all layers
    alpha: float | None = None

    name = "static"

    def __post_init__(self) -> None:
        check_positive("static alpha", self.alpha)

    def schedule(self, ranking: Ranking | None, num_layers: int, seed_key: int = 0) -> list[Trial]:
        return [Trial(layer_set(self.layers, num_layers), alpha=self.alpha)]


def layer_set(layers: Sequence[int] | None, num_layers: int) -> frozenset[int]:
    """The layers of ``--layers`` (None: all), checked against the model."""
    chosen = range(num_layers) if layers is None else layers
    bad = [layer for layer in chosen if not 0 <= layer < num_layers]
    if bad:
        raise UsageError(f"--layers {bad} out of range: the model has layers 0..{num_layers - 1}")
    return frozenset(chosen)


def check_positive(what: str, value: float | None, hint: str = "") -> None:
    """Refuse a strength that is not a finite number > 0 (None: the run's default, accepted)."""
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"invalid {what} {value}: it must be a finite number > 0{hint}")


def _mix(seed: int, key: int) -> int:
    return (int(seed) * 1_000_003 + int(key)) & 0xFFFFFFFF


def prompt_key(input_ids: Sequence[int]) -> int:
    """A stable per-prompt seed key (independent of batching and process)."""
    return zlib.crc32(",".join(map(str, input_ids)).encode())


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


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME[:KEY=VALUE[:KEY=VALUE...]]`` into the name and its parameters."""
    name, *parts = spec.strip().split(":")
    params: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid method {spec!r}: parameters are KEY=VALUE, as in 'static:alpha=3:layers=0-7'")
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip().lower(), params


def method_label(spec: str, plausibility_filter: bool = False) -> str:
    """The name a method's results go under: the spec, with ``:filter=1`` when the run-wide
    ``--plausibility-filter`` applies to it (methods with a ``filter`` parameter that do not set it)."""
    name, params = parse_method(spec)
    method_names()
    cls = METHODS.get(name)
    takes_filter = cls is not None and "filter" in getattr(cls, "__dataclass_fields__", {})
    spec = spec.strip()
    if plausibility_filter and takes_filter and "filter" not in params:
        spec += ":filter=1"
    return spec


def method_names() -> list[str]:
    from . import baselines  # noqa: F401  (registers the baseline methods)

    return list(METHODS)


def make_method(spec: str, *, beta: float = 0.5, mode: str = "paper", gate: bool = True,
                layers: tuple[int, ...] | None = None, plausibility_filter: bool = False) -> Method:
    """Build a policy from ``--method``: a name (``directer``, ``none``, ``static``, ``pasta``, ...) and
    optional parameters, ``NAME:KEY=VALUE:...``. The keyword arguments are the run-wide defaults
    (``--beta``, ``--mode``, ``--layers``, ``--plausibility-filter``); the spec's parameters win."""
    names = method_names()
    name, params = parse_method(spec)
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}: choose one of {', '.join(names)}")
    cls = METHODS[name]
    known = {f.name: f for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") else {}
    defaults = {"beta": beta, "mode": mode, "gate": gate, "layers": layers, "filter": plausibility_filter}
    kwargs: dict[str, Any] = {k: v for k, v in defaults.items() if k in known}
    for key, text in params.items():
        if key not in known:
            options = ", ".join(sorted(known)) or "none"
            raise UsageError(f"method {name} has no parameter {key!r} (its parameters: {options})")
        kwargs[key] = _convert(name, key, str(known[key].type), text)
    return cls(**kwargs)


def _convert(method: str, key: str, kind: str, text: str) -> Any:
    try:
        if "tuple[int" in kind:
            return parse_layers(text)
        if kind.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on", ""):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("int"):
            return int(text)
    except (ValueError, UsageError):
        raise UsageError(f"invalid value {text!r} for {method} parameter {key} (expected {kind})") from None
    return text
