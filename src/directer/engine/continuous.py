"""The continuous decoding engine: every forward packs the pending work of all running sequences.

Each running sequence owns one slot of a :class:`~directer.engine.slot_cache.SlotCache`. A forward
(:meth:`Engine.step`) is either a prefill of newly admitted prompts, whose pass is also their raw
step 0, or a packed decode forward holding, for every running sequence, what it waits for:

- a raw row (sequences at step t whose previous step is decided);
- trial rows (sequences whose gate opened on the previous forward), read copy-free against the
  sequence's slot as it was before the step's raw token (:mod:`directer.engine.packed_attention`);
- ranking probe rows, only with ``EngineOptions(probes="decode")``; by default a prompt's probes and
  its all-layer trial (which needs no ranking) are extra query positions of its prefill
  (:mod:`directer.engine.prefill`).

A sequence waiting for its trials skips one forward while the others advance, so a trial costs rows,
not a forward of the whole batch; with ``speculate="auto"`` a sequence whose gate is likely to open
brings its trials into its raw row's forward where this device's costs say that pays
(:mod:`directer.engine.cost_model`). Finished sequences free their slot; waiting prompts are admitted
when enough slots are free (or at once, ``admit_min=1``, for serving). The outcome of every sequence
is the one it gets alone: the first accepted trial in schedule order, else the raw token.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import nullcontext
from dataclasses import replace
from typing import Callable, Sequence as Seq

import torch

from ..errors import UsageError
from ..methods.base import RawStep, prompt_key
from ..models.loading import attention_modules
from ..results import TokenTrace
from .attention import enable_packed_attention, pinned_backends
from .attention_bias import SlotBias
from .cost_model import CostModel
from .devices import input_device
from .engine_options import EngineOptions, fits
from .kv_budget import CacheBudget
from .requests import DecodeOutput, DecodeRequest  # noqa: F401  (DecodeOutput: run's outputs)
from .packed_attention import PACKED_KWARG, PackedPlan
from .decode_rows import decode_rows
from .prefill import bias_targets, first_step_trials, left_padded, prefill_group
from .ranking import AttentionRecorder
from .row_matmul import install, transposed, wanted
from .sampling import Sampler
from .readback import StepRead, TrialRead, TrialSource, read_back
from .sequence import Sequence, SequenceSettings, draw_of, output, skipped_trace, trial_tokens
from .slot_cache import SlotCache
from .staging import stage

__all__ = ["Engine", "EngineOptions", "fits", "output"]

class Engine:
    def __init__(self, model: torch.nn.Module, options: EngineOptions | None = None):
        self.model = model
        self.opts = options or EngineOptions()
        text = model.config.get_text_config(decoder=True)
        self.num_layers = text.num_hidden_layers
        self.num_heads = text.num_attention_heads
        self.softcap = getattr(text, "final_logit_softcapping", None)
        self.device = input_device(model)  # the input embeddings' (under a device map, the first layer's)
        self.body = model.get_decoder()
        self.head = model.get_output_embeddings()
        enable_packed_attention(model)  # our attention function reads the packed plan
        self.transpose = wanted(self.opts.matmul, self.device, next(model.parameters()).dtype, model)
        if self.transpose:
            install(model)
        self.budget = self.opts.budget or CacheBudget(None)
        self.cache = SlotCache(self.num_layers, self.opts.slots, self.device, limit=self.budget.columns)
        self.bias = SlotBias(self.opts.slots, self.num_layers, self.num_heads, self.device)
        self.free: list[int] = list(range(self.opts.slots))
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.recorder = AttentionRecorder(attention_modules(model))
        self.cost = CostModel(self.device.type, costs=self.opts.cost)
        # top-p by a batched sort of every row (one launch on a GPU) or by candidates, row by row (a CPU)
        self.sort = self.opts.nucleus == "sort" or (self.opts.nucleus == "auto" and self.device.type != "cpu")
        self.forwards = 0
        self._count = 0
        self.windows: dict[int, int | None] = {}

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, request: DecodeRequest, settings: SequenceSettings,
               on_token: Callable[[Sequence], None] | None = None) -> Sequence:
        method = settings.method
        method.check_model(self.num_layers, self.num_heads)
        key = prompt_key(request.input_ids)
        if request.max_new_tokens:
            settings = replace(settings, max_new_tokens=request.max_new_tokens)
        positions = sorted(set(method.steering_positions(request.input_ids, request.positions, key)))
        seq = Sequence(self._count, list(request.input_ids), positions, settings, request.ranking, key, on_token,
                       stop=request.stop)
        seq.sampler = Sampler.for_request(settings.sampling, key, request.sample_index)
        refusal = self.budget.refusal(len(request.input_ids), settings.max_new_tokens)
        if refusal:
            raise UsageError(refusal)
        if len(seq.stream_rows()) > self.opts.slots:
            raise ValueError(f"{method.name} with the plausibility filter needs {len(seq.stream_rows())} slots "
                             f"(a raw and a steered stream); this engine has {self.opts.slots}")
        self._count += 1
        if method.steers and (seq.ranking is not None or not method.needs_ranking):
            seq.schedule = method.schedule(seq.ranking, self.num_layers, key)
        elif method.steers:
            seq.leading = method.trials_before_ranking(self.num_layers)
        self.waiting.append(seq)
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Stop a sequence; its slot is freed before the next forward."""
        seq.cancelled = True

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def run(self, requests: Seq[DecodeRequest], settings: SequenceSettings | Seq[SequenceSettings],
            on_token: Callable[[Sequence], None] | None = None) -> list[DecodeOutput]:
        """Decode every request to the end (offline use); outputs in request order."""
        per = [settings] * len(requests) if isinstance(settings, SequenceSettings) else list(settings)
        seqs = [self.submit(r, s, on_token) for r, s in zip(requests, per)]
        while self.busy:
            self.step()
        return [output(s) for s in seqs]

    # -- one forward ------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> None:
        """Run one forward: a prefill of waiting prompts when enough slots are free, else a decode."""
        self._drop_cancelled()
        admit_min = self.opts.admit_min or max(1, self.opts.slots // 8)
        fits_first = bool(self.waiting) and len(self.free) >= len(self.waiting[0].stream_rows())
        if fits_first and (len(self.free) >= min(admit_min, len(self.waiting)) or not self.running):
            self._prefill()
        elif self.running:
            self._decode()

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            seq.state, seq.finish_reason = "done", "cancelled"
        for seq in [s for s in self.running if s.cancelled]:
            seq.finish_reason = "cancelled"
            self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        seq.state = "done"
        for slot in seq.slots:
            self.cache.free(slot)
            self.bias.clear(slot)
            self.free.append(slot)
        seq.slot = seq.steered_slot = None
        self.running.remove(seq)
        seq.stats.evicted_layers = seq.evicted(self.windows)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _prefill(self) -> None:
        kind = self._prefill_kind(self.waiting[0])
        probes, lead = kind
        extra = self.num_layers + lead if probes else 0  # probes, then the leading trials
        batch: list[Sequence] = []
        rows = 0  # prompt rows: one per slot (a filtered stream encodes its prompt twice, raw and biased)
        while self.waiting and self._prefill_kind(self.waiting[0]) == kind:
            need = len(self.waiting[0].stream_rows())
            longest = max([len(s.input_ids) for s in batch] + [len(self.waiting[0].input_ids)])
            if rows + need > len(self.free) or (batch and (longest + extra) * (rows + need) > self.opts.max_prefill_tokens):
                break
            batch.append(self.waiting.popleft())
            rows += need
        prompt_rows = [(s, biased) for s in batch for biased in s.stream_rows()]
        slots = [self.free.pop(0) for _ in prompt_rows]
        lengths = [len(s.input_ids) for s, _ in prompt_rows]
        ids, mask, positions, width = left_padded([s.input_ids for s, _ in prompt_rows], extra, self.opts.pad_token_id)
        slot_t = torch.tensor(slots, device=self.device)
        self.cache.place(slot_t, lengths)
        now = time.perf_counter()
        first_row: dict[int, int] = {}  # id(sequence) -> its first (raw) prompt row
        for i, ((s, biased), slot) in enumerate(zip(prompt_rows, slots)):
            if id(s) not in first_row:
                first_row[id(s)] = i
                s.slot, s.state, s.admitted_at = slot, "prefill", now
                self.running.append(s)
            else:
                s.steered_slot = slot
            if biased:
                self._bias_slot(s, slot)
        prefill_biased = [i for i, (s, biased) in enumerate(prompt_rows) if biased and s.settings.method.bias_prefill]
        plan = PackedPlan(self.cache, slot_t, slot_list=slots, bias=self.bias, prefill_biased=prefill_biased,
                          prefill_pads=[width - n for n in lengths], prefill_extra=extra,
                          groups=[prefill_group(s, b, extra, self.num_layers) for b, s in enumerate(batch)] if extra else [])
        record = any(s.needs_probes for s in batch)
        t0 = time.perf_counter()
        with self.recorder.recording(1 + extra) if record else nullcontext(), transposed(self.transpose):
            hidden = self.body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                               position_ids=positions.to(self.device), use_cache=False,
                               **{PACKED_KWARG: plan}).last_hidden_state
            last = hidden[:, width - 1:width, :]
            if lead:  # the leading trials' tokens are read off the same forward
                last = torch.cat([last, hidden[:, width + self.num_layers:, :]], dim=1)
            logits = self._logits(last.reshape(-1, last.shape[-1])).view(len(prompt_rows), 1 + lead, -1)
        seconds = time.perf_counter() - t0
        self.forwards += 1
        if record:
            pre, post = self.recorder.stacked()
        trial_rows = first_step_trials(batch, first_row, logits, lead)
        draws = [draw_of(s, 0) if first_row[id(s)] == i else None for i, (s, _) in enumerate(prompt_rows)]
        read = read_back(logits[:, 0], torch.stack([t[2] for t in trial_rows]) if trial_rows else None,
                         [TrialSource(row=t[3]) for t in trial_rows], raw_draws=draws,
                         trial_draws=[draw_of(s, k + 1) for s, k, _, _ in trial_rows], sort=self.sort,
                         top=max(s.settings.top_logprobs for s in batch))
        known = trial_tokens([t[:2] for t in trial_rows], read.trials)
        for s in batch:
            i = first_row[id(s)]
            n = len(s.input_ids)
            if extra:  # raw states at the last token, then the probes' states: the ranking now
                s.raw_states = (pre[i, 0], post[i, 0])
                s.probes_issued = True
                self._rank(s, pre[i, 1:1 + self.num_layers], post[i, 1:1 + self.num_layers], seconds)
                s.stats.trial_rows += lead
            elif s.needs_probes:
                s.raw_states = (pre[i], post[i])
            self._on_raw(s, read, i, logits[i, 0], (s.input_ids[-1], n - 1), known.get(id(s)))

    def _bias_slot(self, seq: Sequence, slot: int) -> None:
        """Give ``slot`` the sequence's attention bias: its kind, factor and heads, its target columns."""
        trial = seq.schedule[0]
        self.bias.set(slot, trial.bias, trial.layers)
        self.cache.mark(slot, bias_targets(seq, trial.bias))

    def _prefill_kind(self, seq: Sequence) -> tuple[bool, int]:
        """Prompts that share a prefill forward: with probes in it (and how many leading trials), or not."""
        probes = seq.needs_probes and self.opts.probes == "prefill"
        return probes, len(seq.leading) if probes else 0

    def _on_raw(self, seq: Sequence, step: StepRead, j: int, logits: torch.Tensor, at: tuple[int, int],
                known: dict[int, tuple[int, TrialRead | None]] | None = None) -> None:
        """The raw pass of a step (raw row ``j`` of ``step``, its ``logits``; its input and position):
        the gate, then the step's token or its trials (``known``: trial k's token, its read-back)."""
        read = step.raw[j]
        raw = RawStep(len(seq.tokens), logits, step.probs[j], read.top2, read.choice,
                      None if read.choice is None else step.support[j], argmax=read.token,
                      known={read.token: (read.top2[0], read.logprob)})
        if read.choice is not None:  # the draw's operands came with the same read
            raw.known[read.choice] = (read.choice_prob, read.choice_logprob)
            raw.supported = {read.choice: read.choice_supported}
        seq.open_step(raw, *at, step.lse[j], read.top)
        method = seq.settings.method
        if not method.steers or method.skip(raw) or (read.choice is not None and not method.accept(raw, read.choice)):
            # Under sampling a raw draw the method would not accept as a steered token is emitted as
            # drawn: steering only re-decides draws inside its acceptance set (README, Fidelity).
            self._emit(seq, raw.token, skipped_trace(method.steers))
            return
        seq.learn(known)
        seq.state = "trials"
        self._decide(seq)

    def _decide(self, seq: Sequence) -> None:
        decided = seq.decide()
        if decided is not None:
            self._emit(seq, *decided)

    def _emit(self, seq: Sequence, token: int, trace: TokenTrace) -> None:
        finished = seq.emit(token, trace)
        if finished and seq.needs_probes:
            seq.state = "ranking"  # its tokens are final; one more forward computes its ranking
        elif finished:
            self._finish(seq)
        if seq.on_token is not None:
            seq.on_token(seq)

    def _decode(self) -> None:
        raw = [s for s in self.running if s.state == "raw"]
        rows = decode_rows(raw, self.running, self.num_layers, self.opts.trials, self._speculate)
        ids, pos, groups, logit_rows, probe_rows = rows.ids, rows.pos, rows.groups, rows.logit_rows, rows.probe_rows
        if not ids:
            return
        # Every index the forward needs, in one host-to-device copy (with, when every trial's source is a
        # raw row of this forward, the rows the read-back takes their raw distributions from).
        raw_index = {id(s): j for j, s in enumerate(raw)}
        src_rows = [raw_index.get(id(s)) for s, _, _ in logit_rows[len(raw):]]
        src_rows = src_rows if src_rows and None not in src_rows else []
        slot_t, pos_t, ids_t, pos_all, need, src_t = stage(self.device, rows.slot_list, rows.positions, ids, pos,
                                                           [r for _, _, r in logit_rows], src_rows)
        width = max(rows.positions) + 1 if raw else 0  # the raw rows' columns: each its slot's up to its position
        if raw:
            self.cache.reserve(width)
            self.cache.open_columns(slot_t, pos_t)
        plan = PackedPlan(self.cache, slot_t, pos_t, width, groups, slot_list=rows.slot_list, bias=self.bias,
                          position_list=rows.positions, split=self.opts.bands)
        t0 = time.perf_counter()
        with (self.recorder.recording() if probe_rows else nullcontext(), transposed(self.transpose),
              pinned_backends(self.device)):
            # The plan makes every row's mask; a ready 4-D one (ignored) keeps transformers from inspecting
            # the positions and the mask, device reads in every forward.
            hidden = self.body(input_ids=ids_t[:, None], position_ids=pos_all[:, None],
                               attention_mask=torch.ones(len(ids), 1, 1, 1, dtype=torch.bool, device=self.device),
                               use_cache=False, **{PACKED_KWARG: plan}).last_hidden_state[:, 0]
            logits = self._logits(hidden.index_select(0, need.to(hidden.device))) if logit_rows else None
        seconds = time.perf_counter() - t0
        self.forwards += 1
        self.windows.update(plan.windows)

        if probe_rows:
            pre_s, post_s = self.recorder.stacked()
            for s, first in probe_rows:
                self._rank(s, pre_s[first:first + self.num_layers], post_s[first:first + self.num_layers], seconds)
        n_raw = len(raw)
        found: dict[int, dict[int, tuple[int, TrialRead | None]]] = {}
        if logits is not None:
            trials = logit_rows[n_raw:]  # every row after the raw ones is a trial
            sources = [TrialSource(row=raw_index[id(s)]) if id(s) in raw_index
                       else TrialSource(probs=s.raw.probs, logits=s.raw.logits, lse=s.raw_lse, support=s.raw.support)
                       for s, _, _ in trials]
            read = read_back(logits[:n_raw], logits[n_raw:] if trials else None, sources, src_t if src_rows else None,
                             [draw_of(s, 0) for s in raw], [draw_of(s, k + 1) for s, k, _ in trials], self.sort,
                             max([s.settings.top_logprobs for s in raw], default=0))
            found = trial_tokens([(s, k) for s, k, _ in trials], read.trials)
            # launch to read-back: the read waits for the device, so a GPU's work is in the time too
            self.cost.observe(len(ids), time.perf_counter() - t0)
        for s in self.running:
            if s.state == "trials" and id(s) in found:
                s.learn(found[id(s)])
        for j, s in enumerate(raw):  # speculative trial tokens open the step with it
            self._on_raw(s, read, j, logits[j], (s.step_input, s.step_pos), found.get(id(s)))
        for s in list(self.running):
            if s.state == "trials" and s not in raw:
                self._decide(s)

    def _rank(self, seq: Sequence, pre_s: torch.Tensor, post_s: torch.Tensor, seconds: float) -> None:
        pre, post = seq.raw_states
        seq.ranking = seq.settings.method.rank_layers(pre, post, pre_s, post_s)
        seq.schedule = seq.settings.method.schedule(seq.ranking, self.num_layers, seq.seed_key)
        seq.stats.ranking_seconds = seconds
        seq.raw_states = None
        if seq.state == "ranking":
            self._finish(seq)
            if seq.on_token is not None:
                seq.on_token(seq)

    def _speculate(self, seq: Sequence, rows: int, sequences: int) -> bool:
        if seq.settings.method.trials_every_step:  # no gate: the trials are certain, fold them in
            return True
        mode = seq.settings.speculate
        if mode == "never":
            return False
        if mode == "always":
            return True
        # "auto": the chance this step opens (openings come in runs: the sequence's own record after a
        # step like its last) against what the rows cost on this device (engine/cost_model.py)
        return self.cost.speculation_pays(seq.open_chance(), sequences, rows)
