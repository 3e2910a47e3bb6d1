"""PASTA head profiling: score each attention head by steering it alone on held-out IFEval prompts.

PASTA (docs/method.md §7) steers a few selected heads, found by profiling: each head is steered on its own
over a small labelled set and the heads that help most are kept. Here the labelled set is a seeded
sample of IFEval prompts (pick one disjoint from your evaluation sample) scored by the IFEval checkers;
a head's score is its instruction-level loose accuracy minus the unsteered accuracy on the same
prompts. Progress is appended to ``<output>.partial.jsonl`` after every head, so an interrupted
profile resumes where it stopped; the finished profile is the JSON that ``pasta:profile=FILE`` reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from ..api import Directer
from ..errors import UsageError
from .runs import prepare_items
from .tasks.base import EvalItem
from .tasks.ifeval import score_response

__all__ = ["profile_heads"]


def _accuracy(directer: Directer, prompts: Sequence[EvalItem], method: str, max_new_tokens: int,
              batch_size: int) -> float:
    """Instruction-level loose accuracy of ``method`` on the prompts (auto spans, greedy)."""
    config = replace(directer.config, method=method, max_new_tokens=max_new_tokens, plausibility_filter=False)
    prepared, _ = prepare_items(directer, prompts, config)
    results = directer.generate_prepared(prepared, config=config, batch_size=batch_size)
    followed = total = 0
    for p, r in zip(prompts, results):
        s = score_response(p, r.text)
        followed += sum(s.loose)
        total += len(s.loose)
    return followed / max(1, total)


def profile_heads(directer: Directer, prompts: Sequence[EvalItem], output: Path, *, alpha_p: float = 0.01,
                  layers: Sequence[int] | None = None, top_k: int = 16, max_new_tokens: int = 64,
                  batch_size: int = 16, progress: Callable[[int, int], None] | None = None) -> dict:
    """Score every head of ``layers`` (default: all) and write the top ``top_k`` as a PASTA profile."""
    text = directer.model.config.get_text_config(decoder=True)
    num_layers, num_heads = text.num_hidden_layers, text.num_attention_heads
    layers = list(range(num_layers)) if layers is None else list(layers)
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise UsageError(f"--layers {bad} out of range: the model has layers 0..{num_layers - 1}")
    if top_k < 1:
        raise UsageError(f"invalid --top-k {top_k}: it must be >= 1")
    setting = {"model": directer.model_name, "alpha_p": alpha_p, "max_new_tokens": max_new_tokens,
               "prompts": [p.key for p in prompts], "metric": "IFEval instruction-level loose accuracy minus unsteered"}
    partial = output.with_name(output.name + ".partial.jsonl")
    done = _read_partial(partial, setting)
    if not done:
        _append(partial, {"setting": setting})
    if "baseline" not in done:
        done["baseline"] = _accuracy(directer, prompts, "none", max_new_tokens, batch_size)
        _append(partial, {"head": "baseline", "accuracy": done["baseline"]})
    heads = [(layer, head) for layer in layers for head in range(num_heads)]
    tmp_profile = output.with_name(output.name + ".head.json")
    for i, (layer, head) in enumerate(heads):
        key = f"{layer}.{head}"
        if key not in done:
            tmp_profile.write_text(json.dumps({"heads": [[layer, head]]}))
            done[key] = _accuracy(directer, prompts, f"pasta:alpha_p={alpha_p}:profile={tmp_profile}",
                                  max_new_tokens, batch_size)
            _append(partial, {"head": key, "accuracy": done[key]})
        if progress is not None:
            progress(i + 1, len(heads))
    tmp_profile.unlink(missing_ok=True)
    base = done["baseline"]
    scores = sorted(((done[f"{la}.{h}"] - base, la, h) for la, h in heads), key=lambda t: (-t[0], t[1], t[2]))
    profile = {"heads": [[la, h] for _, la, h in scores[:top_k]], "scores": {f"{la}.{h}": s for s, la, h in scores},
               "baseline_accuracy": base, **setting}
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(profile, indent=1) + "\n")
    os.replace(tmp, output)
    return profile


def _read_partial(path: Path, setting: dict) -> dict[str, float]:
    if not path.exists():
        return {}
    done: dict[str, float] = {}
    good: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            path.write_text("".join(x + "\n" for x in good), encoding="utf-8")  # drop a torn last line
            break
        if n == 0 and rec.get("setting") != setting:
            raise UsageError(f"{path} holds a profile with other settings: remove it or use another --output")
        if n:
            done[rec["head"]] = rec["accuracy"]
        good.append(line)
    return done


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
