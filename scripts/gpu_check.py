"""A prepared validation run for a GPU machine: one JSON line per stage, written as each stage ends, so a
time limit still returns what finished.

    python scripts/gpu_check.py --out gpu-check.jsonl                 # on the GPU (~5-8 min on an H200)
    python scripts/gpu_check.py --device cpu --smoke --out /tmp/g.jsonl  # the dry run the tests make

Stages (each catches its own failure and records it):

- ``env``: torch, transformers, CUDA, bfloat16 support; versions older than this package wants are named.
- ``correctness``: float32 on the device, tiny random models of the five architectures: the engine against
  the sequential specification (``engine/reference.py``), batched against one at a time.
- ``bf16_agreement``: the bundled model (or a tiny one under ``--smoke``) in bfloat16 against float32,
  the share of responses identical for ``none`` and for ``directer``, and a NaN/inf scan of the logits.
- ``host_cost``: aten ops and device reads per generated token (``directer.evaluation.host_cost``), and on
  CUDA the synchronisations ``torch.cuda.set_sync_debug_mode`` reports; ``directer`` with and without
  ``speculate="auto"``, and sampled (temperature 0.7, top-p 0.9).
- ``speed``: random weights at real shapes (the bundled model's, and a Llama-3.1-8B shape on CUDA),
  bfloat16, EOS ignored: ``model.generate``, our ``none`` and ``directer`` (gate always open: ``beta=0``,
  with speculation never, auto and always; never open: ``beta=2``) per token and first token, batch 1 and
  32, and a least-squares fit of what a decode forward costs (fixed and per row), the numbers
  ``engine/cost_model.py``'s table wants for this device.
- ``long_request``: the same random-weight shapes, 15 short prompts decoding alone, then beside one long
  prompt (3,000 tokens) with the rows in bands (the default) and in one call over every slot
  (``EngineOptions(bands=False)``): time per decode step and its ratio to the short prompts alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny architectures of the property tests

WANT = {"torch": (2, 4), "transformers": (5, 0)}


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("+")[0].split(".")[:2] if x.isdigit())


def stage_env(args) -> dict:
    import transformers

    found = {"torch": torch.__version__, "transformers": transformers.__version__}
    old = [f"{k} {found[k]} (want >= {'.'.join(map(str, v))})" for k, v in WANT.items() if _version(found[k]) < v]
    cuda = torch.cuda.is_available()
    return {**found, "cuda": cuda, "device_name": torch.cuda.get_device_name(0) if cuda else None,
            "bf16": bool(cuda and torch.cuda.is_bf16_supported()), "too_old": old, "ok": not old}


def stage_correctness(args) -> dict:
    from directer.engine.reference import ReferenceDecoder
    from directer.engine.requests import DecodeRequest
    from directer.methods import make_method
    from tiny import ARCHS, SPAN, prompts, run, tiny_model, tokens

    out = {}
    for arch in ARCHS:
        model = tiny_model(arch).to(args.device)
        ps = prompts(3)
        engine = tokens(run(model, ps, new=args.tokens))
        alone = tokens(run(model, ps, new=args.tokens, batch=False))
        spec = ReferenceDecoder(model, make_method("directer"), max_new_tokens=args.tokens, eos_token_ids=frozenset())
        sequential = tokens(spec.run([DecodeRequest(p, SPAN) for p in ps]))
        out[arch] = {"batched_equals_alone": engine == alone, "engine_equals_specification": engine == sequential}
    return {"archs": out, "ok": all(all(v.values()) for v in out.values())}


def _directer(args, dtype: str):
    from directer import Directer

    if args.smoke:
        from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model

        tok = load_bundled_tokenizer(padding_side="left")
        model = tiny_chat_model(tok).to(device=args.device, dtype=getattr(torch, dtype))
        return Directer(model, tok, max_new_tokens=args.tokens, model_name="tiny-llama")
    return Directer.from_pretrained(None, dtype=dtype, device=args.device, max_new_tokens=args.tokens)


def _prepared(d, method: str, n: int):
    from directer.evaluation.runs import prepare_items
    from directer.evaluation.tasks.ifeval import load_ifeval

    return prepare_items(d, load_ifeval(sample=n, seed=1), replace(d.config, method=method))[0]


def stage_bf16_agreement(args) -> dict:
    full, half = _directer(args, "float32"), _directer(args, "bfloat16")
    out = {}
    for method in ("none", "directer"):
        prepared = _prepared(full, method, args.prompts)
        a = full.generate_prepared(prepared, config=replace(full.config, method=method), batch_size=len(prepared))
        b = half.generate_prepared(prepared, config=replace(half.config, method=method), batch_size=len(prepared))
        same = sum(x.token_ids == y.token_ids for x, y in zip(a, b))
        first = [next((i for i, (u, v) in enumerate(zip(x.token_ids, y.token_ids)) if u != v), None) for x, y in zip(a, b)]
        out[method] = {"identical": same, "of": len(a), "first_divergence": first}
    ids = torch.tensor([_prepared(half, "none", 1)[0].input_ids], device=half.model.device)
    with torch.no_grad():
        logits = half.model(ids).logits
    out["logits_finite"] = bool(torch.isfinite(logits).all())
    return {**out, "ok": out["logits_finite"]}


def stage_host_cost(args) -> dict:
    from directer.evaluation.host_cost import count_host_cost

    d = _directer(args, "bfloat16" if args.device != "cpu" else "float32")
    out = {}
    for name, method, speculate, temperature in (
            ("none", "none", "never", 0.0), ("directer", "directer", "never", 0.0),
            ("directer_speculate_auto", "directer", "auto", 0.0),
            ("directer_sampled", "directer", "never", 0.7)):  # top-p 0.9: the draws join the one read
        prepared = _prepared(d, method, args.prompts)
        config = replace(d.config, method=method, ignore_eos=True, speculate=speculate)
        if temperature:
            config = replace(config, temperature=temperature, top_p=0.9, seed=0)
        with count_host_cost() as cost, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if args.device.startswith("cuda"):
                torch.cuda.set_sync_debug_mode("warn")
            try:
                results = d.generate_prepared(prepared, config=config, batch_size=len(prepared))
            finally:
                if args.device.startswith("cuda"):
                    torch.cuda.set_sync_debug_mode(0)
        n = sum(len(r.token_ids) for r in results)
        cuda_syncs = sum("synchroniz" in str(w.message) for w in caught)
        out[name] = {**{k: round(v, 3) for k, v in cost.per(n).items()}, "cuda_syncs_per_token": round(cuda_syncs / n, 3)}
    return {**out, "ok": True}


SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512),
}


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _dtype(args) -> torch.dtype:
    return torch.bfloat16 if args.device.startswith("cuda") else torch.float32


def _random_models(args):
    """``(shape, config, model)``: random-weight Llama models at the bundled model's shape and, on CUDA, a
    Llama-3.1-8B shape (the smoke shape under ``--smoke``), one at a time: the caller drops each model
    before the next is made."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    shapes = ["smoke"] if args.smoke else ["smollm2-135m"] + (["llama-3.1-8b"] if args.device.startswith("cuda") else [])
    for shape in shapes:
        torch.manual_seed(0)
        config = LlamaConfig(max_position_embeddings=4096, **SHAPES[shape])
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(config, dtype=_dtype(args), attn_implementation="sdpa").eval()
        yield shape, config, model
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def stage_speed(args) -> dict:
    from directer.engine.continuous import Engine, EngineOptions
    from directer.engine.requests import DecodeRequest
    from directer.engine.sequence import SequenceSettings
    from directer.methods import make_method

    out = {}
    for shape, config, model in _random_models(args):
        vocab, n = config.vocab_size, args.tokens
        for batch in (1, 32):
            g = torch.Generator().manual_seed(batch)
            ps = [torch.randint(3, vocab, (64,), generator=g).tolist() for _ in range(batch)]
            ids = torch.tensor(ps, device=args.device)

            def generate(k: int) -> None:
                with torch.no_grad():
                    model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=k,
                                   min_new_tokens=k, pad_token_id=0, eos_token_id=None)

            engines = {}

            def engine(method: str, beta: float, k: int, speculate: str = "never", name: str = "") -> None:
                e = engines[name] = Engine(model, EngineOptions(slots=batch, pad_token_id=0))
                settings = SequenceSettings(make_method(method, alpha=100.0, beta=beta), max_new_tokens=k,
                                            speculate=speculate)
                e.run([DecodeRequest(p, list(range(8, 24))) for p in ps], settings)

            # beta 0: every trial accepted (the gate opens whenever the top-2 leave room); beta 2: none is
            runs = {"generate": lambda k: generate(k), "none": lambda k: engine("none", 0.5, k),
                    "directer_gate_open": lambda k: engine("directer", 0.0, k),
                    "directer_gate_open_speculate_auto": lambda k: engine("directer", 0.0, k, "auto", "auto"),
                    "directer_gate_open_speculate_always": lambda k: engine("directer", 0.0, k, "always"),
                    "directer_gate_closed": lambda k: engine("directer", 2.0, k)}
            row = {}
            for name, fn in runs.items():
                fn(2)  # warm-up
                first = _timed(lambda: fn(1))
                total = _timed(lambda: fn(n))
                row[name] = {"ms_per_token": round(1000 * (total - first) / max(1, (n - 1) * batch), 3),
                             "first_token_ms": round(1000 * first, 2)}
            for name in row:
                row[name]["vs_none"] = round(row[name]["ms_per_token"] / row["none"]["ms_per_token"], 3)
            fit = engines["auto"].cost.fit()  # what this device's decode forwards cost (engine/cost_model.py)
            row["forward_cost"] = fit and {"fixed_ms": round(1000 * fit[0], 3), "per_row_ms": round(1000 * fit[1], 4)}
            out[f"{shape}/b{batch}"] = row
        del model
    return {"shapes": out, "dtype": str(_dtype(args)), "ok": True}


