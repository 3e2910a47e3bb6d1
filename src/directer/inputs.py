"""Model-free checks of what a user asks for, run before anything slow (imports, model loading).

The API runs them again when it prepares a prompt, so the command line and the API refuse the same
input with the same message; the command line just refuses it seconds or minutes earlier.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .text.prompts import (SYSTEM_INSTRUCTIONS, build_messages, find_instructions, missing_instructions, not_in_prompt,
                           system_instructions)
from .text.spans import validate_instructions
from .errors import UsageError

__all__ = ["AUTO_INSTRUCTIONS", "NOTHING_FOUND", "SYSTEM_INSTRUCTIONS", "asks_for", "check_output_file", "check_prompt", "resolve_instructions"]

AUTO_INSTRUCTIONS = "auto"  # ``instructions="auto"``: the constraint wording, found by rule (autospans)

# What a result says when ``instructions="auto"`` finds no constraint in the prompt: it decodes unsteered.
NOTHING_FOUND = "no instruction found; nothing steered"


def asks_for(instructions: str | Sequence[str] | None, keyword: str) -> bool:
    """Whether ``instructions`` is the keyword ``"auto"`` or ``"system"`` (alone, or as a one-item list)."""
    return instructions == keyword or (not isinstance(instructions, str) and list(instructions or []) == [keyword])


def resolve_instructions(prompt: Any, instructions: str | Sequence[str] | None, *, method: str,
                         occurrence: int | Sequence[int] = 0) -> tuple[list[str], int | Sequence[int]]:
    """The instruction texts to steer (``"auto"``: detected in the prompt) and which occurrences
    (``"system"`` stays as it is: the prompt is rendered before the system message is located)."""
    instr = [instructions] if isinstance(instructions, str) else list(instructions or [])
    if asks_for(instr, SYSTEM_INSTRUCTIONS):
        return instr, occurrence
    if asks_for(instr, AUTO_INSTRUCTIONS):  # found nothing: the prompt decodes unsteered, and its result says so
        return _auto_instructions(prompt)
    if not instr and method != "none":
        raise UsageError(
            f"no instruction given: method {method!r} steers the instruction span; "
            "pass an instruction (--instruction TEXT) or use method 'none'"
        )
    return instr, occurrence


def check_prompt(prompt: Any, instructions: Sequence[str], system: str | None = None, *,
                 append_missing: bool = True) -> None:
    """What :func:`~directer.text.spans.prepare_prompt` refuses before it needs a tokenizer: an empty
    or malformed prompt, an empty or non-text instruction, a system message given twice, and (with
    ``append_missing=False``) an instruction that is not in the prompt; with ``"system"``, a prompt without
    a system message."""
    if asks_for(instructions, SYSTEM_INSTRUCTIONS):
        system_instructions(prompt, system)
        return
    validate_instructions(instructions)
    messages = build_messages(prompt, system)
    if not append_missing:
        contents = [m["content"] for m in messages]
        missing = missing_instructions(find_instructions(instructions, contents), contents)
        if missing:
            raise not_in_prompt(missing[0])


def check_output_file(path: str | os.PathLike | None, option: str) -> None:
    """Refuse an output path that cannot be written, before the work whose result it would hold."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name, e.g. {p / 'out'}")
    folder = p.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist; create it first or choose another path")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{option} {path} cannot be written (no permission); choose another path")


def _auto_instructions(prompt: Any) -> tuple[list[str], list[int]]:
    """``instructions="auto"``: the constraint sentences of the (last user) message, rule-based."""
    from .autospans import detect_spans, occurrences

    if isinstance(prompt, str):
        text = prompt
    else:
        users = [m["content"] for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1] if users else ""
    ranges = detect_spans(text)
    return [text[a:b] for a, b in ranges], occurrences(text, ranges)
