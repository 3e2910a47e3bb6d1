"""The one seam between what a caller asks for and the engine.

:class:`Runner` turns a :class:`~directer.config.SteeringConfig` (with per-request overrides already
applied) into engine settings and requests, routes them (reference mode to the sequential
specification in :mod:`directer.engine.reference`, everything else to the continuous engine), reports
every token through one event, ``on_event(index, output_so_far, done)``, and turns engine outputs into
:class:`~directer.results.GenerationResult` records that state the settings the tokens were decoded
with. :class:`~directer.api.Directer`, the server's scheduler, ``custom_generate`` and the lm-eval
model all go through it.
"""

from __future__ import annotations

import warnings
from dataclasses import fields, is_dataclass, replace
from typing import Any, Callable, Sequence

import torch

from .config import SteeringConfig
from .engine.continuous import Engine, EngineOptions, output
from .engine.devices import input_device
from .engine.kv_budget import CacheBudget, cache_budget
from .engine.reference import ReferenceDecoder
from .engine.requests import DecodeOutput, DecodeRequest
from .engine.row_matmul import wanted
from .engine.sequence import SequenceSettings
from .text.spans import PreparedPrompt
from .errors import UsageError
from .methods.base import Method
from .results import GenerationResult

__all__ = ["FLOAT16_SAFE_ALPHA", "Runner", "TokenEvent", "method_parameters"]

# Above this alpha, float16 attention logits can overflow (docs/method.md §3).
FLOAT16_SAFE_ALPHA = 10.0

TokenEvent = Callable[[int, DecodeOutput, bool], None]  # (request index, its output so far, finished)


def method_parameters(method: Method) -> dict[str, Any]:
    """Every parameter of a policy as it decodes (its dataclass fields), for results and responses."""
    if not is_dataclass(method):
        return {}
    return {f.name: getattr(method, f.name) for f in fields(method)}


def unsteered(config: SteeringConfig) -> SteeringConfig:
    """``config`` decoding plainly: a prompt with nothing to steer."""
    return replace(config, method="none", layers=None, plausibility_filter=False)


def slots_per_request(method: Method) -> int:
    """Cache rows one request occupies: two for a filtered stream (a raw and a steered one), else one."""
    return 2 if method.stream and method.raw_model else 1


