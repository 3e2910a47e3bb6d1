"""Task files: what a well-formed file gives, and one clear line naming the line and field of a bad one."""

from __future__ import annotations

import json

import pytest

from directer.errors import UsageError
from directer.evaluation.tasks.scoring import score_item
from directer.evaluation.tasks.task_file import load_task_file


def write(tmp_path, *records) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_a_well_formed_file(tmp_path):
    path = write(tmp_path,
                 {"prompt": "Name three primes. Answer in lowercase.", "instructions": ["Answer in lowercase."],
                  "checks": [{"id": "change_case:english_lowercase"}]},
                 "",
                 {"key": 70, "prompt": "What is 17 * 3? End with 'The answer is N.'",
                  "checks": [{"id": "answer_format:answer_sentence"}], "answer": 51},
                 {"prompt": "Capital of France?", "answer": "Paris"},
                 {"prompt": "Capital of Peru?", "answer": r"\bLima\b", "matcher": "regex"},
                 {"prompt": "Write 2 paragraphs.", "checks": [{"id": "length_constraints:number_paragraphs",
                                                               "kwargs": {"num_paragraphs": 2}}]})
    items, digest = load_task_file(path)
    assert [i.key for i in items] == [1, 70, 4, 5, 6] and len(digest) == 64
    assert items[0].instructions == ["Answer in lowercase."] and items[1].instructions is None
    assert (items[1].answer, items[1].matcher) == ("51", "number")
    assert (items[2].answer, items[2].matcher) == ("Paris", "exact")
    assert items[3].matcher == "regex" and items[4].kwargs == [{"num_paragraphs": 2}]
    s = score_item(items[1], "17 * 3 = 51. The answer is 51.")
    assert s.strict == [True] and s.answer is True
    s = score_item(items[2], "Paris.")
    assert s.strict == [] and s.prompt_strict and s.answer is True
    assert score_item(items[3], "It is Lima, Peru.").answer is True
    assert score_item(items[4], "One.\n\n***\n\nTwo.").strict == [True]


@pytest.mark.parametrize("record, message", [
    ("{not json", r"tasks\.jsonl:1: not JSON"),
    ("[1, 2]", r":1: a record must be a JSON object, not list"),
    ({"prompt": "p", "instruction": "x", "answer": "1"}, r":1: unknown field\(s\) 'instruction': the fields are"),
    ({"prompt": "", "answer": "1"}, r":1: field 'prompt' must be a non-empty string"),
    ({"prompt": "p"}, r":1: the record checks nothing"),
    ({"prompt": "p", "key": "a", "answer": "1"}, r":1: field 'key' must be an integer"),
    ({"prompt": "p", "instructions": "all", "answer": "1"}, r"field 'instructions' must be \"auto\" or a list"),
    ({"prompt": "p q", "instructions": ["r"], "answer": "1"}, r"instructions\[0\] 'r' is not in the prompt"),
    ({"prompt": "p", "checks": {"id": "x"}}, r"field 'checks' must be a list"),
    ({"prompt": "p", "checks": ["punctuation:no_comma"]}, r"checks\[0\] must be an object with a string 'id'"),
    ({"prompt": "p", "checks": [{"id": "punctuation:no_semicolon"}]}, r"checks\[0\]: unknown check id\(s\) punctuation:no_semicolon"),
    ({"prompt": "p", "checks": [{"id": "punctuation:no_comma", "args": {}}]}, r"checks\[0\]: unknown field\(s\) 'args'"),
    ({"prompt": "p", "checks": [{"id": "length_constraints:number_words", "kwargs": {"words": 3}}]},
     r"checks\[0\]: bad kwargs for length_constraints:number_words"),
    ({"prompt": "p", "checks": [{"id": "answer_format:boxed", "kwargs": {"n": 1}}]}, r"answer_format:boxed takes no argument"),
    ({"prompt": "p", "answer": "x", "matcher": "number"}, r"answer 'x' is not a number"),
    ({"prompt": "p", "answer": "x", "matcher": "fuzzy"}, r"field 'matcher' must be one of number, exact, regex"),
    ({"prompt": "p", "answer": "(", "matcher": "regex"}, r"answer is not a valid regular expression"),
    ({"prompt": "p", "matcher": "exact"}, r"field 'matcher' needs an 'answer'"),
    ({"prompt": "p", "answer": [1]}, r"field 'answer' must be a string or a number"),
])
def test_malformed_records_are_refused_with_line_and_field(tmp_path, record, message):
    path = write(tmp_path, record)
    with pytest.raises(UsageError, match=message):
        load_task_file(path)


def test_the_line_number_is_the_files_own(tmp_path):
    path = write(tmp_path, {"prompt": "fine", "answer": "1"}, "", {"prompt": "p"})
    with pytest.raises(UsageError, match=r"tasks\.jsonl:3: the record checks nothing"):
        load_task_file(path)


def test_duplicate_keys_empty_files_and_unreadable_files(tmp_path):
    with pytest.raises(UsageError, match=r":2: key 1 is already used on line 1"):
        load_task_file(write(tmp_path, {"prompt": "a", "answer": "1"}, {"key": 1, "prompt": "b", "answer": "2"}))
    with pytest.raises(UsageError, match="holds no records"):
        load_task_file(write(tmp_path, ""))
    with pytest.raises(UsageError, match="cannot read task file"):
        load_task_file(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="is not UTF-8"):
        load_task_file(tmp_path / "bin.jsonl")
