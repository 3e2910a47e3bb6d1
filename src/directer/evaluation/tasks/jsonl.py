"""Reading a user's JSON-lines file (GSM8K data, task files): one line naming the file, and the line
where it applies, for whatever cannot be read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UsageError

__all__ = ["read_json_lines"]


def read_json_lines(path: Path, what: str) -> tuple[bytes, list[tuple[int, Any]]]:
    """The file's bytes and its non-blank lines parsed, each with its line number; ``what`` names the file
    in errors (``--data``, ``task file``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text: give JSON lines") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg} at column {getattr(exc, 'colno', '?')}): "
                             "give one JSON object per line") from None
    return data, rows
