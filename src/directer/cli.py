"""The ``directer`` command line: ``directer generate`` and ``directer demo``."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import click

from .config import SteeringConfig
from .errors import DirecterError, UsageError
from .methods import MODES, method_label, method_names, parse_layers, parse_method

DEMO_PROMPT = "Write a haiku about autumn."
DEMO_INSTRUCTION = "Do not use any commas."


def _fail(message: str, code: int) -> None:
    click.echo(f"directer: error: {message}", err=True)
    sys.exit(code)


def _warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"directer: warning: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="directer")
def cli() -> None:
    """DIRECTER: steer a causal LM toward the instructions in its prompt (dynamic rejection steering)."""


def engine_options(f=None, *, method: bool = True):
    """Options shared by every command that runs the engine (``method=False``: without --method)."""
    if f is None:
        return lambda g: engine_options(g, method=method)
    options = [
        click.option("--model", "model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled SmolLM2-135M-Instruct)."),
        click.option("--alpha", type=float, default=100.0, show_default=True, help="Key scale factor."),
        click.option("--beta", type=float, default=0.5, show_default=True, help="Plausibility threshold."),
        click.option("--mode", default="paper", show_default=True, help=f"{' | '.join(MODES)}: the paper, or the authors' released code."),
        click.option("--method", default="directer", show_default=True,
                     help=f"{' | '.join(method_names())}, with optional parameters NAME:KEY=VALUE:... "
                          "(e.g. static:alpha=3:layers=0-7, pasta:alpha_p=0.01, directer:ranking=reversed)."),
        click.option("--layers", default=None, help="Layer set of static, pasta, spotlight and instaboost, e.g. 'all' or '0-7,12' (default: all)."),
        click.option("--plausibility-filter", is_flag=True, help="Baselines: emit a steered token only if the raw model finds it plausible (Eq. 2), else the raw token."),
        click.option("--max-new-tokens", type=int, default=None, help="Token limit per response (default: 256; eval: 512, so that few responses are cut)."),
        click.option("--dtype", default="float32", show_default=True, help="float32 | bfloat16 | float16 | auto."),
        click.option("--attn-implementation", default=None, help="eager | sdpa | ... (default: eager in reference mode, else sdpa)."),
        click.option("--system", default=None, help="System message (default: the chat template's)."),
        click.option("--ranking", "ranking_file", default=None, help="Reuse the layer ranking in this JSON file."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)."),
    ]
    if not method:
        options = [o for o in options if "--method" not in _option_names(o)]
    for option in reversed(options):
        f = option(f)
    return f


def _option_names(decorator) -> tuple[str, ...]:
    probe = decorator(lambda: None)
    return tuple(n for p in probe.__click_params__ for n in p.opts)


@cli.command()
@click.argument("prompt", required=False)
@click.option("--instruction", "-i", "instructions", multiple=True, help="Instruction text to steer (repeatable). Steered in place if it occurs in the prompt, else appended after a blank line. 'auto': detect the constraint sentences of the prompt.")
@click.option("--occurrence", type=int, default=0, show_default=True, help="Which occurrence of an instruction repeated in the prompt to steer (0 = first, -1 = last).")
@engine_options
@click.option("--compare", is_flag=True, help="Also print the unsteered response (--method none).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON (text, token ids, spans, ranking, stats, trace).")
@click.option("--save-ranking", default=None, help="Write the layer ranking of the (first) prompt to this JSON file.")
@click.option("--html", "html_file", default=None, help="Write a per-token steering view (self-contained HTML page) to this file.")
@click.option("--input", "input_file", default=None, help="Batch mode: JSONL of {id, prompt, instructions | instruction[, system]}.")
@click.option("--output", "output_file", default=None, help="Batch mode: JSONL to write, one record per prompt (default: stdout).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts decoded together in batch mode.")
def generate(prompt, instructions, occurrence, model, alpha, beta, mode, method, layers, plausibility_filter,
             max_new_tokens, dtype, attn_implementation, system, ranking_file, device, compare, as_json, save_ranking,
             html_file, input_file, output_file, batch_size) -> None:
    """Generate a response to PROMPT with the instructions steered.

    \b
    Example:
      directer generate "Write a haiku about autumn." --instruction "Do not use any commas." --compare
    """
    if (prompt is None) == (input_file is None):
        raise UsageError("give either a PROMPT argument or --input FILE (batch mode), not both or neither")
    if input_file is None and output_file is not None:
        raise UsageError("--output needs --input (batch mode); for one prompt use --json")
    if input_file is not None and html_file is not None:
        raise UsageError("--html shows one prompt: use it without --input")
    records = _read_jsonl(input_file) if input_file else None
    max_new_tokens = 256 if max_new_tokens is None else max_new_tokens
    directer = _load(model, dtype, attn_implementation, device, alpha=alpha, beta=beta, mode=mode, method=method,
                     layers=parse_layers(layers), plausibility_filter=plausibility_filter, max_new_tokens=max_new_tokens)
    if records is None:
        _generate_one(directer, prompt, list(instructions), system, ranking_file, compare, as_json, save_ranking,
                      occurrence, html_file)
    else:
        _generate_batch(directer, records, list(instructions), system, ranking_file, compare, output_file, batch_size,
                        occurrence)


@cli.command()
@click.option("--max-new-tokens", type=int, default=48, show_default=True)
@click.option("--model", default=None, help="Model to demo (default: the bundled SmolLM2-135M-Instruct).")
def demo(max_new_tokens, model) -> None:
    """Steer the bundled model on a short example and show the unsteered response beside it."""
    directer = _load(model, "float32", None, None, max_new_tokens=max_new_tokens)
    click.echo(f'Prompt:      {DEMO_PROMPT}\nInstruction: {DEMO_INSTRUCTION}\n', err=False)
    _generate_one(directer, DEMO_PROMPT, [DEMO_INSTRUCTION], None, None, True, False, None)


@cli.command(name="eval")
@click.argument("benchmark", type=click.Choice(["ifeval"]))
@click.option("--method", "methods", multiple=True, help="Method to run (repeatable; default: none and directer), "
              "with optional parameters, e.g. --method static:alpha=3 --method pasta:filter=1.")
@engine_options(method=False)
@click.option("--limit", type=int, default=None, help="Only the first N prompts.")
@click.option("--sample", type=int, default=None, help="A seeded random sample of N prompts.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--output-dir", default=None, help="Run directory (default: runs/ifeval-<methods>); an existing one is resumed.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Share the methods out among N processes, each with an equal share of the CPU threads "
                   "(on a CPU, several single-threaded workers outrun one multi-threaded process on a small model).")
def eval_command(benchmark, methods, model, alpha, beta, mode, layers, plausibility_filter, max_new_tokens, dtype,
                 attn_implementation, system, ranking_file, device, limit, sample, seed, batch_size, output_dir,
                 workers) -> None:
    """Evaluate methods on an instruction-following benchmark, offline (resumable), and print the comparison.

    \b
    Example:
      directer eval ifeval --method none --method directer --sample 50 --max-new-tokens 512
    """
    from . import __version__
    from .evaluation import RunConfig, evaluate
    from .ifeval import load_ifeval
    from .summary import category_table, markdown_table

    methods = [method_label(m, plausibility_filter) for m in (methods or ["none", "directer"])]
    max_new_tokens = 512 if max_new_tokens is None else max_new_tokens
    if len(set(methods)) < len(methods):
        raise UsageError("a method is given twice: give each --method once")
    if limit is not None and sample is not None:
        raise UsageError("give --limit or --sample, not both")
    if workers < 1:
        raise UsageError(f"invalid --workers {workers}: it must be >= 1")
    if ranking_file or system:
        raise UsageError("--ranking and --system do not apply to eval (every prompt is ranked; IFEval has no system message)")
    layer_set = parse_layers(layers)
    for m in methods:
        SteeringConfig(method=m, alpha=alpha, beta=beta, mode=mode, layers=layer_set, max_new_tokens=max_new_tokens)
    prompts = load_ifeval(limit=limit, sample=sample, seed=seed)
    run_dir = Path(output_dir or f"runs/{benchmark}-{'-'.join(m.split(':')[0] for m in methods)}")
    directer = _load(model, dtype, attn_implementation, device, alpha=alpha, beta=beta, mode=mode,
                     max_new_tokens=max_new_tokens)
    config = RunConfig(model=directer.model_name, alpha=alpha, beta=beta, mode=mode,
                       layers=list(layer_set) if layer_set else None,
                       max_new_tokens=max_new_tokens, dtype=dtype, package_version=__version__,
                       selection={"limit": limit, "sample": sample, "seed": seed, "keys": [p.key for p in prompts]})
    t0 = time.perf_counter()
    if workers > 1 and len(methods) > 1:
        import torch

        from .workers import evaluate_parallel

        # Loaded here to name and check the model, and so that the bundled model's conversion cache is
        # written once, not raced by the workers; each worker loads its own copy.
        del directer
        threads = max(1, torch.get_num_threads() // workers)
        load = dict(model=model, dtype=dtype, attn_implementation=attn_implementation, device=device, alpha=alpha,
                    beta=beta, mode=mode, max_new_tokens=max_new_tokens)
        summaries = evaluate_parallel(load, run_dir, methods, prompts, config, workers, threads, batch_size=batch_size)
    else:
        summaries = evaluate(directer, run_dir, methods, prompts, config, batch_size=batch_size)
    click.echo(markdown_table(summaries) + "\n\n" + category_table(summaries))
    click.echo(f"directer: {len(prompts)} prompts x {len(methods)} methods in {time.perf_counter() - t0:.0f} s; "
               f"responses and summary in {run_dir}", err=True)


@cli.command(name="profile-heads")
@click.option("--output", "-o", required=True, help="Head profile to write (JSON), for --method pasta:profile=FILE.")
@click.option("--model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled model).")
@click.option("--sample", type=int, default=16, show_default=True, help="Held-out IFEval prompts scored per head.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the sample (use one your evaluation does not).")
@click.option("--layers", default=None, help="Layers whose heads are profiled, e.g. '8-15' (default: all).")
@click.option("--top-k", type=int, default=16, show_default=True, help="Heads kept in the profile.")
@click.option("--alpha-p", type=float, default=0.01, show_default=True, help="PASTA's attention scale outside the instruction.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--device", default=None)
def profile_heads_command(output, model, sample, seed, layers, top_k, alpha_p, max_new_tokens, batch_size, dtype,
                          device) -> None:
    """Profile attention heads for PASTA: steer each head alone on held-out IFEval prompts, keep the best.

    Resumable: progress is kept in OUTPUT.partial.jsonl after every head.

    \b
    Example:
      directer profile-heads --layers 8-15 --sample 16 --seed 1 -o heads.json
      directer eval ifeval --method none --method pasta:profile=heads.json --sample 200 --seed 0
    """
    from .ifeval import load_ifeval
    from .profiling import profile_heads

    layer_set = parse_layers(layers)
    SteeringConfig(method=f"pasta:alpha_p={alpha_p}", max_new_tokens=max_new_tokens)
    prompts = load_ifeval(sample=sample, seed=seed)
    directer = _load(model, dtype, None, device, method="none")
    from tqdm.auto import tqdm

    bar = tqdm(desc="heads", unit="head", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        profile = profile_heads(directer, prompts, Path(output), alpha_p=alpha_p, layers=layer_set, top_k=top_k,
                                max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    finally:
        bar.close()
    best = ", ".join(f"{la}.{h} ({100 * profile['scores'][f'{la}.{h}']:+.1f})" for la, h in profile["heads"][:5])
    click.echo(f"directer: wrote {output}: top heads (layer.head, accuracy vs unsteered): {best}", err=True)


@cli.command()
@click.argument("run_dir")
def report(run_dir) -> None:
    """Write report.html and report.md for an evaluation run directory."""
    from .report import write_report

    html, md = write_report(Path(run_dir))
    click.echo(f"directer: wrote {html} and {md}", err=True)


@cli.command()
@click.option("--model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--attn-implementation", default=None, help="eager | sdpa | ... (default: sdpa).")
@click.option("--device", default=None)
@click.option("--max-batch-size", type=int, default=8, show_default=True, help="Requests decoded together.")
@click.option("--max-tokens-limit", type=int, default=1024, show_default=True, help="Largest max_tokens a request may ask for.")
@click.option("--max-prompt-tokens", type=int, default=4096, show_default=True, help="Longest prompt accepted, in tokens.")
def serve(model, host, port, dtype, attn_implementation, device, max_batch_size, max_tokens_limit, max_prompt_tokens) -> None:
    """Serve the model behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions, streaming).

    A request steers when its body carries {"directer": {"instructions": [...], "alpha": ..., "beta": ...,
    "method": ..., "mode": ...}}; otherwise it decodes plainly.
    """
    import uvicorn

    from .server import ServerLimits, create_app

    if max_batch_size < 1 or max_tokens_limit < 1 or max_prompt_tokens < 2:
        raise UsageError("--max-batch-size and --max-tokens-limit must be >= 1, --max-prompt-tokens >= 2")
    directer = _load(model, dtype, attn_implementation, device, method="none")
    app = create_app(directer, ServerLimits(max_tokens_limit=max_tokens_limit, max_prompt_tokens=max_prompt_tokens,
                                            max_batch_size=max_batch_size, max_tokens_default=min(256, max_tokens_limit)))
    click.echo(f"directer: serving {directer.model_name} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


# -- helpers ----------------------------------------------------------------------------------------


def _load(model, dtype, attn_implementation, device, **config):
    from .api import Directer  # heavy imports (torch, transformers) only once arguments are valid

    SteeringConfig(**config)  # validate alpha, beta, mode, method before the (slow) model load
    click.echo(f"directer: loading {model or 'the bundled model'} ...", err=True)
    return Directer.from_pretrained(model, dtype=dtype, attn_implementation=attn_implementation, device=device, **config)


def _generate_one(directer, prompt, instructions, system, ranking_file, compare, as_json, save_ranking,
                  occurrence=0, html_file=None) -> None:
    result = directer.generate(prompt, instructions, system=system, ranking=ranking_file, occurrence=occurrence)
    plain = directer.generate(prompt, instructions, system=system, occurrence=occurrence, method="none") if compare else None
    if save_ranking and result.ranking is not None:
        from .ranking import Ranking

        Ranking(result.ranking, result.ranking_scores or [], result.mode, result.model).save(save_ranking)
    if html_file:
        from .html_view import render_html

        Path(html_file).write_text(render_html(result, directer.tokenizer, unsteered=plain), encoding="utf-8")
        click.echo(f"directer: wrote the steering view to {html_file}", err=True)
    if as_json:
        record = result.to_dict()
        if plain is not None:
            record["unsteered"] = plain.to_dict()
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    if plain is None:
        click.echo(result.text)
    else:
        click.echo(f"=== {compare_header(directer.config)} ===\n{result.text}\n")
        click.echo(f"=== UNSTEERED ===\n{plain.text}")
    s = result.stats
    click.echo(
        f"directer: {s.steps} tokens in {s.seconds:.2f}s; gate skips {s.gate_skips}, trials {s.trials}, "
        f"accepted {dict(sorted(s.accepted.items(), reverse=True))}, raw fallbacks {s.fallbacks}",
        err=True,
    )


def compare_header(config: SteeringConfig) -> str:
    """The title of the steered text in ``--compare``: the method and the run-wide settings its resolved
    policy takes (the run's alpha only where it scales keys with it, beta only where Eq. 2 is checked)."""
    from .methods import Directer as DirecterPolicy

    policy = config.policy()
    if parse_method(config.method)[0] == "none":
        return "UNSTEERED"
    directer = isinstance(policy, DirecterPolicy)
    filtered = getattr(policy, "filter", False)
    settings = []
    if directer or getattr(policy, "alpha", False) is None:  # None: the run's alpha (static)
        settings.append(f"alpha={config.alpha:g}")
    if directer or filtered:
        settings.append(f"beta={policy.beta:g}")
    if filtered and "filter" not in parse_method(config.method)[1]:  # from --plausibility-filter
        settings.append("plausibility filter")
    if directer:
        settings.append(policy.mode)
    return config.method.upper() + (f" ({', '.join(settings)})" if settings else "")


def _generate_batch(directer, records, default_instructions, system, ranking_file, compare, output_file, batch_size,
                    occurrence=0) -> None:
    from .api import _progress_bar

    prepared, ids = [], []
    for line_no, rec in records:
        instr = rec.get("instructions", rec.get("instruction", default_instructions))
        if isinstance(instr, str):
            instr = [instr]
        try:
            prepared.append(directer.prepare(rec["prompt"], instr, system=rec.get("system", system),
                                             occurrence=rec.get("occurrence", occurrence)))
        except DirecterError as exc:
            raise type(exc)(f"input line {line_no} (id {rec.get('id')!r}): {exc}") from None
        ids.append(rec.get("id", line_no))
    out = open(output_file, "w", encoding="utf-8") if output_file else sys.stdout
    bar = _progress_bar(len(prepared), True)
    try:
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start:start + batch_size]
            results = directer.generate_prepared(chunk, batch_size=batch_size, ranking=ranking_file)
            plain = directer.generate_prepared(chunk, batch_size=batch_size, config=directer._config(None, {"method": "none"})) if compare else None
            for k, result in enumerate(results):
                record = {"id": ids[start + k], **result.to_dict()}
                if plain is not None:
                    record["unsteered"] = plain[k].to_dict()
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(chunk))
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()


def _read_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {p}")
    records = []
    for line_no, line in _lines(p):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"malformed JSON on line {line_no} of {p}: {exc.msg} (one JSON object per line)") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), (str, list)):
            raise UsageError(f"line {line_no} of {p} needs a \"prompt\" field (a string or chat messages)")
        records.append((line_no, rec))
    if not records:
        raise UsageError(f"input file {p} has no records")
    return records


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                yield i, line


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit code 2 for usage errors and 1 for the others."""
    warnings.showwarning = _warning
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        cli.main(args=argv, prog_name="directer", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), 2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except DirecterError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
