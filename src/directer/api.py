"""The Python API: :class:`Directer` steers a model's generations toward the instructions in the prompt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import torch

from .config import SteeringConfig
from .engine.kv_budget import budget_problem
from .engine.requests import DecodeOutput, DecodeRequest
from .text.spans import PreparedPrompt, prepare_prompt
from .errors import UsageError
from .inputs import AUTO_INSTRUCTIONS, NOTHING_FOUND, SYSTEM_INSTRUCTIONS, asks_for, resolve_instructions
from .models.loading import LoadedModel, check_supported, load_dtype, load_model
from .progress import progress_bar
from .results import GenerationResult, Ranking
from .runner import FLOAT16_SAFE_ALPHA, Runner

__all__ = ["FLOAT16_SAFE_ALPHA", "Directer"]

Messages = Sequence[Mapping[str, str]]
Prompt = Union[str, Messages]
Instructions = Union[str, Sequence[str], None]


class Directer:
    """DIRECTER decoding for a Hugging Face causal LM.

    >>> d = Directer.from_pretrained()                      # the bundled SmolLM2-135M-Instruct
    >>> r = d.generate("Write a haiku about autumn.", "Do not use any commas.", max_new_tokens=40)
    >>> print(r.text, r.stats.accepted)

    ``generate`` takes one prompt (a task string or chat messages) with its instruction strings, or a
    list of prompts with one instruction entry per prompt, and returns one :class:`GenerationResult`
    or a list. Each instruction is steered where its text occurs in the prompt, or appended to the
    user message after a blank line when it does not.

    ``cache_tokens`` and ``cache_memory`` bound the key/value cache: the tokens (prompt plus response)
    one sequence may hold, and the share of the memory free after loading that the cache may take
    (default: 0.9 on a CUDA device, no limit elsewhere). A request that cannot fit is refused before
    decoding.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        alpha: float = 100.0,
        beta: float = 0.5,
        mode: str = "paper",
        method: str = "directer",
        layers: Sequence[int] | None = None,
        plausibility_filter: bool = False,
        gate: bool = True,
        max_new_tokens: int = 256,
        trial_batching: str | None = None,
        probe_batch_size: int | None = None,
        speculate: str = "auto",
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        seed: int | None = None,
        model_name: str | None = None,
        cache_tokens: int | None = None,
        cache_memory: float | None = None,
    ):
        check_supported(model)
        problem = budget_problem(cache_tokens, cache_memory)
        if problem:
            raise UsageError(problem)
        self.model = model
        self.tokenizer = tokenizer
        self.config = SteeringConfig(
            alpha=alpha, beta=beta, mode=mode, method=method, layers=tuple(layers) if layers is not None else None,
            plausibility_filter=plausibility_filter, gate=gate, max_new_tokens=max_new_tokens, trial_batching=trial_batching, probe_batch_size=probe_batch_size,
            speculate=speculate, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed,
        )
        self.model_name = model_name or getattr(model.config, "_name_or_path", None) or model.config.model_type
        self.runner = Runner(model, tokenizer, self.model_name)  # settings -> engine -> results
        self.runner.cache_tokens, self.runner.cache_memory = cache_tokens, cache_memory
        self.runner.guard_float16(self.config.policy())

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = None,
        device: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[Any, Any] | None = None,
        offload_folder: str | Path | None = None,
        **kwargs: Any,
    ) -> "Directer":
        """Load a model (``None``: the bundled model; a Hub id, a local folder or a ``.gguf`` file) and wrap it.

        ``dtype="auto"`` is bfloat16 on a GPU that has it and float32 elsewhere, and float32 in reference
        mode (what the released code runs, with ``eager`` attention, the default ``attn_implementation``
        there; ``sdpa`` otherwise). ``device_map`` (``"auto"``, ``"balanced"``, ``"sequential"`` or a
        dict of module names to devices, with ``max_memory`` and ``offload_folder``) spreads a model too
        large for one device over several, through accelerate as transformers does.
        """
        if attn_implementation is None:
            attn_implementation = "eager" if kwargs.get("mode") == "reference" else "sdpa"
        loaded: LoadedModel = load_model(model, dtype=load_dtype(dtype, kwargs.get("mode")),
                                         attn_implementation=attn_implementation, device=device, device_map=device_map,
                                         max_memory=max_memory, offload_folder=offload_folder)
        return cls(loaded.model, loaded.tokenizer, model_name=loaded.name, **kwargs)

    # -- public API -------------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt | Sequence[Prompt],
        instructions: Instructions | Sequence[Instructions] = None,
        *,
        system: str | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        ranking: Ranking | str | Path | None = None,
        occurrence: int | Sequence[int] = 0,
        progress: bool = False,
        append_missing: bool = True,
        **overrides: Any,
    ) -> GenerationResult | list[GenerationResult]:
        """Generate for one prompt or a list of prompts.

        ``overrides`` replace configuration fields for this call (``alpha``, ``beta``, ``method``, ...),
        sampling included: ``temperature=0.7, top_p=0.9, seed=1`` (``temperature=0``, the default, is
        greedy decoding; a sampled call without a seed draws one and records it in each result).
        ``ranking`` reuses a layer ranking (an object or a JSON file) instead of ranking each prompt.
        An instruction is looked for in the prompt ignoring case and spacing; one that is not there is
        appended after a blank line (``result.appended_instructions``), or is an error with
        ``append_missing=False``. ``instructions="system"`` steers the system message as a whole (``system=``
        or a system message in the chat messages): the way to steer chat traffic whose rules live there;
        ``instructions="auto"`` finds the constraint sentences of the last user message by rule.
        """
        single = _is_single_prompt(prompt)
        prompts: list[Prompt] = [prompt] if single else list(prompt)  # type: ignore[list-item]
        if single:
            per_prompt = [instructions]
        elif instructions is None or isinstance(instructions, str):
            per_prompt = [instructions] * len(prompts)
        else:
            per_prompt = list(instructions)
            if len(per_prompt) != len(prompts):
                raise UsageError(
                    f"{len(prompts)} prompts but {len(per_prompt)} instruction entries: give one entry per prompt "
                    "(a string or a list of strings)"
                )
        config = self._config(max_new_tokens, overrides)
        prepared = [self.prepare(p, i, system=system, occurrence=occurrence, config=config, append_missing=append_missing)
                    for p, i in zip(prompts, per_prompt)]
        results = self.generate_prepared(prepared, config=config, batch_size=batch_size, ranking=ranking, progress=progress)
        return results[0] if single else results

    def prepare(self, prompt: Prompt, instructions: Instructions = None, *, system: str | None = None,
                occurrence: int | Sequence[int] = 0, config: SteeringConfig | None = None,
                chat_template: bool | None = None, append_missing: bool = True) -> PreparedPrompt:
        """Render one prompt (with the chat template unless ``chat_template=False``) and locate its spans."""
        config = config or self.config
        instr, occurrence = resolve_instructions(prompt, instructions, method=config.method, occurrence=occurrence)
        scope = "system" if asks_for(instr, SYSTEM_INSTRUCTIONS) else "messages"  # the system message as a whole
        prepared = prepare_prompt(self.tokenizer, prompt, [] if scope == "system" else instr, system=system,
                                  mode=config.mode, occurrence=occurrence, chat_template=chat_template,
                                  append_missing=append_missing, scope=scope)
        if not prepared.spans and asks_for(instructions, AUTO_INSTRUCTIONS):  # decoded unsteered, and said so
            prepared.notes.append(NOTHING_FOUND)
        self.check_length(len(prepared.input_ids), config.max_new_tokens)
        return prepared

    def generate_prepared(
        self,
        prepared: Sequence[PreparedPrompt],
        *,
        config: SteeringConfig | None = None,
        batch_size: int = 8,
        ranking: Ranking | str | Path | None = None,
        progress: bool = False,
        max_new_tokens: Sequence[int] | None = None,
        on_tokens: Callable[[int, list[int], bool], None] | None = None,
        on_result: Callable[[int, GenerationResult], None] | None = None,
        sample_indices: Sequence[int] | None = None,
        stops: Sequence[Callable[[list[int]], bool] | None] | None = None,
        top_logprobs: int = 0,
        on_logprobs: Callable[[int, list[float], list], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate for prompts already rendered by :meth:`prepare`, ``batch_size`` at a time.

        Every method runs on the continuous engine: ``batch_size`` prompts decode at once and a finished
        one is replaced by the next (reference mode decodes one at a time, as the released code does). ``max_new_tokens`` gives each
        prompt its own limit; ``on_tokens(index, token_ids, done)`` is called whenever a prompt gains a
        token (streaming), ``on_result(index, result)`` as soon as a prompt is finished.

        Per prompt, for serving: ``sample_indices`` (which sample of its prompt a row is: its random
        stream), ``stops`` (``stop(token_ids) -> bool`` ends the row with finish reason ``"stop"``);
        ``top_logprobs`` records the raw model's most likely tokens per step; ``on_logprobs(index,
        raw_logprobs, top_logprobs)`` is called just before each ``on_tokens``.
        """
        config = (config or self.config).seeded()
        if batch_size < 1:
            raise UsageError(f"invalid batch size {batch_size}: it must be >= 1")
        fixed = self._load_ranking(ranking)
        limits = list(max_new_tokens) if max_new_tokens else [None] * len(prepared)
        for p, n in zip(prepared, limits):
            if n is not None and n < 1:
                raise UsageError(f"invalid max_new_tokens {n}: it must be >= 1")
            self.check_length(len(p.input_ids), n or config.max_new_tokens)
        samples = list(sample_indices) if sample_indices else [0] * len(prepared)
        stop_list = list(stops) if stops else [None] * len(prepared)
        requests = [
            DecodeRequest(p.input_ids, p.positions, fixed, n, k, stop)
            for p, n, k, stop in zip(prepared, limits, samples, stop_list)
        ]
        bar = progress_bar(len(prepared), enabled=progress)
        results: list[GenerationResult | None] = [None] * len(prepared)

        def on_event(i: int, out: DecodeOutput, done: bool) -> None:
            if on_logprobs is not None:
                on_logprobs(i, out.raw_logprobs or [], out.top_logprobs or [])
            if on_tokens is not None:
                on_tokens(i, out.token_ids, done)
            if done:
                results[i] = self.runner.result(prepared[i], out, config)
                if on_result is not None:
                    on_result(i, results[i])
                if bar is not None:
                    bar.update(1)

        # Every method runs on the continuous engine (batch_size prompts at once, a finished one replaced
        # by the next); reference mode on the released code's sequential decoding.
        self.runner.decode(requests, config, batch_size=batch_size, top_logprobs=top_logprobs, on_event=on_event)
        if bar is not None:
            bar.close()
        return results

    def generate_ids(
        self,
        input_ids: Sequence[Sequence[int]],
        positions: Sequence[Sequence[int]],
        *,
        ranking: Ranking | None = None,
        **overrides: Any,
    ) -> list[list[int]]:
        """Low-level: steer the given prompt positions of token-id prompts (one batch); return generated ids."""
        config = self._config(None, overrides).seeded()
        for ids in input_ids:
            self.check_length(len(ids), config.max_new_tokens)
        requests = [DecodeRequest(list(ids), list(pos), ranking) for ids, pos in zip(input_ids, positions)]
        outputs = self.runner.decode(requests, config, batch_size=max(1, len(requests)))
        return [o.token_ids for o in outputs]

    # -- internals --------------------------------------------------------------------------------

    def _config(self, max_new_tokens: int | None, overrides: Mapping[str, Any]) -> SteeringConfig:
        unknown = set(overrides) - set(SteeringConfig.__dataclass_fields__)
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(sorted(unknown))}: see SteeringConfig for valid names")
        changes = dict(overrides)
        if max_new_tokens is not None:
            changes["max_new_tokens"] = max_new_tokens
        if "layers" in changes and changes["layers"] is not None:
            changes["layers"] = tuple(changes["layers"])
        return replace(self.config, **changes) if changes else self.config

    def eos_token_ids(self, mode: str | None = None) -> set[int]:
        """Paper mode stops at every end-of-sequence id the model declares; reference mode at the tokenizer's only."""
        return set(self.runner.eos_token_ids(replace(self.config, mode=mode or self.config.mode, ignore_eos=False)))

    def check_length(self, prompt_len: int, max_new_tokens: int) -> None:
        if prompt_len < 2:
            raise UsageError(f"prompt too short ({prompt_len} token): DIRECTER needs at least 2 prompt tokens")
        ctx = getattr(self.model.config.get_text_config(decoder=True), "max_position_embeddings", None)
        if ctx is not None and prompt_len + max_new_tokens > ctx:
            raise UsageError(
                f"prompt ({prompt_len} tokens) plus max-new-tokens ({max_new_tokens}) exceeds the model's context "
                f"length ({ctx}): shorten the prompt or lower --max-new-tokens"
            )

    def _load_ranking(self, ranking: Ranking | str | Path | None) -> Ranking | None:
        num_layers = self.model.config.get_text_config(decoder=True).num_hidden_layers
        if ranking is None or isinstance(ranking, Ranking):
            if ranking is not None and ranking.num_layers != num_layers:
                raise UsageError(f"the ranking has {ranking.num_layers} layers but the model has {num_layers}")
            return ranking
        return Ranking.load(ranking, num_layers=num_layers)


def _is_single_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, Sequence) and prompt and isinstance(prompt[0], Mapping):
        return True  # one chat (a list of messages)
    return False


