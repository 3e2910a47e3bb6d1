"""Throughput of `directer eval` as one process against N launched processes (--workers N, torchrun's
launcher), on the same prompts, in turn, with the responses checked to be the same.

    python scripts/processes_speed.py                                   # 2 processes, 24 prompts, 2 rounds
    python scripts/processes_speed.py --processes 2 --sample 16 --max-new-tokens 48 --rounds 3

Each round runs the one-process command, then the N-process one, each into a fresh run directory (the
model load and, for N, the launcher's start included: the whole command, as a user times it), and
prints wall seconds, generated tokens per second over that wall time and the ratio of the two in the
round; the last line is the median ratio. Every N-process run must give exactly the one-process
responses, or the script stops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], out: Path, processes: int) -> tuple[float, int, dict[str, dict[str, str]]]:
    cmd = [sys.executable, "-m", "directer", *args, "--output-dir", str(out)]
    if processes > 1:
        cmd += ["--workers", str(processes)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    tokens, responses = 0, {}
    for path in sorted(out.glob("responses-*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        tokens += sum(r["num_tokens"] for r in records)
        responses[path.name] = {r["key"]: r["response"] for r in records}
    return wall, tokens, responses


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
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.rounds):
            w1, t1, r1 = run(args, Path(tmp) / f"one-{k}", 1)
            wn, tn, rn = run(args, Path(tmp) / f"many-{k}", a.processes)
            if rn != r1:
                sys.exit(f"round {k}: the {a.processes}-process responses differ from the one-process ones")
            ratio = (tn / wn) / (t1 / w1)
            ratios.append(ratio)
            print(f"| {k + 1} | {w1:.1f} | {t1 / w1:.1f} | {wn:.1f} | {tn / wn:.1f} | {ratio:.2f}x |", flush=True)
    print(f"median throughput ratio, {a.processes} processes / 1: {statistics.median(ratios):.2f}x "
          f"({t1} tokens a run; responses identical in every round)")


if __name__ == "__main__":
    main()
