"""Whether one long request slows the short ones decoding beside it, measured in one run.

    python scripts/long_request.py                                    # 15 short prompts + one of ~3000 tokens
    python scripts/long_request.py --long-tokens 6000 --method directer --repeats 3

A raw row reads its own slot's columns; with one attention call over every slot, each short slot would
read as many columns as the longest request holds. The engine splits the raw rows in bands
(``EngineOptions.bands``, engine/raw_bands.py) when the lengths differ enough. This script decodes the
same seeded IFEval prompts (with the spans ``directer eval`` steers) three ways, in rotating order:

- ``alone``: the short prompts, one batch;
- ``+ long, bands``: the same batch with a long prompt in one more slot (a document of about
  ``--long-tokens`` tokens followed by an instruction), raw rows in bands (the default);
- ``+ long, one call``: the same, every raw row in one call over every slot at the widest width.

Every prompt decodes exactly ``--max-new-tokens`` tokens (end-of-sequence ignored). The figure is the
decode time per forward step, from the moment every prompt has its first token to the end (the long
prompt's prefill is a one-off cost and is left out), and its ratio to ``alone`` in the same repeat.
The three runs decode the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

import torch

from directer import Directer
from directer.evaluation.runs import prepare_items
from directer.evaluation.tasks.ifeval import load_ifeval

INSTRUCTION = "Answer in exactly three bullet points."


def long_prompt(d: Directer, texts: list[str], tokens: int, config):
    """A document of about ``tokens`` tokens (the IFEval prompts, repeated) ending in an instruction."""
    sizes = [len(d.tokenizer(t)["input_ids"]) for t in texts]
    parts, n = [], 0
    while n < tokens:
        for t, size in zip(texts, sizes):
            parts.append(t)
            n += size
            if n >= tokens:
                break
    text = "Summarise the following notes.\n\n" + "\n\n".join(parts) + "\n\n" + INSTRUCTION
    return d.prepare(text, [INSTRUCTION], config=config)


def decode(d: Directer, prepared, config, bands: bool) -> tuple[float, list[list[int]]]:
    """Seconds per decode step once every prompt has its first token, and the tokens."""
    d.runner.bands = bands
    firsts: dict[int, float] = {}

    def seen(index: int, token_ids: list[int], done: bool) -> None:
        firsts.setdefault(index, time.perf_counter())

    results = d.generate_prepared(prepared, config=config, batch_size=len(prepared), on_tokens=seen)
    end = time.perf_counter()
    start = max(firsts.values())
    return (end - start) / (config.max_new_tokens - 1), [r.token_ids for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default=None)
    ap.add_argument("--method", default="none", help="method spec (default none: the raw rows alone)")
    ap.add_argument("--short", type=int, default=15, help="short IFEval prompts (default 15)")
    ap.add_argument("--long-tokens", type=int, default=3000, help="length of the long prompt (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.max_new_tokens < 2:
        ap.error("--max-new-tokens must be at least 2 (the figure is per decode step after the first token)")

    d = Directer.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens)
    config = replace(d.config, method=args.method, ignore_eos=True)
    prompts = load_ifeval(sample=args.short, seed=args.seed)
    short, _ = prepare_items(d, prompts, config)
    long = long_prompt(d, [p.prompt for p in prompts], args.long_tokens, config)
    runs = {"alone": (short, True), "+ long, bands": (short + [long], True), "+ long, one call": (short + [long], False)}
    decode(d, short[:2], config, True)  # warm-up

    rows, outputs = [], {}
    for rep in range(args.repeats):
        names = list(runs)
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            prepared, bands = runs[name]
            seconds, tokens = decode(d, prepared, config, bands)
            rows.append((rep, name, seconds))
            outputs.setdefault(name, tokens)
            print(f"[{rep}] {name:18s} {1000 * seconds:7.1f} ms/step", file=sys.stderr)
    same = outputs["+ long, bands"] == outputs["+ long, one call"] and \
        outputs["alone"] == outputs["+ long, bands"][:len(short)]

    print(f"\nmodel {d.model_name}, {args.dtype}, device {d.model.device}, torch threads {torch.get_num_threads()}; "
          f"{len(short)} IFEval prompts (seed {args.seed}) + one of {len(long.input_ids)} tokens, method {args.method}, "
          f"exactly {args.max_new_tokens} new tokens, {args.repeats} repeats; same tokens in all three: {same}\n")
    print("| batch | ms per decode step | vs alone |")
    print("|---|---|---|")
    base = {rep: s for rep, name, s in rows if name == "alone"}
    for name in runs:
        mine = [(rep, s) for rep, n, s in rows if n == name]
        ms = 1000 * statistics.median(s for _, s in mine)
        ratio = statistics.median(s / base[rep] for rep, s in mine)
        print(f"| {name} | {ms:.1f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
