"""Reference mode as an executable specification: the authors' released decoding, one prompt at a time.

This is the sequential form of DIRECTER that the released code runs (docs/method.md §6):
the prompt without its last token is encoded into a :class:`~transformers.DynamicCache`; every step
feeds one token, first raw, then (when the policy's gate opens) one steered trial per forward, each
reading the cache through a view that multiplies the instruction keys by alpha in the trial's layers
and never writes the cache; the ranking probes run one layer per forward on the first step. Only the
raw pass's keys and values are kept. Nothing else runs here: the engine (:mod:`directer.engine.continuous`)
decodes every other request, and the tests use this module as the oracle the engine is compared with.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Sequence

import torch
from transformers.cache_utils import Cache, DynamicCache

from ..methods.base import Method, RawStep, prompt_key
from ..models.loading import attention_modules
from ..results import Stats, TokenTrace
from .devices import input_device
from .requests import DecodeOutput, DecodeRequest
from .ranking import AttentionRecorder
from .sliding_window import column_offset, evicted_layers

__all__ = ["ReferenceDecoder"]


class _ScaledView(Cache):
    """One forward's view of the persistent cache: the steered columns' keys times ``alpha`` in
    ``layers``; the new keys and values are held until :meth:`commit` (the raw pass) or dropped."""

    def __init__(self, base: DynamicCache, layers: frozenset[int] = frozenset(), columns: Sequence[int] = (),
                 alpha: float = 1.0):
        super().__init__(layers=base.layers)  # sequence length, mask sizes, sliding flags: the base's
        self.base, self.steered, self.alpha = base, layers, alpha
        self.columns = torch.tensor(list(columns), dtype=torch.long)
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.base.layers[layer_idx]
        past = layer.keys.shape[-2]
        keys = torch.cat([layer.keys, key_states], dim=-2)
        values = torch.cat([layer.values, value_states], dim=-2)
        if layer_idx in self.steered and self.alpha != 1.0 and self.columns.numel():
            cols = self.columns.to(keys.device) - column_offset(layer)
            cols = cols[(cols >= 0) & (cols < past)]  # evicted from a sliding window: not scaled
            keys[:, :, cols, :] = keys[:, :, cols, :] * self.alpha
        self.pending[layer_idx] = (key_states, value_states)
        return keys, values

    def commit(self) -> None:
        for layer_idx, (k, v) in sorted(self.pending.items()):
            self.base.layers[layer_idx].update(k, v)
        self.pending.clear()


class ReferenceDecoder:
    """Decode requests one at a time, as the released code does (greedy, key-scaling policies)."""

    def __init__(self, model: torch.nn.Module, method: Method, *, max_new_tokens: int,
                 eos_token_ids: frozenset[int], top_logprobs: int = 0):
        if method.stream:
            raise ValueError(f"reference mode runs key-scaling policies only, not {method.name}")
        self.model, self.method = model, method
        self.max_new_tokens, self.eos, self.top = max_new_tokens, eos_token_ids, top_logprobs
        self.num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        method.check_model(self.num_layers, model.config.get_text_config(decoder=True).num_attention_heads)
        # transformers 5.x renamed `past_key_values` to `cache`.
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.recorder = AttentionRecorder(attention_modules(model))

    @torch.inference_mode()
    def run(self, requests: Sequence[DecodeRequest],
            on_token: Callable[[int, DecodeOutput, bool], None] | None = None) -> list[DecodeOutput]:
        """Decode each request to the end; ``on_token(index, output so far, done)`` after every token."""
        return [self._one(i, r, on_token) for i, r in enumerate(requests)]

    def _forward(self, cache: DynamicCache, token: int, position: int, view: _ScaledView,
                 body_only: bool = False) -> torch.Tensor | None:
        device = input_device(self.model)
        out = (self.model.get_decoder() if body_only else self.model)(
            input_ids=torch.tensor([[token]], device=device), position_ids=torch.tensor([[position]], device=device),
            use_cache=True, **{self._cache_kw: view})
        return None if body_only else out.logits[0, -1]

    def _one(self, index: int, request: DecodeRequest, on_token) -> DecodeOutput:
        t0 = time.perf_counter()
        method, ids = self.method, list(request.input_ids)
        key = prompt_key(ids)
        columns = sorted(set(method.steering_positions(ids, request.positions, key)))
        limit = request.max_new_tokens or self.max_new_tokens
        device = input_device(self.model)
        cache = DynamicCache(config=self.model.config)
        if len(ids) > 1:  # the prompt minus its last token; that token is the first step's input
            self.model(input_ids=torch.tensor([ids[:-1]], device=device), use_cache=True, **{self._cache_kw: cache})
        ranking = request.ranking
        schedule = method.schedule(ranking, self.num_layers, key) if method.steers and (
            ranking is not None or not method.needs_ranking) else None
        out = DecodeOutput([], [], Stats(), ranking, "length", [], [] if self.top else None)
        token, position = ids[-1], len(ids) - 1
        for step in range(limit):
            raw_view = _ScaledView(cache)
            if schedule is None and method.steers:  # the ranking, on the first step
                t_rank = time.perf_counter()
                with self.recorder.recording():
                    logits = self._forward(cache, token, position, raw_view)
                    pre, post = self.recorder.stacked()
                pre_s, post_s = [], []
                for layer in range(self.num_layers):  # one probe per forward, as released
                    with self.recorder.recording():
                        probe = _ScaledView(cache, frozenset([layer]), columns, method.alpha)
                        self._forward(cache, token, position, probe, body_only=True)
                        p, q = self.recorder.stacked()
                    pre_s.append(p)
                    post_s.append(q)
                ranking = method.rank_layers(pre[0], post[0], torch.cat(pre_s), torch.cat(post_s))
                out.ranking, out.stats.ranking_seconds = ranking, time.perf_counter() - t_rank
                schedule = method.schedule(ranking, self.num_layers, key)
            else:
                logits = self._forward(cache, token, position, raw_view)
            z = logits.float()
            probs = torch.softmax(z, dim=-1)
            raw = RawStep(step, logits, probs, probs.topk(2).values)
            trace = TokenTrace(skipped=method.steers, trials=0, layers=None)
            chosen = raw.token
            if method.steers and not method.skip(raw):
                trace = TokenTrace(skipped=False, trials=len(schedule), layers=None)
                for k, trial in enumerate(schedule):  # one trial per forward, strongest first
                    steered = self._forward(cache, token, position, _ScaledView(cache, trial.layers, columns, trial.alpha))
                    out.stats.trial_rows += 1
                    candidate = int(steered.argmax())
                    if method.accept(raw, candidate):
                        chosen, trace = candidate, TokenTrace(skipped=False, trials=k + 1, layers=trial.size)
                        break
            raw_view.commit()  # only now does the cache hold this token's raw keys and values
            logp = z - torch.logsumexp(z, dim=-1)
            out.raw_logprobs.append(float(logp[chosen]))
            if self.top:
                values, top_ids = logp.topk(self.top)
                out.top_logprobs.append(list(zip(top_ids.tolist(), values.tolist())))
            out.token_ids.append(chosen)
            out.trace.append(trace)
            out.stats.record(trace)
            if step == 0:
                out.stats.first_token_seconds = time.perf_counter() - t0
            token, position = chosen, position + 1
            if chosen in self.eos:
                out.finish_reason = "eos"
            elif request.stop is not None and request.stop(out.token_ids):
                out.finish_reason = "stop"
            done = out.finish_reason != "length" or len(out.token_ids) >= limit
            if done:
                out.stats.seconds = time.perf_counter() - t0
                out.stats.evicted_layers = evicted_layers(cache, columns)
            if on_token is not None:
                on_token(index, out, done)
            if done:
                break
        return out
