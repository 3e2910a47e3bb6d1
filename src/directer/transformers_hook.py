"""DIRECTER as a ``custom_generate`` callable for ``model.generate`` (transformers >= 4.56).

    out = model.generate(input_ids, attention_mask=mask, max_new_tokens=64,
                         custom_generate=directer.custom_generate, instruction_spans=[(12, 27)])

``model.generate`` prepares inputs, the generation config and the length limits, then hands over to
this loop. Decoding is greedy, or sampled with ``do_sample=True`` and the generation config's
``temperature``, ``top_k``, ``top_p`` and ``min_p`` (transformers' own warpers, in ``generate``'s order;
the draws are seeded by ``seed=``, else by torch's global generator, so ``torch.manual_seed`` before
the call reproduces it). One beam, no other logits processor: a setting it cannot honour that the
caller passed (``num_beams=2``, ``repetition_penalty``, ``typical_p``, ...) is refused with an error
naming it; one that only the model's own generation config sets is ignored with a warning naming it.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from .config import SteeringConfig
from .engine.requests import DecodeRequest
from .errors import UsageError
from .models.loading import check_supported
from .results import Ranking
from .runner import Runner

__all__ = ["custom_generate"]

Span = Sequence[int]  # (start, end), end exclusive, in input_ids columns


def custom_generate(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    logits_processor: Any = None,
    stopping_criteria: Any = None,
    generation_config: Any = None,
    synced_gpus: bool = False,
    streamer: Any = None,
    *,
    instruction_spans: Sequence[Span] | Sequence[Sequence[Span]] | None = None,
    alpha: float = 100.0,
    beta: float = 0.5,
    mode: str = "paper",
    method: str = "directer",
    plausibility_filter: bool = False,
    ranking: Ranking | None = None,
    seed: int | None = None,
    **model_kwargs: Any,
) -> torch.LongTensor:
    """DIRECTER decoding inside ``model.generate``; returns prompt plus generated ids, right-padded.

    ``method`` takes any ``--method`` spec (``"pasta:filter=1"``, ``"static:alpha=3"``, ...).

    ``instruction_spans``: ``[(start, end), ...]`` for every row, or one such list per row, in the
    columns of ``input_ids`` as passed (left padding included).
    """
    check_supported(model)
    batch, width = input_ids.shape
    max_new = (generation_config.max_length - width) if generation_config is not None else 20
    _check_greedy(model, generation_config, logits_processor)
    config = SteeringConfig(alpha=alpha, beta=beta, mode=mode, method=method, plausibility_filter=plausibility_filter,
                            max_new_tokens=max(1, max_new), **_sampling(generation_config, seed))
    mask = model_kwargs.get("attention_mask")
    mask = torch.ones_like(input_ids) if mask is None else mask
    spans = _per_row_spans(instruction_spans, batch, method)

    eos = getattr(generation_config, "eos_token_id", None)
    eos_ids = frozenset() if eos is None else frozenset(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    pad = getattr(generation_config, "pad_token_id", None)
    pad = pad if pad is not None else (min(eos_ids) if eos_ids else 0)

    requests = []
    for b in range(batch):
        keep = mask[b].bool()
        offset = int((~keep).nonzero().max()) + 1 if (~keep).any() else 0  # left padding
        ids = input_ids[b, keep].tolist()
        if len(ids) < 2:
            raise UsageError(f"row {b} has {len(ids)} prompt token(s): DIRECTER needs at least 2")
        positions = sorted({c - offset for s, e in spans[b] for c in range(s, e)})
        if any(not 0 <= c < len(ids) for c in positions):
            raise UsageError(f"instruction span {spans[b]} of row {b} lies outside its prompt (columns {offset}..{width - 1})")
        requests.append(DecodeRequest(ids, positions, ranking))

    runner = Runner(model, None, getattr(model.config, "_name_or_path", "") or model.config.model_type,
                    eos_token_ids=eos_ids, pad_token_id=int(pad))
    outputs = runner.decode(requests, config, batch_size=batch)  # all rows at once
    longest = max(len(o.token_ids) for o in outputs)
    generated = torch.full((batch, longest), int(pad), dtype=input_ids.dtype, device=input_ids.device)
    for b, o in enumerate(outputs):
        generated[b, : len(o.token_ids)] = torch.tensor(o.token_ids, dtype=input_ids.dtype)
    return torch.cat([input_ids, generated], dim=1)


def _per_row_spans(spans: Any, batch: int, method: str) -> list[list[tuple[int, int]]]:
    if not spans:
        if method != "none":
            raise UsageError("custom_generate needs instruction_spans=[(start, end), ...] (token columns of the instruction)")
        return [[] for _ in range(batch)]
    first = spans[0]
    if len(first) == 2 and all(isinstance(x, int) for x in first):
        rows = [list(spans)] * batch  # one list for every row
    else:
        rows = [list(s) for s in spans]
    if len(rows) != batch:
        raise UsageError(f"instruction_spans has {len(rows)} rows but the batch has {batch}")
    return [[(int(s), int(e)) for s, e in r] for r in rows]


def _sampling(generation_config: Any, seed: int | None) -> dict[str, Any]:
    """The sampling fields of SteeringConfig from the generation config (greedy without do_sample)."""
    if generation_config is None or not getattr(generation_config, "do_sample", False):
        return {}
    temperature = getattr(generation_config, "temperature", None)
    temperature = 1.0 if temperature is None else float(temperature)
    if temperature == 0:
        raise UsageError("do_sample=True with temperature=0: use do_sample=False for greedy decoding")
    if seed is None:  # from torch's global generator: torch.manual_seed(...) before generate reproduces it
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    return dict(temperature=temperature, top_k=int(getattr(generation_config, "top_k", None) or 0),
                top_p=float(getattr(generation_config, "top_p", None) or 1.0),
                min_p=float(getattr(generation_config, "min_p", None) or 0.0), seed=seed)


# Settings of a generation config that DIRECTER decoding cannot honour, with the value that means
# "off". Temperature, top_k, top_p and min_p are honoured with do_sample; other warpers are not.
_NOT_GREEDY = {
    "num_beams": 1, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None, "num_beam_groups": 1, "num_return_sequences": 1, "penalty_alpha": None,
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "min_length": 0, "min_new_tokens": None, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "exponential_decay_length_penalty": None, "stop_strings": None,
    "guidance_scale": None, "prompt_lookup_num_tokens": None, "assistant_model": None,
}


_HONOURED_WARPERS = ("TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper")


def _check_greedy(model: torch.nn.Module, generation_config: Any, logits_processor: Any) -> None:
    """Refuse what the caller asked for and greedy decoding cannot honour; warn about model defaults."""
    if generation_config is None:
        return
    defaults = getattr(model, "generation_config", None)
    asked, inherited = [], []
    for name, off in _NOT_GREEDY.items():
        value = getattr(generation_config, name, off)
        if value in (off, None) or (name == "min_length" and not value):
            continue
        from_model = defaults is not None and getattr(defaults, name, off) == value
        (inherited if from_model else asked).append(f"{name}={value!r}")
    if any(a.startswith("min_new_tokens=") for a in asked):  # transformers derives min_length from it
        asked = [a for a in asked if not a.startswith("min_length=")]
    if asked:
        raise UsageError(f"directer.custom_generate decodes one beam, greedy or sampled with temperature, top_k, "
                         f"top_p and min_p only, and cannot "
                         f"honour {', '.join(asked)}: drop {'it' if len(asked) == 1 else 'them'} from the call")
    if inherited:
        warnings.warn(f"the model's generation config sets {', '.join(inherited)}; directer.custom_generate "
                      "ignores it", stacklevel=3)
        return
    honoured = _HONOURED_WARPERS if getattr(generation_config, "do_sample", False) else ()
    # With do_sample, generate passes the warpers it built from the config's temperature, top_k, top_p
    # and min_p; these are honoured (rebuilt from the same fields), any other processor is refused.
    others = [p for p in (logits_processor or []) if type(p).__name__ not in honoured]
    if others:
        names = ", ".join(sorted({type(p).__name__ for p in others}))
        raise UsageError(f"directer.custom_generate applies no logits processors and cannot honour {names}: "
                         "drop logits_processor from the call")
