"""Task files: your own prompts, instructions and checks as JSON lines (``directer eval tasks FILE``).

One JSON object per line::

    {"prompt": "Name three primes. Answer in lowercase.", "instructions": ["Answer in lowercase."],
     "checks": [{"id": "change_case:english_lowercase"}]}
    {"prompt": "What is 17 * 3? End with 'The answer is N.'", "instructions": "auto",
     "checks": [{"id": "answer_format:answer_sentence"}], "answer": "51"}

Fields: ``prompt`` (required); ``instructions``, a list of texts of the prompt to steer (the last
occurrence of each) or ``"auto"`` (the default: the automatic detector, helped by the checks'
arguments); ``checks``, a list of ``{"id": ..., "kwargs": {...}}`` with IFEval instruction ids or our
``answer_format:*`` ids; ``answer`` with ``matcher`` ``number`` (the default for a numeric answer),
``exact`` (the default otherwise) or ``regex``; ``key``, an integer id (default: the line number).
A record needs checks, an answer or both. Anything else is refused with the line and the field named.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ...errors import UsageError
from .answers import MATCHERS, parse_number
from .base import EvalItem
from .formats import FORMAT_CHECKERS
from .jsonl import read_json_lines
from .ifeval import checker_package
from .scoring import check_ids

__all__ = ["FIELDS", "load_task_file"]

FIELDS = ("key", "prompt", "instructions", "checks", "answer", "matcher")


def load_task_file(path: str | Path) -> tuple[list[EvalItem], str]:
    """The file's items (in file order) and the file's sha256; every record is checked before any is used."""
    path = Path(path)
    data, records = read_json_lines(path, "task file")
    items: list[EvalItem] = []
    keys: dict[int, int] = {}
    for number, record in records:
        where = f"{path}:{number}"
        item = _item(record, number, where)
        if item.key in keys:
            raise UsageError(f"{where}: key {item.key} is already used on line {keys[item.key]}: give each record its own key")
        keys[item.key] = number
        items.append(item)
    if not items:
        raise UsageError(f"task file {path} holds no records: give one JSON object per line")
    return items, hashlib.sha256(data).hexdigest()


def _item(record: Any, number: int, where: str) -> EvalItem:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: a record must be a JSON object, not {type(record).__name__}")
    unknown = [k for k in record if k not in FIELDS]
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}: the fields are {', '.join(FIELDS)}")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(f"{where}: field 'prompt' must be a non-empty string")
    key = record.get("key", number)
    if not isinstance(key, int) or isinstance(key, bool):
        raise UsageError(f"{where}: field 'key' must be an integer, not {json.dumps(key)}")
    instructions = _instructions(record.get("instructions", "auto"), prompt, where)
    ids, kwargs = _checks(record.get("checks", []), where)
    answer, matcher = _answer(record, where)
    if not ids and answer is None:
        raise UsageError(f"{where}: the record checks nothing: give 'checks', an 'answer', or both")
    return EvalItem(key=key, prompt=prompt, instruction_id_list=ids, kwargs=kwargs, instructions=instructions,
                    answer=answer, matcher=matcher)


def _instructions(value: Any, prompt: str, where: str) -> list[str] | None:
    if value == "auto":
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UsageError(f"{where}: field 'instructions' must be \"auto\" or a list of non-empty strings")
    for i, text in enumerate(value):
        if text not in prompt:
            raise UsageError(f"{where}: instructions[{i}] {text[:60]!r} is not in the prompt: "
                             "give text copied exactly from the prompt")
    return list(value)


def _checks(value: Any, where: str) -> tuple[list[str], list[dict]]:
    if not isinstance(value, list):
        raise UsageError(f"{where}: field 'checks' must be a list of {{\"id\": ..., \"kwargs\": {{...}}}} objects")
    ids, kwargs = [], []
    for i, check in enumerate(value):
        at = f"{where}: checks[{i}]"
        if not isinstance(check, dict) or not isinstance(check.get("id"), str):
            raise UsageError(f"{at} must be an object with a string 'id', e.g. {{\"id\": \"punctuation:no_comma\"}}")
        extra = [k for k in check if k not in ("id", "kwargs")]
        if extra:
            raise UsageError(f"{at}: unknown field(s) {', '.join(map(repr, extra))}: a check has 'id' and 'kwargs'")
        kw = check.get("kwargs", {})
        if not isinstance(kw, dict):
            raise UsageError(f"{at}: 'kwargs' must be an object")
        check_ids([check["id"]], at)
        _check_kwargs(check["id"], kw, at)
        ids.append(check["id"])
        kwargs.append(dict(kw))
    return ids, kwargs


def _check_kwargs(instruction_id: str, kwargs: dict, at: str) -> None:
    """Arguments a checker does not take are refused now, not as a traceback while scoring."""
    if instruction_id in FORMAT_CHECKERS:
        allowed = FORMAT_CHECKERS[instruction_id].kwargs
        extra = [k for k in kwargs if k not in allowed]
        if extra:
            raise UsageError(f"{at}: {instruction_id} takes no argument(s) {', '.join(extra)}")
        return
    checker = checker_package().INSTRUCTION_DICT[instruction_id](instruction_id)
    try:
        checker.build_description(**kwargs)
    except TypeError as exc:
        raise UsageError(f"{at}: bad kwargs for {instruction_id} ({exc})") from None
    except ValueError as exc:
        raise UsageError(f"{at}: bad kwargs for {instruction_id}: {exc}") from None


def _answer(record: dict, where: str) -> tuple[str | None, str]:
    answer = record.get("answer")
    matcher = record.get("matcher")
    if answer is None:
        if matcher is not None:
            raise UsageError(f"{where}: field 'matcher' needs an 'answer'")
        return None, "number"
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise UsageError(f"{where}: field 'answer' must be a string or a number")
    answer = str(answer)
    if matcher is None:
        matcher = "number" if parse_number(answer) is not None else "exact"
    if matcher not in MATCHERS:
        raise UsageError(f"{where}: field 'matcher' must be one of {', '.join(MATCHERS)}, not {json.dumps(matcher)}")
    if matcher == "number" and parse_number(answer) is None:
        raise UsageError(f"{where}: answer {answer!r} is not a number: use \"matcher\": \"exact\" or \"regex\"")
    if matcher == "regex":
        try:
            re.compile(answer)
        except re.error as exc:
            raise UsageError(f"{where}: answer is not a valid regular expression ({exc})") from None
    return answer, matcher
