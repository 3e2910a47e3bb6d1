"""What a generated token costs the host: aten ops, the kernels among them (the ops that are not views or
bare allocations: a GPU's launches) and synchronisations, counted (not timed) for ``model.generate``, our ``none`` and steering methods.

    python scripts/host_cost.py                                     # 16 held-out prompts, 32 tokens, batch 16
    python scripts/host_cost.py --method directer --method pasta --sample 4 --max-new-tokens 8
    python scripts/host_cost.py --forward-cost cuda                 # speculation chosen as on a GPU

The prompts are a seeded IFEval sample (seed 1 by default, disjoint in spirit from the seed-0 samples of
the speed tables), decoded greedily in one batch of ``--batch-size``, every prompt exactly
``--max-new-tokens`` tokens (end-of-sequence ignored). Counts are deterministic for a given model, prompt
sample and code: compare them across commits, not across machines. See
:mod:`directer.evaluation.host_cost` for what counts as a synchronisation.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from directer import Directer
from directer.engine.cost_model import DEFAULTS
from directer.evaluation.host_cost import count_host_cost
from directer.evaluation.runs import prepare_items
from directer.evaluation.tasks.ifeval import load_ifeval

GENERATE = "model.generate"


def generate_cost(d: Directer, prepared, n: int, temperature: float = 0.0):
    pad = d.runner.pad_id()
    width = max(len(p.input_ids) for p in prepared)
    ids = torch.tensor([[pad] * (width - len(p.input_ids)) + list(p.input_ids) for p in prepared])
    mask = torch.tensor([[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in prepared])
    ids, mask = ids.to(d.model.device), mask.to(d.model.device)
    with count_host_cost() as cost:
        sampling = dict(do_sample=True, temperature=temperature, top_p=0.9, top_k=0) if temperature else {"do_sample": False}
        out = d.model.generate(ids, attention_mask=mask, **sampling, max_new_tokens=n, min_new_tokens=n,
                               pad_token_id=pad, eos_token_id=None)
    return cost, out[:, width:].numel()


def method_cost(d: Directer, prepared, method: str, batch_size: int, speculate: str = "never"):
    config = replace(d.config, method=method, ignore_eos=True, speculate=speculate)
    with count_host_cost() as cost:
        results = d.generate_prepared(prepared, config=config, batch_size=batch_size)
    return cost, sum(len(r.token_ids) for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", action="append", dest="methods", help="method spec (repeatable; default: directer)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default=None)
    ap.add_argument("--sample", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--top", type=int, default=0, help="also list the N most frequent ops and every sync op")
    ap.add_argument("--matmul", default="stock", choices=["stock", "transposed", "auto"],
                    help="the engine's multi-row linears (default stock: what a GPU runs; the CPU's W @ x.T "
                         "products add a transpose and a copy per linear)")
    ap.add_argument("--speculate", default="auto", choices=["never", "auto", "always"],
                    help="fold a sequence's trials into its raw row's forward (always: every step; auto, the "
                         "default: where this device's forward costs say it pays)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sample at this temperature (seed 0, top-p 0.9) instead of decoding greedily; "
                         "model.generate samples likewise")
    ap.add_argument("--forward-cost", default="device", choices=["device", *DEFAULTS],
                    help="the cost table row behind --speculate auto (default: this device's; cuda: the choices a "
                         "GPU run makes, whose host cost these counts stand for)")
    ap.add_argument("--nucleus", default="sort", choices=["sort", "candidates", "auto"],
                    help="how top-p warps sampled rows (default sort: one batched sort, what a GPU runs; "
                         "candidates: row by row, a CPU's choice, one device read per row)")
    args = ap.parse_args()
    methods = ["none"] + [m for m in (args.methods or ["directer"]) if m != "none"]

    d = Directer.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens)
    d.runner.matmul = args.matmul
    d.runner.nucleus = args.nucleus
    d.runner.forward_cost = None if args.forward_cost == "device" else DEFAULTS[args.forward_cost]
    if args.temperature:
        d.config = replace(d.config, temperature=args.temperature, top_p=0.9, seed=0)
    prompts = load_ifeval(sample=args.sample, seed=args.seed)
    prepared = {m: prepare_items(d, prompts, replace(d.config, method=m))[0] for m in methods}
    d.generate_prepared(prepared["none"][:2], config=replace(d.config, method="none", max_new_tokens=2))  # warm-up

    rows = [(GENERATE, *generate_cost(d, prepared["none"], args.max_new_tokens, args.temperature))]
    rows += [(m, *method_cost(d, prepared[m], m, args.batch_size, args.speculate)) for m in methods]
    print(f"model {d.model_name}, {args.dtype}, device {d.model.device}; {len(prompts)} IFEval prompts "
          f"(seed {args.seed}), batch {args.batch_size}, exactly {args.max_new_tokens} new tokens, matmul {args.matmul}, "
          f"speculate {args.speculate} (forward costs: {args.forward_cost}), "
          f"{f'temperature {args.temperature:g}, top-p 0.9 ({args.nucleus})' if args.temperature else 'greedy'}\n")
    base = {name: cost.per(tokens) for name, cost, tokens in rows}
    print("| | aten ops / token | vs generate | vs none | kernels / token | vs generate | vs none | syncs / token "
          "| host-to-device copies / token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cost, tokens in rows:
        per = cost.per(tokens)
        print(f"| `{name}` | {per['ops']:.0f} | {per['ops'] / base[GENERATE]['ops']:.2f}× | "
              f"{per['ops'] / base['none']['ops']:.2f}× | {per['kernels']:.0f} | "
              f"{per['kernels'] / base[GENERATE]['kernels']:.2f}× | {per['kernels'] / base['none']['kernels']:.2f}× | "
              f"{per['syncs']:.2f} | {per['copies']:.2f} |")
    if args.top:
        for name, cost, tokens in rows:
            print(f"\n{name}: sync ops {dict(cost.sync_ops)}")
            print("  " + ", ".join(f"{op} {n / max(1, tokens):.1f}" for op, n in cost.by_op.most_common(args.top)))


if __name__ == "__main__":
    main()
