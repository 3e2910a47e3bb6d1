"""How fast the command line answers when no model is needed: --help and argument errors.

Runs each command --repeats times as a fresh process (the `directer` entry point next to this Python)
and prints the median and the fastest wall time, beside `python -c pass` (the interpreter's own start)
and `import torch` (what --help no longer pays). Usage: python scripts/cli_latency.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    entry = Path(sys.executable).with_name("directer")
    directer = [str(entry)] if entry.exists() else [shutil.which("directer") or "directer"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "directer --help": directer + ["--help"],
        "directer generate --help": directer + ["generate", "--help"],
        "directer eval --help": directer + ["eval", "--help"],
        "directer generate '' -i x  (error)": directer + ["generate", "", "-i", "x"],
        "directer generate --input x --batch-size 0  (error)": directer + ["generate", "--input", "x", "--batch-size", "0"],
    }
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    print(f"{'command':52} {'median':>8} {'fastest':>8}")
    for name, cmd in commands.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=env)
            times.append(time.perf_counter() - t0)
        print(f"{name:52} {statistics.median(times):7.2f}s {min(times):7.2f}s")


if __name__ == "__main__":
    main()
