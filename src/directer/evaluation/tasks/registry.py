"""The benchmarks ``directer eval`` knows, by name, and the selection of their items.

A run directory records the task's name and arguments (``RunConfig.task``, ``task_args``) and the data's
sha256, so that a report or a resumed run loads the same items, or refuses data that changed.
"""

from __future__ import annotations

import random
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

from ...errors import UsageError
from .base import EvalItem

__all__ = ["load_task", "select", "TaskData", "TASKS"]

#: name -> what it is (for help texts)
TASKS = {
    "ifeval": "the 541 IFEval prompts with Google's reference checkers (offline)",
    "gsm8k-format": "GSM8K problems with a format constraint appended: format and answer accuracy",
    "tasks": "your own task file (JSON lines: prompt, instructions, checks, answer)",
}


@dataclass
class TaskData:
    name: str
    items: list[EvalItem]
    sha256: str
    args: dict[str, Any]
    label: str  # how reports name the items ("IFEval prompts", "GSM8K-Format problems", ...)
    title: str  # how reports name the benchmark


def load_task(name: str, args: dict[str, Any] | None = None) -> TaskData:
    """All items of task ``name``; ``args``: ``data`` (gsm8k-format: a JSON-lines file, None = the Hub),
    ``file`` (tasks: the task file)."""
    args = dict(args or {})
    # Kept absolute in the run's config, so that a report made from another folder finds the same file.
    for name_ in ("data", "file"):
        if args.get(name_):
            args[name_] = str(Path(args[name_]).expanduser().resolve())
    if name == "ifeval":
        from .ifeval import IFEVAL_SHA256, load_ifeval

        return TaskData(name, load_ifeval(), IFEVAL_SHA256, {}, "IFEval prompts", "IFEval")
    if name == "gsm8k-format":
        from .gsm8k_format import GSM8K_FORMAT_VERSION, gsm8k_format_items, load_gsm8k

        rows, digest = load_gsm8k(args.get("data"))
        return TaskData(name, gsm8k_format_items(rows), digest,
                        {"data": args.get("data"), "version": GSM8K_FORMAT_VERSION}, "GSM8K-Format problems", "GSM8K-Format")
    if name == "tasks":
        from .task_file import load_task_file

        if not args.get("file"):
            raise UsageError("`directer eval tasks` needs a task file: directer eval tasks FILE.jsonl")
        items, digest = load_task_file(args["file"])
        return TaskData(name, items, digest, {"file": args["file"]}, "task-file items", "Task file")
    raise UsageError(f"unknown benchmark {name!r}: use one of {', '.join(TASKS)}")


def select(items: Sequence[EvalItem], limit: int | None = None, sample: int | None = None,
           seed: int = 0, what: str = "items") -> list[EvalItem]:
    """``sample`` items drawn with ``random.Random(seed)`` (returned sorted by key, as IFEval's samples
    always were), then the first ``limit``."""
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise UsageError(f"invalid {name} {value}: it must be >= 1")
    chosen = list(items)
    if sample is not None:
        if sample > len(chosen):
            raise UsageError(f"sample {sample} is larger than the {len(chosen)} {what}")
        chosen = sorted(random.Random(seed).sample(chosen, sample), key=lambda item: item.key)
    return chosen[:limit] if limit is not None else chosen
