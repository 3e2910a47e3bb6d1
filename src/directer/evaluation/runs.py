"""Offline evaluation (IFEval, GSM8K-Format, task files): resumable runs of several methods on the same
items, and their scores.

A run directory holds ``config.json`` (what the run is: task, model, settings, item selection, package
version) and one ``responses-<method>.jsonl`` per method, in IFEval's response format (``prompt``,
``response``) plus our fields (key, spans, stats, trace, perplexity). Records are appended and synced
batch by batch, so an interrupted run loses at most the batch in flight and continues where it stopped;
a directory made with a different configuration is refused rather than mixed. ``engine.json`` pins the
engine's kernel choices for the run, so that resumes and launched processes decode alike.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..autospans import detect_spans, last_occurrences, occurrences
from ..config import SteeringConfig
from ..errors import UsageError
from ..progress import progress_bar
from .records import merge_parts, method_records, part_path, read_records, responses_path, rewrite_records
from .tasks.base import EvalItem
from .tasks.ifeval import IFEVAL_SHA256
from .tasks.scoring import score_item

if TYPE_CHECKING:  # torch and the model are imported only where responses are generated
    from ..api import Directer
    from ..text.spans import PreparedPrompt

__all__ = [
    "CONFIG_FILE",
    "check_run",
    "evaluate",
    "open_run",
    "prepare_items",
    "read_records",
    "remaining",
    "responses_path",
    "run_method",
    "RunConfig",
    "saved_config",
    "score_records",
    "score_run",
    "summarize_run",
    "table_order",
    "unfinished",
]

CONFIG_FILE = "config.json"
ENGINE_FILE = "engine.json"  # the engine's kernel choices, decided once per run


@dataclass
class RunConfig:
    """Everything that decides a run's responses; two runs with equal configs are comparable."""

    model: str
    alpha: float
    beta: float
    mode: str
    layers: list[int] | None
    max_new_tokens: int
    selection: dict[str, Any]  # limit / sample / seed, and the selected keys
    spans: str = "auto"
    dataset_sha256: str = IFEVAL_SHA256
    package_version: str = ""
    dtype: str = "float32"
    methods: list[str] = field(default_factory=list)
    # temperature, top_p, top_k, min_p, seed of a sampled run (None: greedy decoding)
    sampling: dict[str, Any] | None = None
    # The benchmark (ifeval, gsm8k-format, tasks) and its arguments (data file, format version); run
    # directories written before these existed are IFEval runs.
    task: str = "ifeval"
    task_args: dict[str, Any] = field(default_factory=dict)

    def check_compatible(self, other: "RunConfig", where: Path) -> None:
        mine, theirs = asdict(self), asdict(other)
        for name in mine:
            if name != "methods" and mine[name] != theirs[name]:
                raise UsageError(
                    f"run directory {where} was made with a different {name} ({_short(theirs[name])} there, "
                    f"{_short(mine[name])} now): use another --output-dir or the same settings"
                )


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def saved_config(run_dir: Path) -> RunConfig | None:
    """The configuration a run directory was made with (None: not made yet)."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return RunConfig(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"corrupt {path}: {exc} (remove the directory or use another --output-dir)") from None


def check_run(run_dir: Path, config: RunConfig) -> None:
    """Refuse a run directory made with other settings, or one that cannot be written; writes nothing
    (so that a mismatch is reported before any model is loaded)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output-dir {run_dir} is a file: give a folder")
    existing = next((p for p in [run_dir, *run_dir.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise UsageError(f"--output-dir {run_dir} cannot be written (no permission in {existing}): choose another")
    old = saved_config(run_dir) if run_dir.is_dir() else None
    if old is not None:
        config.check_compatible(old, run_dir)


def remaining(run_dir: Path, method: str, prompts: Sequence[EvalItem]) -> int:
    """How many of ``prompts`` a method has no finished response for in ``run_dir``."""
    return len(unfinished(run_dir, method, prompts))


def unfinished(run_dir: Path, method: str, prompts: Sequence[EvalItem]) -> list[EvalItem]:
    """The ``prompts`` a method has no finished response for (in its responses file or any part file)."""
    done = {r["key"] for r in method_records(run_dir, method)}
    return [p for p in prompts if p.key not in done]


def open_run(run_dir: Path, config: RunConfig) -> RunConfig:
    """Create the run directory or check that it holds a run of the same configuration."""
    check_run(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    config = replace(config, methods=list(dict.fromkeys(config.methods)))  # in the order given
    old = saved_config(run_dir)
    if old is not None:
        config = replace(config, methods=old.methods + [m for m in config.methods if m not in old.methods])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
    os.replace(tmp, path)
    return config


def run_method(directer: Directer | None, run_dir: Path, method: str, prompts: Sequence[EvalItem],
               config: RunConfig, batch_size: int = 8, progress: bool = True, position: int | None = None,
               share: Sequence[EvalItem] | None = None, state: Any = None) -> list[dict]:
    """Generate (or finish generating) one method's responses; return the records this process holds, in
    prompt order.

    ``share``: the prompts this process decodes (default: every unfinished one). ``state``: accelerate's
    process state when several processes were launched; each then appends to its own part file.
    ``directer`` may be None when nothing is left to generate (a finished run, summarized again)."""
    if batch_size < 1:
        raise UsageError(f"invalid batch size {batch_size}: it must be >= 1")
    several = state is not None and state.num_processes > 1
    path = part_path(run_dir, method, state.process_index) if several else responses_path(run_dir, method)
    wanted = {p.key for p in prompts}
    if several:
        path.parent.mkdir(parents=True, exist_ok=True)
    records = [r for r in read_records(path) if r["key"] in wanted]
    if path.exists():
        rewrite_records(path, records)  # drop a torn line before appending
    todo = list(share) if share is not None else unfinished(run_dir, method, prompts)
    if not several:
        records = [r for r in method_records(run_dir, method) if r["key"] in wanted]
    order = {p.key: i for i, p in enumerate(prompts)}
    if not todo:
        return sorted(records, key=lambda r: order[r["key"]])
    if directer is None:
        raise UsageError(f"method {method!r} has {len(todo)} prompts left to generate: pass a model")
    import torch  # here, so that checking or summarizing a run directory needs no torch

    from ..engine.devices import input_device
    from .quality import perplexities
    steering = SteeringConfig(alpha=config.alpha, beta=config.beta, mode=config.mode, method=method,
                              layers=tuple(config.layers) if config.layers else None,
                              max_new_tokens=config.max_new_tokens, **(config.sampling or {}))
    desc = f"{method} [process {state.process_index}]" if several else method
    total = len(todo) if several else len(prompts)
    bar = progress_bar(total, desc=desc, initial=total - len(todo), position=position, enabled=progress)
    # What a time ratio between methods depends on: the summary compares only like with like.
    timing = {"threads": torch.get_num_threads(), "device": str(input_device(directer.model))}
    with open(path, "a", encoding="utf-8") as out:
        # The engine keeps batch_size prompts decoding and replaces each finished one; a finished
        # prompt's record is written at once, so an interrupted run loses nothing already generated.
        for chunk in _chunks(todo, _GROUP):
            prepared, spans = prepare_items(directer, chunk, steering)
            last = [time.perf_counter()]
            unscored: list[tuple[int, Any, float]] = []  # (index, result, cost) awaiting a scoring pass

            def write(i: int, r, chunk=chunk, prepared=prepared, spans=spans) -> None:
                # Decoding wall time since the previous record (writing and scoring excluded): the
                # records sum to the method's time.
                cost = time.perf_counter() - last[0]
                if r.perplexity is None and r.token_ids:
                    # A method without a raw model (whose results come a batch at a time): score its
                    # responses in one pass per batch, then write them.
                    unscored.append((i, r, cost))
                    if len(unscored) >= batch_size:
                        score()
                else:
                    put(chunk[i], spans[i], r, r.perplexity, cost)
                last[0] = time.perf_counter()

            def score(chunk=chunk, prepared=prepared, spans=spans) -> None:
                if not unscored:
                    return
                xs = perplexities(directer.model, [prepared[i].input_ids for i, _, _ in unscored],
                                  [r.token_ids for _, r, _ in unscored])
                for (i, r, cost), x in zip(unscored, xs):
                    put(chunk[i], spans[i], r, x, cost)
                unscored.clear()

            def put(p, span, r, x, cost: float) -> None:
                rec = {"key": p.key, "prompt": p.prompt, "response": r.text, "method": method, "spans": span,
                       "finish_reason": r.finish_reason, "num_tokens": len(r.token_ids), "perplexity": x,
                       "stats": r.to_dict()["stats"], "trace": r.to_dict()["trace"], "ranking": r.ranking,
                       "cost_seconds": cost, "timing": timing, "sampling": r.sampling}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                records.append(rec)
                if bar is not None:
                    bar.update(1)

            directer.generate_prepared(prepared, config=steering, batch_size=batch_size, on_result=write)
            score()
    if bar is not None:
        bar.close()
    return sorted(records, key=lambda r: order[r["key"]])


def prepare_items(directer: Directer, items: Sequence[EvalItem],
                  config: SteeringConfig) -> tuple[list[PreparedPrompt], list[list[str]]]:
    """Render items with their instruction spans (given, or detected automatically; an item without one is
    decoded unsteered); return the prepared prompts and the span texts."""
    ranges = [_given_spans(p) if p.instructions is not None else
              detect_spans(p.prompt, p.instruction_id_list, p.kwargs, directives=p.span_rules != "ifeval")
              for p in items]
    spans = [[p.prompt[a:b] for a, b in r] for p, r in zip(items, ranges)]
    # A short span (a "***" divider, say) can also occur earlier in the prompt: steer the copy found.
    prepared = [
        directer.prepare(p.prompt, s, occurrence=occurrences(p.prompt, r) if s else 0,
                         config=config if s else replace(config, method="none"))
        for p, s, r in zip(items, spans, ranges)
    ]
    return prepared, spans


def _given_spans(item: EvalItem) -> list[tuple[int, int]]:
    try:
        return last_occurrences(item.prompt, item.instructions or [])
    except ValueError as exc:
        raise UsageError(f"item {item.key}: instruction {exc.args[0][:60]!r} is not in its prompt") from None


# Prompts rendered and handed to the engine at a time (rendering is cheap; this bounds memory only).
_GROUP = 512


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def score_records(prompts: Sequence[EvalItem], records: Sequence[dict]) -> list[Any]:
    """Scores of each record (checks and answer), matched to its item by key."""
    by_key = {p.key: p for p in prompts}
    return [score_item(by_key[r["key"]], r["response"]) for r in records]


def evaluate(directer: Directer | None, run_dir: Path, methods: Sequence[str], prompts: Sequence[EvalItem],
             config: RunConfig, batch_size: int = 8, progress: bool = True, state: Any = None) -> list[Any] | None:
    """Run (or resume) every method, score all methods of the run directory, write the summary files.

    With ``state`` (accelerate's process state of a launched run), each process decodes its share of
    every method's unfinished prompts (``split_between_processes``) into its own part file; the main
    process then merges the parts and summarizes, the others return None. Shares are cut from what is
    unfinished when the run starts, so a run resumed with another number of processes repeats nothing."""
    several = state is not None and state.num_processes > 1
    if not several or state.is_main_process:
        config = open_run(run_dir, replace(config, methods=list(methods)))
    if several:
        state.wait_for_everyone()  # the directory and its config exist before anyone reads the records
    if directer is not None:
        _pin_kernels(run_dir, directer, state if several else None)
    todo = {m: unfinished(run_dir, m, prompts) for m in methods}
    if progress and (not several or state.is_main_process):
        _report_kept(run_dir, todo, len(prompts))
    if several:
        state.wait_for_everyone()  # every process has read the same files before any process appends
    mine: dict[str, list[dict]] = {}
    for method in methods:
        share = todo[method]
        if several:
            with state.split_between_processes(share) as part:
                share = list(part)
        mine[method] = run_method(directer, run_dir, method, prompts, config, batch_size=batch_size, progress=progress,
                                  share=share, state=state, position=state.process_index if several else None)
    if several:
        wanted = {m: {p.key for p in todo[m]} for m in methods}
        new = {m: [r for r in mine[m] if r["key"] in wanted[m]] for m in methods}
        written = _report_processes(state, new)
        state.wait_for_everyone()  # every part file is complete
        if not state.is_main_process:
            return None
        _check_visible(run_dir, written)
    keys = [p.key for p in prompts]
    for method in methods:
        merge_parts(run_dir, method, keys)
    return summarize_run(run_dir, prompts, table_order(methods, config))


def _pin_kernels(run_dir: Path, directer: Directer, state: Any = None) -> None:
    """Decide the engine's kernel choices once per run (per device and dtype) and record them in
    ``engine.json``: every process of a launch and every resume decodes with the same ones. Timed in
    each process, a choice could differ between processes, and near-ties then decode differently."""
    path = run_dir / ENGINE_FILE
    runner = directer.runner
    key = runner.matmul_key()
    if state is None or state.is_main_process:
        pinned = json.loads(path.read_text()) if path.exists() else {}
        if key not in pinned.get("matmul", {}):
            pinned.setdefault("matmul", {})[key] = runner.resolve_matmul()
            path.write_text(json.dumps(pinned, indent=1) + "\n")
    if state is not None:
        state.wait_for_everyone()  # the choice is on disk before any process reads it
    runner.matmul = json.loads(path.read_text())["matmul"][key]


def _report_kept(run_dir: Path, todo: dict[str, list[EvalItem]], total: int) -> None:
    """Say what a resumed run keeps, and that a finished one is only summarised."""
    if not any(todo.values()):
        print(f"directer: every response is already in {run_dir}: nothing to decode, summarising",
              file=sys.stderr, flush=True)
        return
    for method, left in todo.items():
        if len(left) < total:
            print(f"directer: {method}: {total - len(left)} of {total} responses kept from an earlier run, "
                  f"decoding the other {len(left)}", file=sys.stderr, flush=True)


def _report_processes(state: Any, new: dict[str, list[dict]]) -> dict[int, dict[str, list[str]]]:
    """One line per process on the main process: what it decoded in this launch, and how fast. Returns
    (on every process) the keys each process wrote, per method."""
    from accelerate.utils import gather_object

    records = [r for rs in new.values() for r in rs]
    tokens, seconds = sum(r["num_tokens"] for r in records), sum(r.get("cost_seconds", 0.0) for r in records)
    keys = {m: [r["key"] for r in rs] for m, rs in new.items()}
    rows = gather_object([(state.process_index, len(records), tokens, seconds, keys)])
    if state.is_main_process:
        for index, n, tokens, seconds, _ in sorted(rows, key=lambda row: row[0]):
            rate = f", {tokens / seconds:.1f} tokens/s" if seconds > 0 else ""
            print(f"directer: process {index}: {n} responses, {tokens} tokens in {seconds:.0f} s{rate}",
                  file=sys.stderr, flush=True)
    return {row[0]: row[4] for row in rows}


def _check_visible(run_dir: Path, written: dict[int, dict[str, list[str]]]) -> None:
    """Every process's records must be readable here before merging: on several machines the run
    directory has to be on a file system they share."""
    for index, by_method in sorted(written.items()):
        for method, keys in by_method.items():
            found = {r["key"] for r in read_records(part_path(run_dir, method, index))}
            if not set(keys) <= found:
                raise UsageError(f"process {index} wrote {len(keys)} responses of {method!r} to "
                                 f"{part_path(run_dir, method, index)}, but {len(set(keys) - found)} of them are not "
                                 "visible to the main process: on several machines, give --output-dir on a file "
                                 "system every machine shares (NFS, a cluster file system), or copy the other "
                                 "machines' parts/ folders here and rerun the command to merge them")


def table_order(methods: Sequence[str], config: RunConfig) -> list[str]:
    """The table follows the command's order; methods run earlier in this directory come after."""
    return list(methods) + [m for m in config.methods if m not in methods]


def score_run(run_dir: Path, prompts: Sequence[EvalItem], methods: Sequence[str]) -> dict[str, tuple[list[dict], list[Any]]]:
    """Each method's finished records on ``prompts`` (in prompt order) with their scores."""
    keys = [p.key for p in prompts]
    scored = {}
    for method in methods:
        records = {r["key"]: r for r in method_records(run_dir, method)}
        missing = [k for k in keys if k not in records]
        if missing:
            raise UsageError(f"method {method!r} has no response for {len(missing)} of the prompts in {run_dir}: "
                             "run `directer eval` again to finish it")
        ordered = [records[k] for k in keys]
        scored[method] = (ordered, score_records(prompts, ordered))
    return scored


def summarize_run(run_dir: Path, prompts: Sequence[EvalItem], methods: Sequence[str],
                  scored: dict[str, tuple[list[dict], list[Any]]] | None = None) -> list[Any]:
    """Summarize the scored methods (scoring them if ``scored`` is None); write summary.json and summary.md.

    IFEval runs break accuracy down by category; other tasks by instruction (each constraint of
    GSM8K-Format is its own row)."""
    from .summary import breakdown_table, compare, markdown_table, summarize_method, to_json

    scored = scored if scored is not None else score_run(run_dir, prompts, methods)
    config = saved_config(run_dir)
    by_instruction = config is not None and config.task != "ifeval"
    order = (["none"] if "none" in scored else []) + [m for m in methods if m != "none"]
    summaries = []
    for method in order:
        s = summarize_method(method, *scored[method], by_instruction=by_instruction)
        if method != "none" and "none" in scored:
            compare(scored["none"], scored[method], s)
        summaries.append(s)
    (run_dir / "summary.json").write_text(json.dumps(to_json(summaries), indent=1) + "\n")
    (run_dir / "summary.md").write_text(markdown_table(summaries) + "\n\n" + breakdown_table(summaries) + "\n")
    return summaries
