"""One sequence of the continuous engine, as a small state machine.

``waiting`` (queued) -> ``prefill`` (its prompt is encoded; the pass gives the raw distribution of
step 0 and, when a ranking is needed, the raw attention states the ranking compares against) ->
``raw`` (its next forward carries its raw row) or ``trials`` (the gate opened at the current step:
its next forward carries trial rows instead, read against its slot as it was before the step's raw
token) -> ... -> ``done``. By default the ranking probes and the all-layer trial run in the prefill
itself; with ``probes="decode"`` they ride along in the first forward after it when the first step's
gate opened, else in the forward of the second raw row, and a sequence whose tokens end before that
spends one more forward in ``ranking``. A token's cache column is its position in its slot
(:class:`~directer.engine.slot_cache.SlotCache`), so the steered prompt positions are the columns the
trials scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..methods.base import Method, RawStep
from ..methods.trial import Trial
from ..results import Ranking, Stats, TokenTrace
from .readback import TrialRead
from .requests import DecodeOutput
from ..methods.sampling import SamplingParams
from .sampling import Draw, Sampler

__all__ = ["Sequence", "SequenceSettings", "draw_of", "output", "skipped_trace", "trial_tokens"]


@dataclass
class SequenceSettings:
    """What one request asks for; requests with different settings share forwards."""

    method: Method  # the policy, holding every steering parameter (alpha, beta, layers, ...)
    max_new_tokens: int = 256
    eos_token_ids: frozenset[int] = frozenset()
    speculate: str = "auto"  # "auto" | "always" | "never": run known trials within the raw row's forward
    sampling: SamplingParams = SamplingParams()  # greedy unless its temperature is > 0
    top_logprobs: int = 0  # record this many of the raw model's most likely tokens per step


@dataclass
class Sequence:
    index: int  # submission order
    input_ids: list[int]
    positions: list[int]  # steered prompt positions (after the method's choice)
    settings: SequenceSettings
    ranking: Ranking | None
    seed_key: int
    on_token: Callable[["Sequence"], None] | None = None
    sampler: Sampler | None = None  # None: greedy
    stop: Callable[[list[int]], bool] | None = None  # True when the tokens so far end the response
    state: str = "waiting"
    slot: int | None = None  # the slot whose logits are the raw distribution (a stream's without the filter)
    steered_slot: int | None = None  # a filtered stream's steered slot (both advance with the emitted token)
    schedule: list[Trial] | None = None
    leading: list[Trial] = field(default_factory=list)  # trials known before the ranking
    raw_states: tuple[torch.Tensor, torch.Tensor] | None = None  # ranking: raw attention in/out at the last prompt token
    probes_issued: bool = False
    # the current step: its raw pass, input and position (its column); the trials computed so far
    raw: RawStep | None = None
    raw_lse: torch.Tensor | None = None  # logsumexp of the step's raw logits (float32)
    step_top: list[tuple[int, float]] | None = None  # the step's most likely raw tokens (top_logprobs)
    step_input: int = 0
    step_pos: int = 0
    trial_tokens: dict[int, int] = field(default_factory=dict)
    issued: set[int] = field(default_factory=set)
    next_k: int = 0
    tokens: list[int] = field(default_factory=list)
    trace: list[TokenTrace] = field(default_factory=list)
    # How the gate went after a shut step and after an open one: [opened, steps] each (open_chance)
    after_shut: list[int] = field(default_factory=lambda: [0, 0])
    after_open: list[int] = field(default_factory=lambda: [0, 0])
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    finish_reason: str = "length"
    cancelled: bool = False
    admitted_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def streamed(self) -> bool:
        """Whether the steered model runs as its own stream (the attention-bias baselines): its trial is
        the next row of its biased slot, computed in the same forward as the raw row."""
        return self.settings.method.stream

    def stream_rows(self) -> list[bool]:
        """Whether each of the sequence's slots is biased: one unbiased slot (raw model, key-scaling trials),
        one biased slot (a stream without the filter), or a raw and a biased slot (with it)."""
        if not self.streamed:
            return [False]
        return [False, True] if self.settings.method.raw_model else [True]

    @property
    def slots(self) -> list[int]:
        return [s for s in (self.slot, self.steered_slot) if s is not None]

    @property
    def needs_probes(self) -> bool:
        return self.settings.method.needs_ranking and self.ranking is None and not self.probes_issued

    def evicted(self, windows: dict[int, int | None]) -> list[int]:
        """Sliding layers whose window no longer holds every steered position (as a sliding cache would)."""
        if not self.positions:
            return []
        last = self.step_pos - 1  # the last position the sequence's forwards read from
        return [layer for layer, w in sorted(windows.items()) if w and min(self.positions) <= last - w + 1]

    def trials(self) -> list[Trial]:
        """The trials the step can be decided on so far (the leading ones until the ranking is known)."""
        return self.schedule if self.schedule is not None else self.leading

    def to_do(self) -> list[int]:
        """Trials of the current step still to compute, in schedule order."""
        return [k for k in range(self.next_k, len(self.trials())) if k not in self.trial_tokens and k not in self.issued]

    def open_step(self, raw: RawStep, step_input: int, step_pos: int, lse: torch.Tensor,
                  top: list[tuple[int, float]] | None = None) -> None:
        self.raw, self.step_input, self.step_pos = raw, step_input, step_pos
        self.raw_lse, self.step_top = lse, top
        self.trial_tokens, self.issued, self.next_k = {}, set(), 0

    def learn(self, known: dict[int, tuple[int, TrialRead | None]] | None) -> None:
        """Record trial tokens of the open step (trial k -> token), and what was read back for them (the
        raw probabilities and, under sampling, the support flag: the plausibility test needs no read)."""
        for k, (token, read) in (known or {}).items():
            self.trial_tokens[k] = token
            if read is not None:
                self.raw.known[token] = (read.prob, read.logprob)
                if read.supported is not None:
                    if self.raw.supported is None:
                        self.raw.supported = {}
                    self.raw.supported[token] = read.supported

    def decide(self) -> tuple[int, TokenTrace] | None:
        """The step's token once it is known: the first accepted trial in schedule order, the raw token
        when every trial is rejected, None while trials are missing (or the ranking is)."""
        method, raw, trials = self.settings.method, self.raw, self.trials()
        k = self.next_k
        while k < len(trials) and k in self.trial_tokens:
            token = self.trial_tokens[k]
            if method.accept(raw, token):
                return token, TokenTrace(skipped=False, trials=k + 1, layers=trials[k].size)
            k += 1
        self.next_k = k
        if self.schedule is not None and k >= len(trials):
            return raw.token, TokenTrace(skipped=False, trials=len(trials), layers=None)
        return None

    def open_chance(self) -> float:
        """The chance the gate opens at this step, from this sequence's own record after a step like its
        last one (openings come in runs), with one opening and one shut step assumed beforehand."""
        if not self.trace:
            return 0.5
        opened, steps = self.after_shut if self.trace[-1].skipped else self.after_open
        return (opened + 1) / (steps + 2)

    def add_trace(self, trace: TokenTrace) -> None:
        """Append a step's trace, counting how the gate went after the step before (open_chance)."""
        if self.trace:
            counts = self.after_shut if self.trace[-1].skipped else self.after_open
            counts[0] += not trace.skipped
            counts[1] += 1
        self.trace.append(trace)

    def emit(self, token: int, trace: TokenTrace) -> bool:
        """Append the step's token; return True when the sequence is finished."""
        now = time.perf_counter()
        # The raw model's log-probability of the emitted token (logsumexp: no underflow to -inf), read
        # back with the forward when the engine knew the token then.
        known = self.raw.known.get(token) if self.raw.known else None
        self.logprobs.append(known[1] if known else float(self.raw.logits[token].float() - self.raw_lse))
        if self.settings.top_logprobs:  # read back with the forward that opened the step
            self.top_logprobs.append(self.step_top[:self.settings.top_logprobs])
        self.tokens.append(token)
        self.add_trace(trace)
        self.stats.record(trace)
        if len(self.tokens) == 1:
            self.stats.first_token_seconds = now - self.admitted_at
        if token in self.settings.eos_token_ids:
            self.finish_reason = "eos"
        elif self.stop is not None and self.stop(self.tokens):
            self.finish_reason = "stop"
        finished = self.finish_reason in ("eos", "stop") or len(self.tokens) >= self.settings.max_new_tokens
        self.raw = None
        self.state = "done" if finished else "raw"
        self.step_input, self.step_pos = token, self.step_pos + 1
        if finished:
            self.stats.seconds = now - self.admitted_at
        return finished


