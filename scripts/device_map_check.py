"""The bundled model (or --model) loaded with a device map decodes exactly as the same model on one device.

    python scripts/device_map_check.py                       # CPU: one decoder layer in three offloaded to disk
    python scripts/device_map_check.py --split-gpu-cpu       # a GPU machine: layers over cuda:0 and the CPU
    python scripts/device_map_check.py --device-map auto     # accelerate's own placement (all GPUs it sees)

Loads the model twice (plain on --device, and spread by the map), decodes the same IFEval prompts with
`none` and `directer`, prints where each module went, tokens/s of both loads and whether every token
matches. A spread over a GPU and the CPU puts consecutive layers on different devices: the code path of a
model too large for one GPU, on a machine with one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter

import torch

from directer import Directer
from directer.evaluation.tasks.ifeval import load_ifeval
from directer.evaluation.tasks.registry import select


def decode(d: Directer, prompts, method: str):
    from directer.evaluation.runs import prepare_items
    from directer.config import SteeringConfig

    config = SteeringConfig(method=method, max_new_tokens=d.config.max_new_tokens)
    prepared, _ = prepare_items(d, prompts, config)
    start = time.perf_counter()
    results = d.generate_prepared(prepared, config=config, batch_size=len(prepared))
    seconds = time.perf_counter() - start
    return [r.token_ids for r in results], sum(len(r.token_ids) for r in results) / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device-map", default=None, help="auto, balanced, sequential or a JSON object (default: see above)")
    p.add_argument("--split-gpu-cpu", action="store_true", help="first half of the layers on cuda:0, the rest on the CPU")
    p.add_argument("--sample", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    a = p.parse_args()
    prompts = select(load_ifeval(), sample=a.sample, seed=0, what="IFEval prompts")
    plain = Directer.from_pretrained(a.model, device=a.device, dtype=a.dtype, max_new_tokens=a.max_new_tokens)
    layers = plain.model.config.num_hidden_layers
    offload = None
    if a.device_map:
        device_map = json.loads(a.device_map) if a.device_map.strip().startswith("{") else a.device_map
    elif a.split_gpu_cpu:
        half = layers // 2
        device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": "cpu", "lm_head": "cpu",
                      **{f"model.layers.{i}": (0 if i < half else "cpu") for i in range(layers)}}
    else:
        device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu",
                      **{f"model.layers.{i}": ("disk" if i % 3 == 1 else "cpu") for i in range(layers)}}
        offload = tempfile.mkdtemp()
    spread = Directer.from_pretrained(a.model, device_map=device_map, offload_folder=offload, dtype=a.dtype,
                                      max_new_tokens=a.max_new_tokens)
    placed = Counter(str(v) for v in spread.model.hf_device_map.values())
    print(f"model {spread.model_name}, {spread.model.dtype}; plain on {a.device}; map: "
          + ", ".join(f"{n} modules on {d}" for d, n in sorted(placed.items())))
    ok = True
    for method in ("none", "directer"):
        a_tokens, a_rate = decode(plain, prompts, method)
        b_tokens, b_rate = decode(spread, prompts, method)
        same = a_tokens == b_tokens
        ok &= same
        print(f"{method}: {len(prompts)} prompts, tokens identical: {same}; {a_rate:.1f} tokens/s plain, "
              f"{b_rate:.1f} tokens/s spread ({b_rate / a_rate:.2f}x)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