class Runner:
    """Settings, routing and results for one model. Without a tokenizer (``custom_generate``) the
    end-of-sequence and padding ids are given."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, model_name: str, *,
                 eos_token_ids: frozenset[int] | None = None, pad_token_id: int | None = None):
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self._eos, self._pad = eos_token_ids, pad_token_id
        # How the engine computes multi-row linears (engine/row_matmul.py): "auto" times both products
        # once per process; a run pins the resolved choice (resolve_matmul) so its processes agree.
        self.matmul = "auto"
        # The KV cache budget (engine/kv_budget.py): columns per sequence and/or a share of the memory
        # free after loading (None: 0.9 on a CUDA device, no limit elsewhere).
        self.cache_tokens: int | None = None
        self.cache_memory: float | None = None
        # A decode forward's (fixed, per-row) seconds behind speculate="auto" (engine/cost_model.py); None:
        # the device type's row of its table.
        self.forward_cost: tuple[float, float] | None = None
        # How top-p warps sampled rows (EngineOptions.nucleus; the tokens do not depend on it).
        self.nucleus = "auto"
        # Raw rows of very different lengths in two attention calls (EngineOptions.bands; same tokens).
        self.bands = True
        self._budgets: dict[int, CacheBudget] = {}

    # -- settings ---------------------------------------------------------------------------------

    def settings(self, config: SteeringConfig, top_logprobs: int = 0) -> SequenceSettings:
        """One request's engine settings (a sampled config must carry its seed: ``config.seeded()``).
        A float16 model is upcast here, before any decoding, when the request's key scale could
        overflow it, whatever requests came before."""
        method = config.policy()
        self.guard_float16(method)
        return SequenceSettings(method=method, max_new_tokens=config.max_new_tokens,
                                eos_token_ids=self.eos_token_ids(config), speculate=config.speculate,
                                sampling=config.sampling, top_logprobs=top_logprobs)

    def eos_token_ids(self, config: SteeringConfig) -> frozenset[int]:
        """Paper mode stops at every end-of-sequence id the model declares; reference mode at the
        tokenizer's only; ``ignore_eos`` at none."""
        if config.ignore_eos:
            return frozenset()
        if self._eos is not None:
            return self._eos
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        if config.mode != "reference":
            eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            if eos is not None:
                ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
        return frozenset(ids)

    def pad_id(self) -> int:
        if self._pad is not None:
            return self._pad
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        return int(pad) if pad is not None else 0

    @staticmethod
    def for_positions(positions: Sequence[int], config: SteeringConfig) -> SteeringConfig:
        """The config a request decodes with: ``config``, or plain decoding when it has nothing to steer."""
        return unsteered(config) if not positions and config.policy().steers else config

    def upcasts(self, method: Method) -> bool:
        """Whether decoding ``method`` makes :meth:`guard_float16` recast this float16 model."""
        alpha = getattr(method, "alpha", 1.0)
        return (self.model.dtype == torch.float16 and method.steers and not method.stream
                and alpha > FLOAT16_SAFE_ALPHA)

    def guard_float16(self, method: Method) -> None:
        """Upcast a float16 model (with a warning) before it scales keys by an alpha that could overflow it."""
        if not self.upcasts(method):
            return
        alpha = getattr(method, "alpha", 1.0)
        if getattr(self.model, "hf_device_map", None):  # accelerate placed it: not ours to recast in place
            raise UsageError(f"float16 with alpha={alpha:g} can overflow the steered attention logits, and a model "
                             "spread by a device map is not recast in place: load it with dtype bfloat16 or float32")
        device = input_device(self.model)
        safe = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        warnings.warn(f"float16 with alpha={alpha:g} can overflow the steered attention logits; "
                      f"running the model in {str(safe).replace('torch.', '')} instead", stacklevel=4)
        self.model.to(safe)

    # -- decoding ---------------------------------------------------------------------------------

    def engine(self, slots: int, admit_min: int | None = None, trial_batching: str | None = None) -> Engine:
        """A continuous engine on this model with ``slots`` cache rows."""
        trials = {"all": "all", "sequential": "first"}.get(trial_batching or "", "auto")
        return Engine(self.model, EngineOptions(slots=slots, pad_token_id=self.pad_id(), trials=trials,
                                                admit_min=admit_min, matmul=self.matmul, budget=self.budget(slots),
                                                cost=self.forward_cost, nucleus=self.nucleus, bands=self.bands))

    def budget(self, slots: int) -> CacheBudget:
        """The columns a cache of ``slots`` rows may hold, decided once per slot count (free memory is
        read before the first cache of that size exists, not while caches come and go)."""
        if slots not in self._budgets:
            memory = self.cache_memory
            if memory is None and input_device(self.model).type == "cuda":
                memory = 0.9
            self._budgets[slots] = cache_budget(self.model, slots, self.cache_tokens, memory)
        return self._budgets[slots]

    def check_budget(self, prompt_tokens: int, max_new_tokens: int, slots: int) -> None:
        """Refuse, in one line, a request that can never fit the KV cache budget."""
        refusal = self.budget(slots).refusal(prompt_tokens, max_new_tokens)
        if refusal:
            raise UsageError(refusal)

    def matmul_key(self) -> str:
        """What a matmul choice depends on: the model's device type and dtype."""
        return f"{input_device(self.model).type}/{str(next(self.model.parameters()).dtype).replace('torch.', '')}"

    def resolve_matmul(self) -> str:
        """The engine's multi-row product on this machine, decided now: "transposed" or "stock"."""
        if self.matmul != "auto":
            return self.matmul
        dtype = next(self.model.parameters()).dtype
        return "transposed" if wanted("auto", input_device(self.model), dtype, self.model) else "stock"

    def decode(self, requests: Sequence[DecodeRequest], config: SteeringConfig, *, batch_size: int,
               top_logprobs: int = 0, on_event: TokenEvent | None = None) -> list[DecodeOutput]:
        """Decode ``requests`` (``batch_size`` at once) under ``config``; outputs in request order. A request
        with nothing to steer (no positions: automatic spans found none) decodes plainly (``method="none"``)."""
        settings = self.settings(config, top_logprobs)
        steers = settings.method.steers and any(not r.positions for r in requests)
        plain = self.settings(unsteered(config), top_logprobs) if steers else settings
        per = [settings if r.positions else plain for r in requests]  # (Runner.for_positions, as settings)
        if config.mode == "reference":  # the released code's sequential decoding, one prompt at a time
            decoders = {id(s): ReferenceDecoder(self.model, s.method, max_new_tokens=config.max_new_tokens,
                                                eos_token_ids=s.eos_token_ids, top_logprobs=top_logprobs)
                        for s in per}
            outputs: list[DecodeOutput] = []
            for i, (r, s) in enumerate(zip(requests, per)):
                events = None if on_event is None else (lambda _j, out, done, i=i: on_event(i, out, done))
                outputs += decoders[id(s)].run([r], events)
            return outputs
        slots = max(1, min(batch_size, len(requests))) * slots_per_request(settings.method)
        engine = self.engine(slots, trial_batching=config.trial_batching)  # its run refuses, before any forward,
        # every request that cannot fit the KV budget

        def on_token(seq) -> None:
            if on_event is not None:
                on_event(seq.index, output(seq), seq.done)

        return engine.run(requests, per, on_token)

    # -- outputs ----------------------------------------------------------------------------------

    def result(self, prepared: PreparedPrompt, out: DecodeOutput, config: SteeringConfig) -> GenerationResult:
        """A finished request as a result record, with the settings its tokens were decoded with."""
        config = self.for_positions(prepared.positions, config)
        method = config.policy()
        if out.stats.evicted_layers:
            warnings.warn(f"instruction tokens left the sliding window of layer(s) {out.stats.evicted_layers} during "
                          "generation; those layers could no longer steer them", stacklevel=4)
        ranking = out.ranking
        return GenerationResult(
            text=self.tokenizer.decode(out.token_ids, skip_special_tokens=True),
            token_ids=out.token_ids,
            prompt_token_ids=list(prepared.input_ids),
            instruction_token_spans=[(s.start, s.end) for s in prepared.spans],
            method=config.method,
            mode=config.mode,
            alpha=getattr(method, "alpha", None),  # only what the method used: its parameters say the rest
            beta=getattr(method, "beta", None),
            parameters=method_parameters(method),
            model=self.model_name,
            ranking=ranking.order if ranking else None,
            ranking_scores=ranking.scores if ranking else None,
            stats=out.stats,
            trace=out.trace,
            finish_reason=out.finish_reason,
            raw_logprobs=out.raw_logprobs,
            top_logprobs=out.top_logprobs,
            sampling=None if config.temperature == 0 else {
                "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
                "min_p": config.min_p, "seed": config.seed},
            prompt=prepared.text,
            instructions=[s.text for s in prepared.spans],
            appended_instructions=list(prepared.appended),
            notes=list(prepared.notes),
        )
