"""``directer`` as an lm-evaluation-harness model: any lm-eval generation task, steered.

Importing this module registers the model ``directer`` with lm-eval (0.4.13), so that
``lm_eval.simple_evaluate(model="directer", ...)`` and ``directer lm-eval --model directer ...`` work.
:class:`DirecterLM` is lm-eval's own ``HFLM`` on the model DIRECTER loaded (the bundled one by
default), with ``generate_until`` decoded by our engine, batched; log-likelihood requests
(multiple-choice tasks) are scored by the raw model, unsteered, as HFLM scores them.

The instruction spans of each request (``instructions=``):

* ``auto`` (default): found by the automatic detector in the user's text; when the task's document has
  IFEval's ``instruction_id_list`` and ``kwargs`` they guide it, with IFEval's rules, exactly as in
  ``directer eval ifeval``;
* ``field:NAME``: the texts in the document's field ``NAME`` (a string or a list of strings);
* a request with no span is decoded unsteered.

With ``--apply_chat_template`` the user's message is rendered by our own chat-template code, so a
request decodes token for token as the same prompt does in ``directer eval``. Stop sequences
(``until``) end a row as soon as they appear and are cut from the text, as HFLM does; ``do_sample``
with ``temperature``, ``top_p``, ``top_k``, ``min_p`` samples with our counter-based draws (seed: the
request's ``seed``, else 0). Other generation kwargs are reported once and ignored.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Sequence

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm.auto import tqdm

from ..autospans import detect_spans, last_occurrences, occurrences
from ..config import SteeringConfig
from ..errors import UsageError
from ..processes import launched, process_device, process_state
from ..methods import parse_layers

__all__ = ["DirecterLM", "request_spans"]

log = logging.getLogger(__name__)
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "seed")
_HANDLED = {"do_sample", *_SAMPLING}


def request_spans(doc: Any, text: str, instructions: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of ``text`` to steer for one request (see the module docstring)."""
    if instructions == "auto":
        if isinstance(doc, dict) and isinstance(doc.get("instruction_id_list"), list):
            # IFEval's documents: IFEval's rules, exactly as `directer eval ifeval` detects them
            return detect_spans(text, doc["instruction_id_list"], doc.get("kwargs"), directives=False)
        return detect_spans(text)
    name = instructions.removeprefix("field:")
    value = doc.get(name) if isinstance(doc, dict) else None
    if value is None:
        raise UsageError(f"instructions=field:{name}: the task's documents have no field {name!r}")
    texts = [value] if isinstance(value, str) else list(value)
    try:
        return last_occurrences(text, texts)
    except ValueError as exc:
        raise UsageError(f"instructions=field:{name}: {exc.args[0][:60]!r} is not in the request's text") from None