def skipped_trace(steers: bool) -> TokenTrace:
    return TokenTrace(skipped=steers, trials=0, layers=None)


def output(seq: Sequence) -> DecodeOutput:
    """A finished sequence as the loop's output record."""
    raw = seq.settings.method.raw_model  # without a raw model the log-probabilities would be the steered ones
    return DecodeOutput(seq.tokens, seq.trace, seq.stats, seq.ranking, seq.finish_reason,
                        seq.logprobs if raw else None, seq.top_logprobs if raw and seq.settings.top_logprobs else None)


def trial_tokens(rows: list[tuple[Sequence, int]], reads: list[TrialRead]
                 ) -> dict[int, dict[int, tuple[int, TrialRead | None]]]:
    """id(sequence) -> trial k -> its token (the argmax, or under sampling draw k + 1 of its step) and
    what was read back with it."""
    found: dict[int, dict[int, tuple[int, TrialRead | None]]] = {}
    for (s, k), t in zip(rows, reads):
        found.setdefault(id(s), {})[k] = (t.token, t)
    return found


def draw_of(seq: Sequence, k: int) -> Draw | None:
    """The draw behind row ``k`` of the sequence's current step (0: its raw row, k + 1: trial k's row);
    None under greedy decoding."""
    if seq.sampler is None:
        return None
    return Draw(seq.sampler, seq.sampler.uniform(len(seq.tokens), k))
