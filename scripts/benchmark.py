"""Speed of DIRECTER against plain greedy decoding, measured in one run on the same prompts.

    python scripts/benchmark.py                      # bundled model, float32, 8 prompts x 64 tokens
    python scripts/benchmark.py --repeats 3 --max-new-tokens 96 --json out.json
    python scripts/benchmark.py --context-tokens 1000   # the same tasks after ~1000 tokens of background

Machines here are noisy: absolute times mean little, so every prompt is decoded by each method in
turn (interleaved, repeated) and the script reports ratios to plain decoding from the same run.

Plain greedy decoding is ``model.generate(do_sample=False)`` with the same prompt ids. Per-token time
excludes the first token; first-token latency is prefill + first step (DIRECTER: + ranking).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from directer import Directer
from directer.evaluation.tasks.ifeval import load_ifeval

PROMPTS = [
    ("Write a haiku about autumn.", "Do not use any commas."),
    ("Describe the water cycle for a ten-year-old.", "Your entire response must be in lowercase letters."),
    ("Give three tips for staying focused while studying.", "Your answer must contain exactly 3 bullet points in markdown."),
    ("Write a short product description for a steel water bottle.", "Your entire response should be in English, capital letters only."),
    ("Explain what a hash table is.", "Answer in fewer than 50 words."),
    ("Write a limerick about a cat who loves the rain.", "End your response with the exact phrase: Is there anything else I can help with?"),
    ("Summarize the plot of Romeo and Juliet.", "Wrap your entire response in double quotation marks."),
    ("Suggest a name for a bakery and explain it.", "Include the keywords 'flour' and 'morning' in your response."),
]


def plain_greedy(model, ids: list[int], max_new_tokens: int, eos: list[int]) -> tuple[int, float, float]:
    """(tokens, first-token seconds, total seconds) of model.generate, timed with a streamer-free callback."""
    x = torch.tensor([ids], device=model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    first = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=1,
                           eos_token_id=eos, pad_token_id=eos[0])
    sync()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=eos[0])
    sync()
    total = time.perf_counter() - t0
    del first
    return out.shape[1] - len(ids), t_first, total


def background(tokenizer, texts: list[str], tokens: int, k: int) -> str:
    """About ``tokens`` tokens of natural text (consecutive ``texts``, a different stretch per task ``k``)."""
    if tokens <= 0:
        return ""
    parts, n, i = [], 0, 37 * k
    while n < tokens:
        text = texts[i % len(texts)]
        parts.append(text)
        n += len(tokenizer(text, add_special_tokens=False).input_ids)
        i += 1
    return "Background notes:\n" + "\n\n".join(parts) + "\n\nTask: "


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default=None, help="e.g. cuda (default: the library's choice)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--speculate", default="auto", choices=["auto", "always", "never"])
    ap.add_argument("--context-tokens", type=int, default=0,
                    help="put about this many tokens of background text (IFEval prompts) before each task, "
                         "to see how the ratios move with prompt length")
    ap.add_argument("--json", default=None, help="also write the raw measurements here")
    args = ap.parse_args()

    d = Directer.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens,
                                  speculate=args.speculate)
    model, eos = d.model, sorted(d.eos_token_ids())
    texts = [p.prompt for p in load_ifeval()] if args.context_tokens > 0 else []
    prepared = [d.prepare(background(d.tokenizer, texts, args.context_tokens, k) + t, i)
                for k, (t, i) in enumerate(PROMPTS[: args.prompts])]
    d.generate_prepared(prepared[:1], config=d.config)  # warm-up
    rows = []
    for rep in range(args.repeats):
        for k, p in enumerate(prepared):
            n_plain, first_plain, total_plain = plain_greedy(model, p.input_ids, args.max_new_tokens, eos)
            r = d.generate_prepared([p])[0]
            s = r.stats
            rows.append({
                "prompt": k, "repeat": rep, "prompt_tokens": len(p.input_ids),
                "plain_tokens": n_plain, "plain_first_s": first_plain, "plain_total_s": total_plain,
                "directer_tokens": s.steps, "directer_first_s": s.first_token_seconds, "directer_total_s": s.seconds,
                "ranking_s": s.ranking_seconds, "gate_skips": s.gate_skips, "trials": s.trials,
                "fallbacks": s.fallbacks, "accepted": s.accepted,
            })
            print(f"[{rep}:{k}] plain {n_plain} tok {total_plain:.2f}s | directer {s.steps} tok {s.seconds:.2f}s "
                  f"(skips {s.gate_skips}, trials {s.trials})", file=sys.stderr)

    def per_token(total, first, n):
        return (total - first) / max(1, n - 1)

    plain_tok = [per_token(r["plain_total_s"], r["plain_first_s"], r["plain_tokens"]) for r in rows]
    dir_tok = [per_token(r["directer_total_s"], r["directer_first_s"], r["directer_tokens"]) for r in rows]
    ratio_tok = [a / b for a, b in zip(dir_tok, plain_tok)]
    ratio_first = [r["directer_first_s"] / r["plain_first_s"] for r in rows]
    steps = sum(r["directer_tokens"] for r in rows)
    print(f"\nmodel {d.model_name}, {args.dtype}, device {d.model.device}, {len(prepared)} prompts of "
          f"{min(len(p.input_ids) for p in prepared)}-{max(len(p.input_ids) for p in prepared)} tokens x {args.repeats} repeats, "
          f"max {args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}")
    print(f"plain greedy   : {1000 * statistics.median(plain_tok):7.1f} ms/token (median), "
          f"first token {1000 * statistics.median(r['plain_first_s'] for r in rows):7.1f} ms")
    print(f"DIRECTER       : {1000 * statistics.median(dir_tok):7.1f} ms/token (median), "
          f"first token {1000 * statistics.median(r['directer_first_s'] for r in rows):7.1f} ms "
          f"(ranking forward {1000 * statistics.median(r['ranking_s'] for r in rows):.1f} ms)")
    print(f"ratio per token: {statistics.median(ratio_tok):.2f}x (median over prompts; "
          f"aggregate {sum(r['directer_total_s'] - r['directer_first_s'] for r in rows) / max(1, steps - len(rows)) / (sum(r['plain_total_s'] - r['plain_first_s'] for r in rows) / max(1, sum(r['plain_tokens'] for r in rows) - len(rows))):.2f}x)")
    print(f"ratio first tok: {statistics.median(ratio_first):.2f}x (median)")
    print(f"gate skip rate : {sum(r['gate_skips'] for r in rows) / steps:.1%}; trials per token "
          f"{sum(r['trials'] for r in rows) / steps:.2f}; raw fallbacks {sum(r['fallbacks'] for r in rows) / steps:.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