@register_model("directer")
class DirecterLM(HFLM):
    """lm-eval's HFLM whose generations are steered by DIRECTER (or any method of ``directer``)."""

    def __init__(self, pretrained: str | None = None, method: str = "directer", alpha: float = 100.0,
                 beta: float = 0.5, mode: str = "paper", layers: str | None = None, instructions: str = "auto",
                 dtype: str = "auto", device: str | None = None, batch_size: int | str | None = None,
                 max_gen_toks: int = 256, **kwargs: Any) -> None:
        if not (instructions == "auto" or str(instructions).startswith("field:")):
            raise UsageError(f"instructions={instructions}: use auto or field:NAME")
        if str(batch_size).startswith("auto"):
            raise UsageError("--batch_size auto is not supported by the directer model: give a number (default 8)")
        # Rows decoded together by the engine; lm-eval passes its --batch_size here.
        batch_size = 8 if batch_size in (None, "") else batch_size
        kwargs.pop("max_batch_size", None)  # only meaningful for batch_size auto
        layer_set = parse_layers(str(layers)) if layers not in (None, "") else None
        config = dict(method=str(method), alpha=float(alpha), beta=float(beta), mode=str(mode), layers=layer_set)
        SteeringConfig(**{k: v for k, v in config.items() if v is not None})  # bad settings fail before loading
        from ..api import Directer

        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line passes cuda:0 unless told otherwise; HFLM then runs where it can too.
            log.warning("directer: device %s requested but CUDA is not available: running on the CPU", device)
            device = None
        # Under accelerate launch / torchrun: one replica per process, on its own device; lm-eval then
        # gives each process its share of the requests and gathers the results (its data parallelism).
        state = process_state(device) if launched() else None
        device = process_device(state, device)
        with state.main_process_first() if state is not None else nullcontext():
            self.directer = Directer.from_pretrained(pretrained or None, dtype=dtype, device=device,
                                                     max_new_tokens=int(max_gen_toks), **config)
        super().__init__(pretrained=self.directer.model, tokenizer=self.directer.tokenizer,
                         batch_size=int(batch_size), max_gen_toks=int(max_gen_toks), **kwargs)
        if state is not None and state.num_processes > 1:
            # HFLM sets up no distribution for a model passed in; this is its own setup for a launched run.
            from accelerate import Accelerator

            self.accelerator = Accelerator()
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.instructions = str(instructions)
        self._chats: dict[str, list[dict[str, str]]] = {}
        self._ignored: set[str] = set()

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        rendered = super().apply_chat_template(chat_history, add_generation_prompt)
        if add_generation_prompt:
            # generate_until renders the messages itself (our template code), so remember them.
            self._chats[rendered] = [dict(m) for m in chat_history]
        return rendered

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        plans = [self._plan(req, eos) for req in requests]
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="directer generate_until")
        groups: dict[tuple, list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(tuple(sorted(plan["sampling"].items())), []).append(i)
        for key, indices in groups.items():
            config = replace(self.directer.config, **dict(key))
            prepared = [self._prepare(requests[i], plans[i], config) for i in indices]

            def finished(j: int, result: Any, indices: Sequence[int] = indices) -> None:
                i = indices[j]
                text = postprocess_generated_text(generation=result.text, stop=plans[i]["until"], think_end_token=None)
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(1)

            self.directer.generate_prepared(prepared, config=config, batch_size=self.batch_size,
                                            max_new_tokens=[plans[i]["max_gen_toks"] for i in indices],
                                            stops=[self._stop(plans[i]["until"]) for i in indices], on_result=finished)
        bar.close()
        return [t if t is not None else "" for t in out]

    def _plan(self, req: Instance, eos: str) -> dict[str, Any]:
        context, gen_kwargs = req.args
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen_toks = int(kwargs.pop("max_gen_toks"))
        sampling: dict[str, Any] = {}
        if kwargs.get("do_sample") and float(kwargs.get("temperature") or 0) > 0:
            sampling = {k: kwargs[k] for k in _SAMPLING if kwargs.get(k) is not None}
            sampling.setdefault("seed", 0)
        else:
            sampling = {"temperature": 0.0}
        for name in set(kwargs) - _HANDLED - self._ignored:
            log.warning("directer: generation kwarg %r is not supported and is ignored", name)
            self._ignored.add(name)
        return {"context": context, "until": until, "max_gen_toks": max_gen_toks, "sampling": sampling}

    def _prepare(self, req: Instance, plan: dict[str, Any], config: SteeringConfig):
        context = plan["context"]
        chat = self._chats.get(context)
        if chat is not None and len(chat) == 1 and chat[0].get("role") == "user":
            prompt: Any = chat[0]["content"]  # one user message: rendered exactly as `directer eval` renders it
            text, template = prompt, None
        elif chat is not None:
            prompt, text, template = chat, chat[-1]["content"], None
        else:
            prompt = text = context  # no chat template asked for: the context as it is
            template = False
        ranges = request_spans(req.doc, text, self.instructions)
        spans = [text[a:b] for a, b in ranges]
        if not spans:
            return self.directer.prepare(prompt, None, config=replace(config, method="none"), chat_template=template)
        return self.directer.prepare(prompt, spans, occurrence=occurrences(text, ranges), config=config,
                                     chat_template=template, append_missing=False)

    def _stop(self, until: list[str]):
        strings = [s for s in until if s]
        if not strings:
            return None
        # Decoding the whole response every step would be quadratic: a stop string is looked for in the
        # last tokens only (enough tokens for the longest string, at one character per token).
        tail = max(len(s) for s in strings) + 4
        decode = self.tokenizer.decode

        def stop(token_ids: list[int]) -> bool:
            text = decode(token_ids[-tail:], skip_special_tokens=True)
            return any(s in text for s in strings)

        return stop
