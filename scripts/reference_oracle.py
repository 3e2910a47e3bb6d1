#!/usr/bin/env python3
"""Run the authors' released DIRECTER code as an oracle for ``mode="reference"``.

Run this under a Python environment that has the authors' pinned stack (transformers==4.52.1),
NOT the project's venv, and point ``--authors-src`` at a folder that contains their ``src`` package
(a checkout of the public repository mjk0618/directer). Their code is imported from there; nothing of
it lives in this repository.

    /tmp/venv452/bin/python scripts/reference_oracle.py --authors-src /tmp/authors/directer_ref \
        --model-dir MODEL_DIR --prompts scripts/reference_prompts.jsonl --out /tmp/oracle.jsonl \
        --max-new-tokens 48

Per prompt record {"id", "task", "instruction"} it builds the query as their run_directer.py does
(``f"{task}\\n\\n{instruction}"``), calls their ``prepare_prompt`` / ``get_indices_to_scale`` /
``DirecterGenerator(key_scale_factor=100, plausibility=0.5, max_new_tokens=N)`` / ``configure`` /
``generate`` and writes one JSON line with the generated token ids (recorded from the list their
``generate`` passes to ``tokenizer.decode``), the text, the prompt ids, their span (start, end), the
seconds, and a per-step trace and the layer ranking read by wrapping (not changing) three of the
generator's methods.

The model is loaded in float32 with eager attention (their ``load_model_and_tokenizer`` loads
bfloat16 on cuda, so it is not used). A model folder written by transformers 5 (``rope_parameters``
in config.json, ``TokenizersBackend`` tokenizer class) is presented to transformers 4 through a
shim folder of symlinks with a translated config, so that the weights and tokenizer are the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


class RecordingTokenizer:
    """Delegates everything to the real tokenizer and records the id lists passed to ``decode``."""

    def __init__(self, tokenizer):
        object.__setattr__(self, "_tok", tokenizer)
        object.__setattr__(self, "decoded", [])

    def decode(self, ids, *args, **kwargs):
        self.decoded.append([int(i) for i in ids])
        return self._tok.decode(ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)


def transformers4_model_dir(model_dir: Path) -> Path:
    """Return ``model_dir``, or a shim folder whose config/tokenizer_config transformers 4.x understands."""
    config = json.loads((model_dir / "config.json").read_text())
    tok_path = model_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_path.read_text()) if tok_path.is_file() else {}
    needs_shim = "rope_parameters" in config or tok_config.get("tokenizer_class") == "TokenizersBackend"
    if not needs_shim:
        return model_dir
    shim = Path(tempfile.mkdtemp(prefix="directer_oracle_model_"))
    for f in model_dir.iterdir():
        if f.name not in ("config.json", "tokenizer_config.json"):
            (shim / f.name).symlink_to(f.resolve())
    if "rope_parameters" in config:
        rope = dict(config.pop("rope_parameters"))
        config["rope_theta"] = rope.pop("rope_theta")
        config["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    if "dtype" in config and "torch_dtype" not in config:
        config["torch_dtype"] = config.pop("dtype")
    (shim / "config.json").write_text(json.dumps(config, indent=2))
    if tok_config:
        if tok_config.get("tokenizer_class") == "TokenizersBackend":
            tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        tok_config.pop("backend", None)
        (shim / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    print(f"[oracle] transformers-5 model folder shimmed for transformers 4 at {shim}", file=sys.stderr)
    return shim


def instrument(gen) -> dict:
    """Wrap three generator methods (calling the originals) to record ranking and per-step decisions."""
    info = {"ranking": None, "ranking_scores": None, "steps": []}
    orig_skip, orig_plaus, orig_rank = gen._can_skip_steering, gen._is_plausible, gen._rank_layers

    def can_skip(raw_logits, ranked_layers, *a, **k):
        result = orig_skip(raw_logits, ranked_layers, *a, **k)
        info["steps"].append({"skipped": bool(result), "trials": 0, "accepted": None})
        return result

    def is_plausible(raw_logits, scaled_logits):
        result = orig_plaus(raw_logits, scaled_logits)
        step = info["steps"][-1]
        step["trials"] += 1
        if result:
            step["accepted"] = step["trials"]
        return result

    def rank_layers(*a, **k):
        ranked = orig_rank(*a, **k)
        info["ranking"] = [int(layer) for layer in ranked]
        info["ranking_scores"] = [float(v) for v in ranked.values()]
        return ranked

    gen._can_skip_steering, gen._is_plausible, gen._rank_layers = can_skip, is_plausible, rank_layers
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--authors-src", required=True, help="folder containing the authors' `src` package")
    ap.add_argument("--model-dir", required=True, help="model folder (config.json, model.safetensors, tokenizer)")
    ap.add_argument("--prompts", required=True, help="JSONL of {id, task, instruction}")
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.authors_src))
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from src import DirecterGenerator, get_indices_to_scale, prepare_prompt  # the authors' package

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = transformers4_model_dir(Path(args.model_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    # Greedy decoding, as their load_model_and_tokenizer sets it.
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.update(temperature=None, top_p=None, top_k=None, do_sample=False)

    records = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    if args.limit:
        records = records[: args.limit]
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}
    print(f"[oracle] {meta}", file=sys.stderr)

    with open(args.out, "w") as out:
        for rec in records:
            task, instruction = rec["task"], rec["instruction"]
            query = f"{task}\n\n{instruction}"  # as run_directer.py
            rtok = RecordingTokenizer(tokenizer)
            prompt = prepare_prompt(query, tokenizer)
            start_idx, end_idx = get_indices_to_scale(prompt, instruction, tokenizer)
            gen = DirecterGenerator(
                model, rtok, key_scale_factor=100.0, plausibility=0.5, max_new_tokens=args.max_new_tokens
            )
            gen.configure(start_idx, end_idx)
            info = instrument(gen)
            t0 = time.perf_counter()
            text = gen.generate(prompt)
            seconds = time.perf_counter() - t0
            token_ids = rtok.decoded[-1]
            row = {
                "id": rec.get("id"),
                "task": task,
                "instruction": instruction,
                "query": query,
                "prompt_token_ids": prompt.input_ids[0].tolist(),
                "span": [int(start_idx), int(end_idx)],
                "token_ids": token_ids,
                "text": text,
                "seconds": seconds,
                "max_new_tokens": args.max_new_tokens,
                "ranking": info["ranking"],
                "ranking_scores": info["ranking_scores"],
                "trace": info["steps"],
                "versions": meta,
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            n = max(1, len(token_ids))
            print(
                f"[oracle] {rec.get('id')}: span=({start_idx},{end_idx}) {len(token_ids)} tokens "
                f"{seconds:.1f}s ({seconds / n:.3f} s/token)",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
