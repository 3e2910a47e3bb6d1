"""How the model's linear layers cost by number of rows: ``nn.Linear`` (``x @ W.T``) against
``W @ x.T`` unpadded and as the engine computes it (engine/row_matmul.py: padded, contiguous).

    python scripts/row_matmul_speed.py                       # bundled model, float32
    python scripts/row_matmul_speed.py --rows 1 2 4 8 31 32 --repeats 7

Every decoder linear and the output embedding are applied once per row count and way, in turn and
repeated (the machine is noisy); the table gives medians and the ratio to ``nn.Linear``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from directer import Directer
from directer.engine.row_matmul import product


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 5, 8, 12, 16, 24, 31, 32, 48, 64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    d = Directer.from_pretrained(args.model, dtype=args.dtype)
    weights = [m.weight for m in d.model.get_decoder().modules() if type(m) is torch.nn.Linear]
    head = d.model.get_output_embeddings().weight
    dtype = weights[0].dtype
    ways = {
        "nn.Linear": lambda w, x: F.linear(x, w),
        "W @ x.T": lambda w, x: torch.mm(w, x.t()),
        "engine (padded)": product,
    }
    times: dict[tuple[int, str, str], list[float]] = {}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for rows in args.rows:
                xs = {n: torch.randn(rows, n, dtype=dtype) for n in {w.shape[1] for w in weights + [head]}}
                for way, f in ways.items():
                    for part, ws in (("decoder", weights), ("head", [head])):
                        t0 = time.perf_counter()
                        for w in ws:
                            f(w, xs[w.shape[1]])
                        times.setdefault((rows, way, part), []).append(time.perf_counter() - t0)
    print(f"{d.model_name}, {args.dtype}, {len(weights)} decoder linears + output embedding "
          f"{tuple(head.shape)}, torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'rows':>5} | {'part':7} | " + " | ".join(f"{w:>22}" for w in ways))
    for rows in args.rows:
        for part in ("decoder", "head"):
            base = statistics.median(times[(rows, "nn.Linear", part)])
            cells = []
            for way in ways:
                t = statistics.median(times[(rows, way, part)])
                cells.append(f"{1000 * t:8.1f} ms ({t / base:4.2f}x)")
            print(f"{rows:>5} | {part:7} | " + " | ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
