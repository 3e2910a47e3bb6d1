"""``directer eval``, ``directer profile-heads`` and ``directer report``: the evaluation commands (their
modules are imported only when the command runs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..config import SteeringConfig
from ..errors import UsageError
from ..methods import method_label, parse_layers
from ..evaluation.tasks.registry import TASKS
from ..models.locate import check_model_source, display_name
from ..processes import launched, process_device, process_state
from .options import (DEVICE_HELP, DTYPE_HELP, DTYPES, check_cache_tokens, check_placement, engine_options, load_directer, load_in_turn,
                      run_dtype, sampling_settings)

__all__ = ["eval_command", "profile_heads_command", "report"]


@click.command(name="eval")
@click.argument("benchmark", type=click.Choice(list(TASKS)))
@click.argument("task_file", required=False, metavar="[TASK_FILE]")
@click.option("--method", "methods", multiple=True, help="Method to run (repeatable; default: none and directer), "
              "with optional parameters, e.g. --method static:alpha=3 --method pasta:filter=1.")
@engine_options(method=False, max_new_tokens=512, seed_option="--sampling-seed")
@click.option("--data", default=None, help="gsm8k-format: the problems as JSON lines with question and answer "
              "(default: openai/gsm8k's test split from the Hub, through the datasets library).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N items (default: all).")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="A seeded random sample of N items (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Prompts decoded together (on a 2-core CPU, 32 is about twice as fast per token as 8).")
@click.option("--output-dir", default=None, help="Run directory (default: runs/<benchmark>-<methods>); an existing one is resumed.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Run as N CPU processes on this machine (torchrun's launcher), each with an equal share of the "
                   "threads and of every method's prompts (on a CPU, several single-threaded processes outrun one "
                   "multi-threaded process on a small model). Under accelerate launch or torchrun, leave it at 1.")
def eval_command(benchmark, task_file, methods, model, alpha, beta, mode, layers, plausibility_filter, max_new_tokens, dtype,
                 attn_implementation, system, ranking_file, device, device_map, cache_tokens, cache_memory, temperature, top_p, top_k, min_p,
                 sampling_seed, data, limit, sample, seed, batch_size, output_dir, workers) -> None:
    """Evaluate methods on a benchmark, offline (resumable), and print the comparison.

    BENCHMARK is ifeval (the 541 IFEval prompts, bundled), gsm8k-format (GSM8K problems with a format
    constraint appended: format and answer accuracy; --data FILE or the Hub) or tasks (your TASK_FILE
    of JSON lines: prompt, instructions, checks, answer; see docs/evaluation.md).

    \b
    Example:
      directer eval ifeval --method none --method directer --sample 50 --max-new-tokens 512
      directer eval ifeval --sample 200 --temperature 0.7 --top-p 0.9 --sampling-seed 1
      directer eval gsm8k-format --data gsm8k-test.jsonl --sample 200 --max-new-tokens 256
      directer eval tasks examples/tasks.jsonl --method none --method directer

    With --temperature > 0 every prompt draws from its own stream of --sampling-seed (default 0), so a
    resumed run continues exactly as an uninterrupted one would.
    """
    from .. import __version__
    from ..evaluation.runs import RunConfig, check_run, evaluate, remaining
    from ..evaluation.summary import breakdown_table, markdown_table
    from ..evaluation.tasks.registry import load_task, select

    methods = [method_label(m, plausibility_filter) for m in (methods or ["none", "directer"])]
    if len(set(methods)) < len(methods):
        raise UsageError("a method is given twice: give each --method once")
    if limit is not None and sample is not None:
        raise UsageError("give --limit or --sample, not both")
    if workers < 1:
        raise UsageError(f"invalid --workers {workers}: it must be >= 1")
    if workers > 1 and launched():
        raise UsageError("--workers starts processes itself: under accelerate launch or torchrun, drop --workers "
                         "(the launcher's process count is used)")
    check_placement(device, device_map, workers)
    check_cache_tokens(cache_tokens, max_new_tokens)
    if ranking_file or system:
        raise UsageError("--ranking and --system do not apply to eval (every prompt is ranked; the benchmarks have no "
                         "system message)")
    if (benchmark == "tasks") != (task_file is not None):
        raise UsageError("give a task file only with `tasks`: directer eval tasks FILE.jsonl" if task_file
                         else "`directer eval tasks` needs a task file: directer eval tasks FILE.jsonl")
    if data is not None and benchmark != "gsm8k-format":
        raise UsageError("--data is for gsm8k-format (a task file is given as `directer eval tasks FILE`)")
    layer_set = parse_layers(layers)
    sampling = sampling_settings(temperature, top_p, top_k, min_p, sampling_seed, "--sampling-seed")
    if temperature > 0 and sampling["seed"] is None:
        sampling["seed"] = 0  # a run directory must reproduce (and resume) its draws
    for m in methods:
        SteeringConfig(method=m, alpha=alpha, beta=beta, mode=mode, layers=layer_set, max_new_tokens=max_new_tokens,
                       **sampling)
    task = load_task(benchmark, {"data": data, "file": task_file})
    prompts = select(task.items, limit=limit, sample=sample, seed=seed, what=task.label)
    stem = Path(task_file).stem if task_file else benchmark
    run_dir = Path(output_dir or f"runs/{stem}-{'-'.join(m.split(':')[0] for m in methods)}")
    config = RunConfig(model=display_name(model), alpha=alpha, beta=beta, mode=mode,
                       task=benchmark, task_args=task.args, dataset_sha256=task.sha256,
                       layers=list(layer_set) if layer_set else None,
                       max_new_tokens=max_new_tokens, package_version=__version__,
                       dtype=run_dtype(dtype, mode, device, device_map),
                       sampling=sampling if temperature > 0 else None,
                       selection={"limit": limit, "sample": sample, "seed": seed, "keys": [p.key for p in prompts]})
    check_run(run_dir, config)  # a run directory made with other settings is refused before the model loads
    check_model_source(model)
    if workers > 1 and not launched():
        from .launch import command_line, relaunch, without_option

        relaunch(workers, without_option(command_line(), "--workers"))
        return
    state = process_state(device) if launched() else None
    load = dict(model=model, dtype=config.dtype, attn_implementation=attn_implementation, device=process_device(state, device),
                device_map=device_map, cache_tokens=cache_tokens, cache_memory=cache_memory,
                alpha=alpha, beta=beta, mode=mode, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    if not any(remaining(run_dir, m, prompts) for m in methods):
        if state is None or state.is_main_process:
            click.echo(f"directer: every method is finished in {run_dir}; summarizing (no model needed)", err=True)
        summaries = evaluate(None, run_dir, methods, prompts, config, batch_size=batch_size, state=state)
    else:
        summaries = evaluate(load_in_turn(state, load), run_dir, methods, prompts, config, batch_size=batch_size,
                             state=state)
    if summaries is None:  # one of several processes: the main one prints the table
        return
    click.echo(markdown_table(summaries) + "\n\n" + breakdown_table(summaries))
    click.echo(f"directer: {_count(len(prompts), 'prompt')} x {_count(len(methods), 'method')} in "
               f"{time.perf_counter() - t0:.0f} s; responses and summary in {run_dir}", err=True)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@click.command(name="profile-heads")
@click.option("--output", "-o", required=True, help="Head profile to write (JSON), for --method pasta:profile=FILE.")
@click.option("--model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled model).")
@click.option("--sample", type=click.IntRange(min=1), default=16, show_default=True, help="Held-out IFEval prompts scored per head.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the sample (use one your evaluation does not).")
@click.option("--layers", default=None, help="Layers whose heads are profiled, e.g. '8-15' (default: all).")
@click.option("--top-k", type=click.IntRange(min=1), default=16, show_default=True, help="Heads kept in the profile.")
@click.option("--alpha-p", type=float, default=0.01, show_default=True, help="PASTA's attention scale outside the instruction.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="Token limit per response while profiling.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Prompts decoded together.")
@click.option("--dtype", type=DTYPES, default="float32", show_default=True, help=DTYPE_HELP)
@click.option("--device", default=None, help=DEVICE_HELP)
def profile_heads_command(output, model, sample, seed, layers, top_k, alpha_p, max_new_tokens, batch_size, dtype,
                          device) -> None:
    """Profile attention heads for PASTA: steer each head alone on held-out IFEval prompts, keep the best.

    Resumable: progress is kept in OUTPUT.partial.jsonl after every head.

    \b
    Example:
      directer profile-heads --layers 8-15 --sample 16 --seed 1 -o heads.json
      directer eval ifeval --method none --method pasta:profile=heads.json --sample 200 --seed 0
    """
    from ..evaluation.tasks.ifeval import load_ifeval
    from ..evaluation.profiling import profile_heads

    layer_set = parse_layers(layers)
    SteeringConfig(method=f"pasta:alpha_p={alpha_p}", max_new_tokens=max_new_tokens)
    prompts = load_ifeval(sample=sample, seed=seed)
    directer = load_directer(model, dtype, None, device, method="none")
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


@click.command()
@click.argument("run_dir")
@click.option("--data", default=None, help="Where the run's data file (gsm8k-format --data, or the task file) is now, "
              "if it moved; its content must be unchanged.")
def report(run_dir, data) -> None:
    """Write report.html and report.md for an evaluation run directory."""
    from ..evaluation.report import write_report

    html, md = write_report(Path(run_dir), data=data)
    click.echo(f"directer: wrote {html} and {md}", err=True)
