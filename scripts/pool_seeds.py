"""Pool a sampled IFEval comparison over seeds: one run directory per sampling seed, same prompts.

    python scripts/pool_seeds.py docs/results/sampled-t0.7-p0.9-s200-seed1 docs/results/sampled-t0.7-p0.9-s200-seed2

For each method, every prompt's prompt-level and instruction-level strict accuracy is averaged over the
seeds; the difference ``b - a`` gets a paired bootstrap 95 % interval over prompts (the prompt is the
unit that is sampled; the seeds are repeated draws on it). Prints a markdown table: per seed, then pooled.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from directer.evaluation.stats import paired_bootstrap
from directer.evaluation.tasks.ifeval import load_ifeval, score_response


def records(run: Path, method: str) -> dict[int, dict]:
    path = run / f"responses-{method}.jsonl"
    opener = gzip.open if not path.exists() else open
    path = path if path.exists() else path.with_suffix(".jsonl.gz")
    with opener(path, "rt", encoding="utf-8") as f:
        return {r["key"]: r for r in map(json.loads, f)}


def scores(run: Path, method: str, prompts: dict) -> dict[int, tuple[float, float, int]]:
    """key -> (prompt strict, fraction of instructions strict, number of instructions)."""
    out = {}
    for key, r in records(run, method).items():
        s = score_response(prompts[key], r["response"])
        out[key] = (float(s.prompt_strict), sum(s.strict) / len(s.strict), len(s.strict))
    return out


def row(label: str, a: dict, b: dict) -> str:
    keys = sorted(set(a) & set(b))
    pa, pb = [a[k][0] for k in keys], [b[k][0] for k in keys]
    ia, ib, w = [a[k][1] for k in keys], [b[k][1] for k in keys], [a[k][2] for k in keys]
    dp, di = paired_bootstrap(pa, pb), paired_bootstrap(ia, ib, weights=w)
    inst = lambda x: 100 * float(np.average(x, weights=w))  # noqa: E731
    return (f"| {label} | {len(keys)} | {100 * np.mean(pa):.1f} | {100 * np.mean(pb):.1f} ({100 * dp.diff:+.1f} "
            f"[{100 * dp.low:+.1f}, {100 * dp.high:+.1f}]) | {inst(ia):.1f} | {inst(ib):.1f} ({100 * di.diff:+.1f} "
            f"[{100 * di.low:+.1f}, {100 * di.high:+.1f}]) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--a", default="none")
    ap.add_argument("--b", default="directer")
    args = ap.parse_args()
    prompts = {p.key: p for p in load_ifeval()}
    per_seed = [(run, scores(run, args.a, prompts), scores(run, args.b, prompts)) for run in args.runs]
    print(f"| seed | n | {args.a} prompt strict | {args.b} prompt strict | {args.a} inst. strict | {args.b} inst. strict |")
    print("|---|---|---|---|---|---|")
    for run, a, b in per_seed:
        seed = json.loads((run / "config.json").read_text())["sampling"]["seed"]
        print(row(str(seed), a, b))
    if len(per_seed) > 1:
        keys = set.intersection(*(set(a) & set(b) for _, a, b in per_seed))
        pooled = []
        for side in (1, 2):
            pooled.append({k: (float(np.mean([s[side][k][0] for s in per_seed])),
                               float(np.mean([s[side][k][1] for s in per_seed])), per_seed[0][side][k][2])
                           for k in keys})
        print(row(f"pooled ({len(per_seed)} seeds)", *pooled))


if __name__ == "__main__":
    main()
