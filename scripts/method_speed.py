"""Cost of each steering method per generated token, against ``none``, measured in one run.

    python scripts/method_speed.py                                  # the README's 14 configurations
    python scripts/method_speed.py --method none --method directer --method spotlight:filter=1 \\
        --sample 16 --batch-size 16 --max-new-tokens 128 --repeats 2 --json speed.json
    python scripts/method_speed.py --method none --method directer --temperature 0.7   # sampled (top-p 0.9)

Every method decodes the same seeded sample of IFEval prompts (with the spans ``directer eval`` steers)
in the same process, batch by batch, and the order of the methods rotates from one repeat to the next,
so slow drifts of a noisy machine fall on all of them. Every prompt decodes exactly ``--max-new-tokens``
tokens (end-of-sequence ignored) unless ``--stop-at-eos``: with natural lengths a method whose responses
end early leaves fewer rows in its batches and its cost per token moves for that reason alone. Time per
token is a batch's whole wall time (prefill, ranking and decoding) over its generated tokens, the
definition of ``directer eval``'s ``time/token`` column; the ratio to ``none`` is the median over repeats
of per-repeat ratios. The first-token column is the batch's prefill + ranking + first step. On CUDA the
peak memory of each method's batch is reported too (KV caches of the streams included).

Use this when the eval's own time column cannot be compared (methods run in different processes,
sessions or thread settings).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch

from directer import Directer
from directer.evaluation.runs import prepare_items
from directer.evaluation.tasks.ifeval import load_ifeval

TABLE_METHODS = [
    "none", "directer", "static", "static:alpha=3", "static:filter=1", "pasta", "pasta:filter=1",
    "spotlight", "spotlight:filter=1", "instaboost", "instaboost:filter=1", "directer:ranking=reversed",
    "directer:ranking=random:seed=1", "directer:positions=random:seed=1",
]


GENERATE = "model.generate"  # transformers' own greedy decoding of the same batches, for reference


def measure_generate(d: Directer, prepared, batch_size: int, ignore_eos: bool) -> dict:
    """``model.generate`` on the same left-padded batches (first token: a 1-token call), sampling as the
    run's config does."""
    pad = d.runner.pad_id()
    n = d.config.max_new_tokens
    c = d.config
    how = (dict(do_sample=True, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, min_p=c.min_p or None)
           if c.temperature else dict(do_sample=False))
    tokens, seconds, first = 0, 0.0, []
    for start in range(0, len(prepared), batch_size):
        chunk = prepared[start:start + batch_size]
        width = max(len(p.input_ids) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p.input_ids)) + list(p.input_ids) for p in chunk])
        mask = torch.tensor([[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in chunk])
        ids, mask = ids.to(d.model.device), mask.to(d.model.device)
        eos = None if ignore_eos else sorted(d.eos_token_ids())
        t0 = time.perf_counter()
        d.model.generate(ids, attention_mask=mask, **how, max_new_tokens=1, pad_token_id=pad, eos_token_id=eos)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = d.model.generate(ids, attention_mask=mask, **how, max_new_tokens=n,
                               min_new_tokens=n if ignore_eos else 0, pad_token_id=pad, eos_token_id=eos)
        seconds += time.perf_counter() - t0
        new = out[:, width:]
        tokens += int((new != pad).sum()) if not ignore_eos else new.numel()
    return {"tokens": tokens, "seconds": seconds, "first_s": statistics.median(first), "peak_bytes": None}


def measure(d: Directer, prepared, method: str, batch_size: int, ignore_eos: bool) -> dict:
    """Decode every prompt with one method; return its tokens, wall seconds and first-token seconds."""
    if method == GENERATE:
        return measure_generate(d, prepared, batch_size, ignore_eos)
    config = replace(d.config, method=method, ignore_eos=ignore_eos)
    cuda = d.model.device.type == "cuda"
    tokens, seconds, first, peak = 0, 0.0, [], 0
    for start in range(0, len(prepared), batch_size):
        chunk = prepared[start:start + batch_size]
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        results = d.generate_prepared(chunk, config=config, batch_size=len(chunk))
        if cuda:
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated())
        seconds += time.perf_counter() - t0
        tokens += sum(len(r.token_ids) for r in results)
        first.append(max(r.stats.first_token_seconds for r in results))
    return {"tokens": tokens, "seconds": seconds, "first_s": statistics.median(first), "peak_bytes": peak or None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", action="append", dest="methods", help="method spec (repeatable; default: the README's 14)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default=None)
    ap.add_argument("--sample", type=int, default=16, help="seeded IFEval prompts (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--speculate", default="auto", choices=["never", "auto", "always"],
                    help="fold DIRECTER's trials into the raw pass (see SteeringConfig.speculate)")
    ap.add_argument("--trial-batching", default=None, choices=["all", "sequential"],
                    help="all trials of an opening in one forward, or strongest first (default: the engine's auto)")
    ap.add_argument("--stop-at-eos", action="store_true",
                    help="let responses end at EOS (default: every prompt decodes exactly --max-new-tokens "
                         "tokens, so that a method whose responses end early does not look cheaper or dearer "
                         "because fewer rows are left in its batches)")
    ap.add_argument("--generate", action="store_true",
                    help=f"also time {GENERATE} (do_sample=False) on the same batches, as a row of the table")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sample at this temperature (top-p 0.9, seed 0) instead of decoding greedily")
    ap.add_argument("--json", default=None, help="also write the raw measurements here")
    args = ap.parse_args()
    methods = args.methods or TABLE_METHODS
    if "none" not in methods:
        methods = ["none"] + methods
    if len(set(methods)) < len(methods):
        ap.error("a method is given twice")
    if args.generate:
        methods = methods + [GENERATE]

    d = Directer.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens,
                                 speculate=args.speculate, trial_batching=args.trial_batching)
    if args.temperature:
        d.config = replace(d.config, temperature=args.temperature, top_p=0.9, seed=0)
    prompts = load_ifeval(sample=args.sample, seed=args.seed)
    prepared = {}
    for m in methods:  # also validates every spec before anything is timed
        if m == GENERATE:
            prepared[m] = prepared["none"]
            continue
        prepared[m], _ = prepare_items(d, prompts, replace(d.config, method=m))
    d.generate_prepared(prepared["none"][:2], config=replace(d.config, method="none"), batch_size=2)  # warm-up

    rows = []
    for rep in range(args.repeats):
        k = rep % len(methods)
        for m in methods[k:] + methods[:k]:
            r = measure(d, prepared[m], m, args.batch_size, not args.stop_at_eos)
            rows.append({"repeat": rep, "method": m, **r})
            print(f"[{rep}] {m:36s} {r['tokens']:6d} tok {r['seconds']:8.1f} s "
                  f"{1000 * r['seconds'] / max(1, r['tokens']):7.1f} ms/token", file=sys.stderr)

    def per_token(row: dict) -> float:
        return row["seconds"] / max(1, row["tokens"])

    base = {r["repeat"]: r for r in rows if r["method"] == "none"}
    print(f"\nmodel {d.model_name}, {args.dtype}, device {d.model.device}, torch threads {torch.get_num_threads()}; "
          f"{len(prompts)} IFEval prompts (seed {args.seed}), batch {args.batch_size}, "
          f"{'up to ' if args.stop_at_eos else 'exactly '}{args.max_new_tokens} new tokens, {args.repeats} repeats, "
          f"speculate {args.speculate}, "
          f"{f'temperature {args.temperature:g}, top-p 0.9' if args.temperature else 'greedy'}\n")
    mem = any(r["peak_bytes"] for r in rows)
    print("| method | ms/token | vs none | first token | vs none |" + (" peak memory |" if mem else ""))
    print("|---|---|---|---|---|" + ("---|" if mem else ""))
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ms = 1000 * statistics.median(per_token(r) for r in mine)
        ratio = statistics.median(per_token(r) / per_token(base[r["repeat"]]) for r in mine)
        first = statistics.median(r["first_s"] for r in mine)
        first_ratio = statistics.median(r["first_s"] / base[r["repeat"]]["first_s"] for r in mine)
        line = f"| `{m}` | {ms:.1f} | {ratio:.2f}× | {1000 * first:.0f} ms | {first_ratio:.2f}× |"
        if mem:
            line += f" {max(r['peak_bytes'] or 0 for r in mine) / 2**20:.0f} MiB |"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "methods": methods, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