def stage_long_request(args) -> dict:
    from directer.engine.continuous import Engine, EngineOptions
    from directer.engine.requests import DecodeRequest
    from directer.engine.sequence import SequenceSettings
    from directer.methods import make_method

    long_tokens = 300 if args.smoke else 3000  # past the 256 columns below which rows are never split
    out = {}
    for shape, config, model in _random_models(args):
        g = torch.Generator().manual_seed(7)
        short = [torch.randint(3, config.vocab_size, (64,), generator=g).tolist() for _ in range(15)]
        long = torch.randint(3, config.vocab_size, (long_tokens,), generator=g).tolist()
        settings = SequenceSettings(make_method("none"), max_new_tokens=1)

        def decode(prompts: list[list[int]], bands: bool, k: int) -> None:
            engine = Engine(model, EngineOptions(slots=len(prompts), pad_token_id=0, bands=bands))
            engine.run([DecodeRequest(p, list(range(8, 24)), max_new_tokens=k) for p in prompts], settings)

        runs = {"alone": (short, True), "long_bands": (short + [long], True), "long_one_call": (short + [long], False)}
        row = {}
        for name, (prompts, bands) in runs.items():
            decode(prompts, bands, 2)  # warm-up
            first = _timed(lambda: decode(prompts, bands, 1))
            total = _timed(lambda: decode(prompts, bands, args.tokens))
            row[name] = {"ms_per_step": round(1000 * (total - first) / max(1, args.tokens - 1), 3)}
        for name in row:
            row[name]["vs_alone"] = round(row[name]["ms_per_step"] / row["alone"]["ms_per_step"], 3)
        out[shape] = row
        del model
    return {"shapes": out, "dtype": str(_dtype(args)), "long_tokens": long_tokens, "ok": True}


