"""The decoding loop (method.md §4), batched over prompts.

Per step and per row: a raw pass (whose keys and values are the only ones the cache keeps), the
method's skip gate, the method's trial layer sets evaluated with the key-scaling view (all trials of
a step in one batched forward, or one round per trial), the first accepted trial token, else the raw
token. Prefill covers the prompt without its last token, which is fed as the first decode input, so
the first generated token goes through the loop and the ranking probes run on the last prompt token.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from transformers.cache_utils import DynamicCache

from .attention_bias import BIAS_KWARG, enable_attention_bias
from .devices import input_device
from ..methods.base import Method, RawStep, prompt_key
from ..methods.trial import Trial
from ..models.loading import attention_modules
from ..results import Ranking, Stats, TokenTrace
from .key_scaling import SteeredCache
from .plan import ForwardPlan, RowSteering
from .requests import DecodeOptions, DecodeOutput, DecodeRequest
from .sampling import Sampler
from .ranking import AttentionRecorder, rank_from_scores, score_layers
from .sliding_window import evicted_layers

__all__ = ["DecodeOptions", "DecodeOutput", "DecodeRequest", "DecodingLoop"]


@dataclass
class _Row:
    index: int  # position in the request list
    columns: torch.Tensor  # absolute cache columns of the steered positions
    outside: torch.Tensor  # absolute cache columns of the prompt outside them (PASTA's target)
    seed_key: int  # identifies the prompt for seeded variants (independent of batching)
    next_input: int
    next_pos: int
    ranking: Ranking | None
    max_new_tokens: int
    schedule: list[Trial] | None = None
    sampler: Sampler | None = None  # None: greedy
    stop: Callable[[list[int]], bool] | None = None
    tokens: list[int] = field(default_factory=list)
    trace: list[TokenTrace] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    finish_reason: str = "length"
    done: bool = False


def _cache_keyword(model: torch.nn.Module) -> str:
    # transformers 5.x renamed `past_key_values` to `cache`; the old name is deprecated.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class DecodingLoop:
    """Runs one batch of requests through a method. Create one per batch.

    The persistent cache holds one row per request (the raw model), or, for a method that steers as a
    stream (PASTA, SpotLight, InstABoost), the steered model's row, preceded by the raw row when the
    plausibility filter needs the raw distribution: cache row ``s * B + b`` is stream ``s`` of request
    ``b`` (B requests still running).
    """

    def __init__(self, model: torch.nn.Module, method: Method, options: DecodeOptions):
        self.model = model
        self.method = method
        self.opts = options
        text_config = model.config.get_text_config(decoder=True)
        self.num_layers = text_config.num_hidden_layers
        self.device = input_device(model)
        self._cache_kw = _cache_keyword(model)
        self.body = model.get_decoder()  # the transformer without its LM head
        self.streams = 1 + bool(method.stream and getattr(method, "filter", False))
        # A stream method without the filter runs no raw model: its logits stand in for the raw pass.
        self.raw_logits_are_raw = not method.stream or self.streams == 2
        method.check_model(self.num_layers, text_config.num_attention_heads)
        if method.stream:
            enable_attention_bias(model)

    # -- forward passes -------------------------------------------------------------------------

    def _forward(self, plan: ForwardPlan | None, body_only: bool = False) -> tuple[torch.Tensor | None, SteeredCache | None]:
        """Run the plan's rows for one token each; return their next-token logits [R, V] and the view.

        ``plan=None`` is the plain raw pass straight on the persistent cache (methods that never steer).
        ``body_only`` skips the LM head (ranking probes only need the attention states): no logits.
        """
        extra = {}
        if plan is None:
            src = torch.arange(self.mask.shape[0], device=self.device)
            cache = self.cache
        else:
            # Cache row s*B + b reads request b's input (B = requests still running).
            src = torch.tensor(plan.sources, device=self.device).remainder(self.mask.shape[0])
            cache = SteeredCache(self.cache, plan)
            bias = plan.bias_plan(self.cache)
            if bias is not None:
                extra[BIAS_KWARG] = bias
        out = (self.body if body_only else self.model)(
            input_ids=self.inputs.index_select(0, src).unsqueeze(1),
            position_ids=self.positions.index_select(0, src).unsqueeze(1),
            attention_mask=self.mask.index_select(0, src),
            use_cache=True,
            **{self._cache_kw: cache},
            **extra,
        )
        logits = None if body_only else out.logits[:, -1, :]
        return logits, (cache if plan is not None else None)

    def _rows(self, requests: Sequence[DecodeRequest]) -> list[_Row]:
        """Left-pad the prompts (without their last token, fed at step 0) and set up each row."""
        prefix_len = [len(r.input_ids) - 1 for r in requests]
        width = max(prefix_len)
        self.pad = [width - n for n in prefix_len]
        rows = []
        for b, r in enumerate(requests):
            key = prompt_key(r.input_ids)
            steered = set(self.method.steering_positions(r.input_ids, r.positions, key))
            cols = torch.tensor(sorted(steered), dtype=torch.long) + self.pad[b]
            outside = torch.tensor([i for i in range(len(r.input_ids)) if i not in steered], dtype=torch.long) + self.pad[b]
            limit = r.max_new_tokens or self.opts.max_new_tokens
            rows.append(_Row(b, cols, outside, key, r.input_ids[-1], len(r.input_ids) - 1, r.ranking, limit,
                             sampler=Sampler.for_request(self.opts.sampling, key, r.sample_index), stop=r.stop))
        return rows

    def _prefill(self, requests: Sequence[DecodeRequest], rows: list[_Row]) -> None:
        B, width = len(requests), max(len(r.input_ids) - 1 for r in requests)
        ids = torch.full((B, width), self.opts.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, width), dtype=torch.long)
        for b, r in enumerate(requests):
            if width - self.pad[b]:
                ids[b, self.pad[b]:] = torch.tensor(r.input_ids[:-1])
                mask[b, self.pad[b]:] = 1
        self.cache = DynamicCache(config=self.model.config)
        self.mask = mask.to(self.device)
        if width:
            extra = {}
            if self.method.stream and self.method.bias_prefill:  # the steered stream reads a steered prompt
                # No cache to map columns by: prefill attention sees every key, sliding layers included.
                extra[BIAS_KWARG] = ForwardPlan(self._stream_rows(rows), self.opts.alpha).bias_plan(None)
            mask = self.mask.repeat(self.streams, 1)
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            self.model(
                input_ids=ids.to(self.device).repeat(self.streams, 1),
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kw: self.cache},
                **extra,
            )

    # -- ranking ----------------------------------------------------------------------------------

    def _rank(self, rows: list[_Row], active: list[int], recorder: AttentionRecorder) -> None:
        """Probe every layer alone for each row that needs a ranking, from the recorded raw pass."""
        pre, post = recorder.stacked()  # [A, L, H] of the raw pass
        L = self.num_layers
        probes = [(a, layer) for a in active for layer in range(L)]
        pre_s, post_s = [], []
        size = max(1, self.opts.probe_batch_size)
        for i in range(0, len(probes), size):
            chunk = probes[i:i + size]
            plan = ForwardPlan(
                [RowSteering(a, frozenset([layer]), rows[a].columns) for a, layer in chunk], alpha=self.opts.alpha
            )
            self._forward(plan, body_only=True)
            p, q = recorder.stacked()
            pre_s.append(p)
            post_s.append(q)
        pre_s_all, post_s_all = torch.cat(pre_s), torch.cat(post_s)
        for k, a in enumerate(active):
            sl = slice(k * L, (k + 1) * L)
            scores = score_layers(self.opts.mode, pre[a], post[a], pre_s_all[sl], post_s_all[sl])
            rows[a].ranking = rank_from_scores(scores, self.opts.mode, self.opts.model_name)

    # -- trials -----------------------------------------------------------------------------------

    def _run_trials(
        self, rows: list[_Row], pending: dict[int, RawStep], known: dict[tuple[int, int], int]
    ) -> dict[int, tuple[int, int, int | None]]:
        """Decide the pending rows from their trials; return row -> (token, trials made, accepted set size).

        ``known`` holds trial tokens already computed (speculatively, with the raw pass). Missing ones
        are computed all at once (``trial_batching="all"``) or one round per trial ("sequential").
        Either way the first accepted trial in schedule order wins, so the outcome is the same.
        """
        decided: dict[int, tuple[int, int, int | None]] = {}
        tokens = dict(known)
        if self.opts.trial_batching == "all":
            missing = [(a, k) for a in pending for k in range(len(rows[a].schedule)) if (a, k) not in tokens]
            tokens.update(self._trial_tokens(rows, missing))
        undecided, k = list(pending), 0
        while undecided:
            todo = [a for a in undecided if k < len(rows[a].schedule)]
            for a in undecided:
                if a not in todo:  # every trial rejected: the raw token
                    decided[a] = (pending[a].token, len(rows[a].schedule), None)
            tokens.update(self._trial_tokens(rows, [(a, k) for a in todo if (a, k) not in tokens]))
            undecided = []
            for a in todo:
                if self.method.accept(pending[a], tokens[(a, k)]):
                    decided[a] = (tokens[(a, k)], k + 1, rows[a].schedule[k].size)
                else:
                    undecided.append(a)
            k += 1
        return decided

    def _trial_rows(self, rows: list[_Row], order: list[tuple[int, int]]) -> list[RowSteering]:
        return [RowSteering.of(a, rows[a].schedule[k], rows[a].columns, rows[a].outside) for a, k in order]

    def _trial_tokens(self, rows: list[_Row], order: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
        if not order:
            return {}
        for a, _ in order:
            rows[a].stats.trial_rows += 1
        logits, _ = self._forward(ForwardPlan(self._trial_rows(rows, order), alpha=self.opts.alpha))
        return dict(zip(order, self._draws(rows, order, logits)))

    @staticmethod
    def _draws(rows: list[_Row], order: list[tuple[int, int]], logits: torch.Tensor) -> list[int]:
        """Trial tokens of (row, trial k) [R, V] logits: the argmax, or draw k + 1 of a sampled row's step."""
        tokens = torch.argmax(logits, dim=-1).tolist()
        for j, (a, k) in enumerate(order):
            if rows[a].sampler is not None:
                tokens[j] = rows[a].sampler.draw(logits[j], len(rows[a].tokens), k + 1)[0]
        return tokens

    # -- the loop ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def run(
        self, requests: Sequence[DecodeRequest], on_step: Callable[["DecodingLoop", list[_Row]], None] | None = None
    ) -> list[DecodeOutput]:
        """Decode every request; ``on_step(loop, rows)`` is called after each step with the rows still in
        the cache, in batch order (tests, progress)."""
        t0 = time.perf_counter()
        rows = self._rows(requests)
        self._schedule(rows)
        self._prefill(requests, rows)
        self.recorder = AttentionRecorder(attention_modules(self.model)) if self.method.needs_ranking else None
        active = list(range(len(rows)))  # row indices, in the cache's batch order

        for step in range(max(r.max_new_tokens for r in rows)):
            if not active:
                break
            view = [rows[a] for a in active]  # rows addressed by cache batch index from here on
            self.inputs = torch.tensor([r.next_input for r in view], device=self.device)
            self.positions = torch.tensor([r.next_pos for r in view], device=self.device)
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(view), 1)], dim=1)

            raw_logits, raw_view, known = self._raw_pass(view)           # raw pass (+ ranking on step 0)
            z = raw_logits.float()
            probs = torch.softmax(z, dim=-1)                               # float32, as Eq. 2 is checked
            top2 = probs.topk(2, dim=-1).values
            pending: dict[int, RawStep] = {}
            decided: dict[int, tuple[int, TokenTrace]] = {}
            for i, r in enumerate(view):
                choice, support = r.sampler.draw(raw_logits[i], step, 0) if r.sampler else (None, None)
                raw = RawStep(step, raw_logits[i], probs[i], top2[i], choice, support)
                # The skip gate; under sampling, a raw draw the method would not accept is emitted as drawn.
                if self.method.steers and not self.method.skip(raw) and (choice is None or self.method.accept(raw, choice)):
                    pending[i] = raw
                else:
                    decided[i] = (raw.token, TokenTrace(skipped=self.method.steers, trials=0, layers=None))
            for i, (tok, made, size) in self._run_trials(view, pending, known).items():  # trials, halving
                decided[i] = (tok, TokenTrace(skipped=False, trials=made, layers=size))
            if raw_view is not None:
                raw_view.commit()  # only now may the cache hold this token's raw keys and values
            if self.raw_logits_are_raw:  # the response's perplexity under the raw model, at no extra cost
                self._record_logprobs(view, z, [decided[i][0] for i in range(len(view))])

            keep = [i for i, r in enumerate(view) if not self._emit(r, *decided[i], step, t0)]
            if on_step is not None:
                on_step(self, view)
            if len(keep) < len(view):
                self._select(keep)
                active = [active[i] for i in keep]

        return [DecodeOutput(r.tokens, r.trace, r.stats, r.ranking, r.finish_reason,
                             r.logprobs if self.raw_logits_are_raw else None,
                             r.top_logprobs if self.raw_logits_are_raw and self.opts.top_logprobs else None)
                for r in rows]

    def _record_logprobs(self, view: list[_Row], raw_logits: torch.Tensor, tokens: list[int]) -> None:
        """Append each row's raw log-probability of its emitted token (logsumexp: no underflow to -inf)
        and, when asked, the raw model's most likely tokens."""
        emitted = torch.tensor(tokens, device=raw_logits.device)
        logp_all = raw_logits - torch.logsumexp(raw_logits, dim=-1, keepdim=True)
        logp = logp_all.gather(1, emitted[:, None]).squeeze(1)
        for r, lp in zip(view, logp.tolist()):
            r.logprobs.append(lp)
        if self.opts.top_logprobs:
            values, ids = logp_all.topk(self.opts.top_logprobs, dim=-1)
            for r, i, v in zip(view, ids.tolist(), values.tolist()):
                r.top_logprobs.append(list(zip(i, v)))

    def _raw_pass(self, view: list[_Row]) -> tuple[torch.Tensor, SteeredCache | None, dict[tuple[int, int], int]]:
        """The raw forward of every row, with the ranking probes of rows that have no ranking yet and any
        speculative trials. Returns the raw logits, the view holding the raw keys and values until
        commit (None for methods that never steer) and the speculative trial tokens."""
        need_rank = [i for i, r in enumerate(view) if self.method.needs_ranking and r.ranking is None]
        self._schedule(view)
        if not self.method.steers:
            logits, _ = self._forward(None)
            return logits, None, {}
        if self.method.stream:
            return self._stream_pass(view)
        # A steering method keeps the raw keys and values aside until its trials have run on the cache
        # as it was before this token.
        plan = ForwardPlan([RowSteering(i) for i in range(len(view))], self.opts.alpha, persist=len(view))
        # Speculation: the trials of rows that will probably need them join the raw pass; the gate may
        # then discard them (the output does not change).
        speculated = [(i, k) for i, r in enumerate(view) if self._speculate(r) for k in range(len(r.schedule))]
        plan.rows += self._trial_rows(view, speculated)
        for i, _ in speculated:
            view[i].stats.trial_rows += 1
        if need_rank:
            t_rank = time.perf_counter()
            with self.recorder.recording():
                logits, raw_view = self._forward(plan)
                self._rank(view, need_rank, self.recorder)
            for i in need_rank:
                view[i].stats.ranking_seconds = time.perf_counter() - t_rank
            self._schedule(view)
        else:
            logits, raw_view = self._forward(plan)
        known = dict(zip(speculated, self._draws(view, speculated, logits[len(view):])))
        return logits[: len(view)], raw_view, known

    def _stream_pass(self, view: list[_Row]) -> tuple[torch.Tensor, SteeredCache, dict[tuple[int, int], int]]:
        """One forward of the persistent streams: the steered model's row per request, after the raw row
        when the filter needs it. The steered row's token is the step's one trial, already computed."""
        B = len(view)
        logits, raw_view = self._forward(ForwardPlan(self._stream_rows(view), self.opts.alpha, persist=self.streams * B))
        order = [(i, 0) for i in range(B)]
        steered = self._draws(view, order, logits[(self.streams - 1) * B:])
        # Without the filter the steered stream is the only one: its logits stand in for the raw pass.
        return logits[:B], raw_view, dict(zip(order, steered))

    def _stream_rows(self, view: list[_Row]) -> list[RowSteering]:
        """Every persistent cache row of a stream method, in cache order: the raw rows when the filter
        needs them, then the steered rows, each with its method's one trial."""
        B = len(view)
        raw = [RowSteering(i) for i in range(B)] if self.streams == 2 else []
        s = (self.streams - 1) * B
        return raw + [RowSteering.of(s + i, r.schedule[0], r.columns, r.outside) for i, r in enumerate(view)]

    def _emit(self, r: _Row, token: int, trace: TokenTrace, step: int, t0: float) -> bool:
        """Append the step's token to a row; return True when the row is finished."""
        now = time.perf_counter()
        r.tokens.append(token)
        r.trace.append(trace)
        r.stats.record(trace)
        if step == 0:
            r.stats.first_token_seconds = now - t0
        r.next_input, r.next_pos = token, r.next_pos + 1
        if token in self.opts.eos_token_ids:
            r.finish_reason = "eos"
        elif r.stop is not None and r.stop(r.tokens):
            r.finish_reason = "stop"
        r.done = r.finish_reason in ("eos", "stop") or len(r.tokens) >= r.max_new_tokens
        if r.done:
            r.stats.seconds = now - t0
            r.stats.evicted_layers = evicted_layers(self.cache, r.columns.tolist()) if len(r.columns) else []
        return r.done

    def _schedule(self, view: list[_Row]) -> None:
        """Fix each row's trials once its ranking is known (the schedule never changes)."""
        for r in view:
            if r.schedule is None and self.method.steers and (r.ranking is not None or not self.method.needs_ranking):
                r.schedule = self.method.schedule(r.ranking, self.num_layers, r.seed_key)

    def _speculate(self, row: _Row) -> bool:
        if row.schedule is None or self.opts.speculate == "never":
            return False
        # "auto": steps that needed trials tend to come in runs; a skipped step predicts another skip.
        return self.opts.speculate == "always" or (bool(row.trace) and not row.trace[-1].skipped)

    def _select(self, keep: list[int]) -> None:
        """Drop finished rows from the cache and the attention mask."""
        if not keep:
            return
        B = self.mask.shape[0]
        idx = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(torch.cat([idx + s * B for s in range(self.streams)]))
        self.mask = self.mask.index_select(0, idx)
