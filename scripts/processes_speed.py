"""Throughput of `directer eval` as one process against N launched processes (--workers N, torchrun's
launcher), on the same prompts, in turn, with the responses checked to be the same.

    python scripts/processes_speed.py                                   # 2 processes, 24 prompts, 2 rounds
    python scripts/processes_speed.py --processes 2 --sample 16 --max-new-tokens 48 --rounds 3

Each round runs the one-process command, then the N-process one, each into a fresh run directory (the
model load and, for N, the launcher's start included: the whole command, as a user times it), and
prints wall seconds, generated tokens per second over that wall time and the ratio of the two in the
round; the last line is the median ratio. The responses of the two are compared: a difference is
reported, and then checked once against one process with the N-process run's thread count (CPU float
kernels may round differently with another thread count, and a near-tie in DIRECTER's acceptance can
turn on that); the script fails if the N-process responses differ from that run too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], out: Path, processes: int, threads: int | None = None) -> tuple[float, int, dict[str, dict[str, str]]]:
    cmd = [sys.executable, "-m", "directer", *args, "--output-dir", str(out)]
    if processes > 1:
        cmd += ["--workers", str(processes)]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    tokens, responses = 0, {}
    for path in sorted(out.glob("responses-*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        tokens += sum(r["num_tokens"] for r in records)
        responses[path.name] = {r["key"]: r["response"] for r in records}
    return wall, tokens, responses


def differing(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> int:
    return sum(a[f][k] != b[f].get(k) for f in a for k in a[f])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--sample", type=int, default=24)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--method", action="append", default=None, help="repeatable (default: none and directer)")
    a = p.parse_args()
    args = ["eval", "ifeval", "--sample", str(a.sample), "--seed", "0", "--max-new-tokens", str(a.max_new_tokens),
            "--batch-size", str(a.batch_size)]
    for m in a.method or ["none", "directer"]:
        args += ["--method", m]
    print(f"directer eval {' '.join(args[1:])}: 1 process vs {a.processes} (--workers {a.processes})")
    print("| round | 1 process: s | tokens/s | N processes: s | tokens/s | throughput ratio |")
    print("|---|---|---|---|---|---|")
    ratios, differ, total = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.rounds):
            w1, t1, r1 = run(args, Path(tmp) / f"one-{k}", 1)
            wn, tn, rn = run(args, Path(tmp) / f"many-{k}", a.processes)
            total = sum(len(v) for v in r1.values())
            differ.append(differing(r1, rn))
            ratio = (tn / wn) / (t1 / w1)
            ratios.append(ratio)
            print(f"| {k + 1} | {w1:.1f} | {t1 / w1:.1f} | {wn:.1f} | {tn / wn:.1f} | {ratio:.2f}x |", flush=True)
        print(f"median throughput ratio, {a.processes} processes / 1: {statistics.median(ratios):.2f}x ({t1} tokens a run)")
        if not any(differ):
            print(f"responses: identical in every round ({total} a run)")
            return
        threads = max(1, (os.cpu_count() or 1) // a.processes)
        _, _, same_threads = run(args, Path(tmp) / "threads", 1, threads=threads)
        left = differing(same_threads, rn)
        print(f"responses: {', '.join(map(str, differ))} of {total} differ from the one-process run (by round); "
              f"{left} differ from one process with {threads} thread(s), as each of the {a.processes} had")
        if left:
            sys.exit("the N-process responses are not those of one process with the same threads")


if __name__ == "__main__":
    main()