STAGES = {"env": stage_env, "correctness": stage_correctness, "bf16_agreement": stage_bf16_agreement,
          "host_cost": stage_host_cost, "speed": stage_speed, "long_request": stage_long_request}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="gpu-check.jsonl")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and a tiny model: checks that every stage runs")
    ap.add_argument("--time-limit", type=float, default=540.0, help="seconds; later stages are skipped past it")
    ap.add_argument("--stage", action="append", choices=list(STAGES), help="run only these (repeatable)")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per response (default 32; 4 with --smoke)")
    ap.add_argument("--prompts", type=int, default=None, help="IFEval prompts (default 12; 2 with --smoke)")
    args = ap.parse_args()
    args.tokens = args.tokens or (4 if args.smoke else 32)
    args.prompts = args.prompts or (2 if args.smoke else 12)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here: run it on a GPU machine, or pass --device cpu --smoke for a dry run")
    start = time.perf_counter()
    with open(args.out, "a") as f:
        for name in args.stage or list(STAGES):
            if time.perf_counter() - start > args.time_limit:
                record = {"stage": name, "skipped": "time limit"}
            else:
                t0 = time.perf_counter()
                try:
                    record = {"stage": name, **STAGES[name](args)}
                except Exception as exc:  # one stage's failure is recorded; the others still run
                    record = {"stage": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                              "trace": traceback.format_exc(limit=6)}
                record["seconds"] = round(time.perf_counter() - t0, 2)
            line = json.dumps(record)
            print(line, flush=True)
            f.write(line + "\n")
            f.flush()


if __name__ == "__main__":
    main()
