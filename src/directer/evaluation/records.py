"""The responses files of a run directory: one ``responses-<method>.jsonl`` per method, and the part
files of a data-parallel run (``parts/responses-<method>.rank<K>.jsonl``, one per launched process, so
that no two processes append to the same file). A method's records are those of both; the main process
merges the parts into the responses file once every process has finished.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["merge_parts", "method_records", "part_path", "part_paths", "read_records", "responses_path",
           "rewrite_records"]

PARTS = "parts"


def responses_path(run_dir: Path, method: str) -> Path:
    """``responses-<method>.jsonl``; a method with parameters (``static:alpha=3``) becomes ``static+alpha=3``."""
    slug = re.sub(r"[^A-Za-z0-9._=+-]", "_", method.replace(":", "+"))
    return run_dir / f"responses-{slug}.jsonl"


def part_path(run_dir: Path, method: str, rank: int) -> Path:
    """The file process ``rank`` of a launched run writes the method's records to."""
    return run_dir / PARTS / f"{responses_path(run_dir, method).stem}.rank{rank}.jsonl"


def part_paths(run_dir: Path, method: str) -> list[Path]:
    """The method's part files, whichever process count wrote them (a resumed run may have had another)."""
    folder = run_dir / PARTS
    if not folder.is_dir():
        return []
    prefix = responses_path(run_dir, method).stem + ".rank"
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(".jsonl")
                  and p.name[len(prefix):-len(".jsonl")].isdigit())


def read_records(path: Path) -> list[dict]:
    """Finished records of a responses file; a torn last line (interrupted write) is dropped."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"directer: dropping an incomplete record at the end of {path}; it will be redone", file=sys.stderr)
                break
    return records


def method_records(run_dir: Path, method: str) -> list[dict]:
    """Every finished record of a method: its responses file, then its part files; one per item key."""
    seen: dict[str, dict] = {}
    for path in [responses_path(run_dir, method), *part_paths(run_dir, method)]:
        for r in read_records(path):
            seen.setdefault(r["key"], r)
    return list(seen.values())


def rewrite_records(path: Path, records: Sequence[dict]) -> None:
    """Replace a responses file atomically (a crash leaves the old file or the new one, never half)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge_parts(run_dir: Path, method: str, keys: Sequence[str]) -> None:
    """Fold the method's part files into its responses file (records of ``keys`` in that order, then any
    other), then remove them. Interrupted after the rewrite, the parts left only repeat records the
    responses file holds: reading keeps one of each."""
    parts = part_paths(run_dir, method)
    if not parts:
        return
    order = {k: i for i, k in enumerate(keys)}
    records = sorted(method_records(run_dir, method), key=lambda r: order.get(r["key"], len(order)))
    rewrite_records(responses_path(run_dir, method), records)
    for p in parts:
        p.unlink()
    try:
        (run_dir / PARTS).rmdir()
    except OSError:  # other methods' parts are still there
        pass
