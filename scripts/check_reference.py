#!/usr/bin/env python3
"""Check that ``mode="reference"`` reproduces the authors' released DIRECTER token for token.

Reads the JSONL written by ``scripts/reference_oracle.py`` (the authors' code, run in its own
environment), runs this library on the same records and compares, per prompt:

* the prompt token ids;
* the steered span: ours is ``[start, end)`` with the released code's extra token included, i.e. the
  oracle's ``(start, end + 1)``;
* the generated token ids, token by token (first mismatch: index, both tokens, text around it);
* informationally, the layer ranking and the per-step trace (gate skip, trials, accepted trial).

Prints a per-prompt table, per-token times of both implementations and ``N/M prompts identical``.
Exits 1 on any mismatch of prompt ids, span or generated tokens.

    DIRECTER_CACHE_DIR=/tmp/dcache .venv/bin/python scripts/check_reference.py --oracle /tmp/oracle.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Reference mode's trial layer-set sizes for a 30-layer model are 30, 15, 7, 3; computed per model below.


def _piece(tok, i: int | None) -> str:
    if i is None:
        return "<none>"
    return f"{i}:{tok.decode([i], skip_special_tokens=False)!r}"


def _context(tok, ids: list[int], at: int, before: int = 12, after: int = 6) -> str:
    left = tok.decode(ids[max(0, at - before):at], skip_special_tokens=False)
    right = tok.decode(ids[at:at + after], skip_special_tokens=False)
    return f"...{left!r} | {right!r}..."


def _first_diff(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _trial_sizes(num_layers: int) -> list[int]:
    from directer.methods.directer import REFERENCE_MAX_TRIALS, halving_sizes

    return [s for k, s in enumerate(halving_sizes(num_layers), start=1) if s > 1 and k <= REFERENCE_MAX_TRIALS]


def _their_trace(step: dict, sizes: list[int]) -> tuple:
    acc = step.get("accepted")
    return (bool(step["skipped"]), int(step["trials"]), sizes[acc - 1] if acc else None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oracle", required=True, help="JSONL written by scripts/reference_oracle.py")
    ap.add_argument("--model", default=None, help="model (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the oracle's")
    ap.add_argument("--limit", type=int, default=None, help="only the first N records")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", default=None, help="write our results (JSONL) here")
    args = ap.parse_args()

    records = [json.loads(line) for line in Path(args.oracle).read_text().splitlines() if line.strip()]
    if args.limit:
        records = records[: args.limit]
    if not records:
        print("no oracle records", file=sys.stderr)
        return 2
    n_new = args.max_new_tokens or int(records[0].get("max_new_tokens") or 48)

    import torch
    import transformers

    from directer import Directer

    if args.threads:
        torch.set_num_threads(args.threads)
    d = Directer.from_pretrained(
        args.model, mode="reference", attn_implementation="eager", dtype="float32", max_new_tokens=n_new
    )
    tok = d.tokenizer
    num_layers = d.model.config.get_text_config(decoder=True).num_hidden_layers
    sizes = _trial_sizes(num_layers)
    print(f"ours: torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}; "
          f"oracle: {records[0].get('versions')}; max_new_tokens {n_new}")

    out = open(args.out, "w") if args.out else None
    identical = 0
    rows = []
    t_ours = t_theirs = 0.0
    n_ours = n_theirs = 0
    for rec in records:
        r = d.generate(rec["task"], rec["instruction"])
        if out:
            out.write(json.dumps({"id": rec.get("id"), **r.to_dict()}) + "\n")
            out.flush()
        problems = []
        if r.prompt_token_ids != rec["prompt_token_ids"]:
            i = _first_diff(r.prompt_token_ids, rec["prompt_token_ids"])
            problems.append(f"prompt ids differ at {i}")
        start, end = rec["span"]
        want_span = [start, end + 1]
        got_span = [list(s) for s in r.instruction_token_spans]
        if got_span != [want_span]:
            problems.append(f"span ours {got_span} vs theirs {want_span} (their (start, end)=({start}, {end}))")
        ours, theirs = list(r.token_ids), list(rec["token_ids"])
        k = _first_diff(ours, theirs)
        rank_note = ""
        if rec.get("ranking") is not None and r.ranking is not None:
            if list(r.ranking) != list(rec["ranking"]):
                j = _first_diff(list(r.ranking), list(rec["ranking"]))
                rank_note = f"ranking differs at position {j}"
            else:
                diff = max(abs(a - b) for a, b in zip(r.ranking_scores or [], rec.get("ranking_scores") or [0.0])) \
                    if r.ranking_scores and rec.get("ranking_scores") else float("nan")
                rank_note = f"ranking same (max score diff {diff:.2e})"
        trace_note = ""
        if rec.get("trace"):
            mine = [(t.skipped, t.trials, t.layers) for t in r.trace]
            theirs_tr = [_their_trace(s, sizes) for s in rec["trace"]]
            j = _first_diff(mine, theirs_tr)
            if j is not None:
                a = mine[j] if j < len(mine) else None
                b = theirs_tr[j] if j < len(theirs_tr) else None
                trace_note = f"trace differs at step {j}: ours (skip,trials,layers)={a} theirs={b}"
        if k is not None:
            a = ours[k] if k < len(ours) else None
            b = theirs[k] if k < len(theirs) else None
            problems.append(
                f"tokens differ at {k}/{max(len(ours), len(theirs))}: ours {_piece(tok, a)} theirs {_piece(tok, b)}; "
                f"ours {_context(tok, ours, k)} theirs {_context(tok, theirs, k)}"
            )
        ok = not problems
        identical += ok
        s_ours = r.stats.seconds / max(1, len(ours))
        s_theirs = rec["seconds"] / max(1, len(theirs))
        t_ours += r.stats.seconds
        t_theirs += rec["seconds"]
        n_ours += len(ours)
        n_theirs += len(theirs)
        rows.append((rec.get("id"), ok, len(ours), len(theirs), s_ours, s_theirs, problems, rank_note, trace_note))
        status = "match" if ok else "MISMATCH"
        print(f"{str(rec.get('id'))[:18]:18} {status:8} tokens {len(ours):3}/{len(theirs):3}  "
              f"s/token ours {s_ours:.3f} theirs {s_theirs:.3f}  span {got_span[0] if got_span else None}  {rank_note}")
        for p in problems:
            print(f"{'':18}   - {p}")
        if trace_note:
            print(f"{'':18}   - {trace_note}")
        sys.stdout.flush()
    if out:
        out.close()

    print()
    print(f"per-token time: ours {t_ours / max(1, n_ours):.3f} s ({t_ours:.1f} s / {n_ours} tokens), "
          f"theirs {t_theirs / max(1, n_theirs):.3f} s ({t_theirs:.1f} s / {n_theirs} tokens), "
          f"speed-up x{(t_theirs / max(1, n_theirs)) / max(1e-9, t_ours / max(1, n_ours)):.2f}")
    print(f"{identical}/{len(records)} prompts identical")
    return 0 if identical == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
