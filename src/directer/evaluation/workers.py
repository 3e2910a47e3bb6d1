"""``directer eval --workers N``: the methods of one run shared out among worker processes.

On a CPU a small model does not keep many threads busy: on the 2-core CI machine two single-threaded
processes decode about 1.5 times as many tokens per second as one process with two threads (measured on
the bundled model, IFEval prompts, batches of 32). Each worker loads the model, runs its methods into the
common run directory (one responses file per method, so workers never write the same file) and stops;
the parent then scores and summarizes the run as ``directer eval`` does. Resuming works as usual: a
method's finished batches are kept whichever worker wrote them.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import DirecterError, UsageError
from .runs import RunConfig, open_run, remaining, run_method, summarize_run, table_order
from .tasks.base import EvalItem

__all__ = ["evaluate_parallel", "split_methods"]


def split_methods(methods: Sequence[str], workers: int, remaining: dict[str, int] | None = None) -> list[list[str]]:
    """Deal the methods out, dearest first, each to the least loaded worker, so that they finish together.

    Cost guess: a filtered bias method decodes two streams, the others about one plus trials; times the
    prompts a method still has to do (``remaining``, for a resumed run), a finished method costing nothing.
    """
    def cost(m: str) -> int:
        streams = 2 if "filter=1" in m and m.split(":")[0] in {"pasta", "spotlight", "instaboost"} else 1
        return streams * (remaining[m] if remaining is not None else 1)

    methods = [m for m in methods if cost(m) > 0]
    groups: list[list[str]] = [[] for _ in range(min(workers, len(methods)))]
    load = [0] * len(groups)
    for m in sorted(methods, key=cost, reverse=True):
        i = load.index(min(load))
        groups[i].append(m)
        load[i] += cost(m)
    return [g for g in groups if g]


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the children started inside the block (spawned children copy it)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker(position: int, threads: int, load: dict[str, Any], run_dir: str, methods: list[str],
            prompts: list[EvalItem], config: RunConfig, batch_size: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from ..api import Directer

    try:
        directer = Directer.from_pretrained(**load)
        for method in methods:
            run_method(directer, Path(run_dir), method, prompts, config, batch_size=batch_size, position=position)
    except DirecterError as exc:  # one line, like the command itself; the parent names the worker's methods
        print(f"directer: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # the parent stops every worker; finished batches are on disk
        sys.exit(130)


def evaluate_parallel(load: dict[str, Any], run_dir: Path, methods: Sequence[str], prompts: Sequence[EvalItem],
                      config: RunConfig, workers: int, threads: int, batch_size: int = 8) -> list[Any]:
    """Run (or resume) the methods in ``workers`` processes of ``threads`` torch threads each; summarize."""
    if workers < 1 or threads < 1:
        raise UsageError(f"invalid --workers {workers} / threads {threads}: both must be >= 1")
    config = open_run(run_dir, replace(config, methods=list(methods)))  # once, before any worker writes
    groups = split_methods(methods, workers, {m: remaining(run_dir, m, prompts) for m in methods})
    if groups:
        print(f"directer: {len(groups)} workers, {threads} thread(s) each: "
              + " | ".join(", ".join(g) for g in groups), file=sys.stderr)
    ctx = multiprocessing.get_context("spawn")  # a forked torch runtime is not safe to use
    procs = []
    with _environment(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)):
        for i, group in enumerate(groups):
            p = ctx.Process(target=_worker, name=f"directer-eval-{i}",
                            args=(i, threads, load, str(run_dir), group, list(prompts), config, batch_size))
            p.start()
            procs.append(p)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        raise
    failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        what = ", ".join(f"worker {i} ({', '.join(groups[i])}) exit code {code}" for i, code in failed)
        raise DirecterError(f"{what}: see its messages above; finished batches are kept, rerun the same command to resume")
    return summarize_run(run_dir, prompts, table_order(methods, config))
