"""Responses files and the part files of a data-parallel run: what a method has finished, and the merge."""

from __future__ import annotations

import json

import pytest

from directer.errors import UsageError
from directer.evaluation.runs import _check_visible
from directer.evaluation.records import (merge_parts, method_records, part_path, part_paths, read_records,
                                         responses_path)


def _write(path, records, torn: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + ('{"key": "torn", "resp' if torn else ""))


def test_each_process_has_its_own_part_file_per_method(tmp_path):
    assert responses_path(tmp_path, "static:alpha=3").name == "responses-static+alpha=3.jsonl"
    assert part_path(tmp_path, "static:alpha=3", 1) == tmp_path / "parts" / "responses-static+alpha=3.rank1.jsonl"
    for rank in (0, 1, 10):
        _write(part_path(tmp_path, "static", rank), [])
    _write(part_path(tmp_path, "static:alpha=3", 0), [])
    (tmp_path / "parts" / "responses-static.rankX.jsonl").write_text("")
    assert [p.name for p in part_paths(tmp_path, "static")] == [
        "responses-static.rank0.jsonl", "responses-static.rank1.jsonl", "responses-static.rank10.jsonl"]
    assert part_paths(tmp_path / "elsewhere", "static") == []


def test_a_methods_records_are_its_file_and_its_parts_once_each(tmp_path, capsys):
    _write(responses_path(tmp_path, "none"), [{"key": "a", "response": "1"}])
    _write(part_path(tmp_path, "none", 0), [{"key": "b", "response": "2"}, {"key": "a", "response": "again"}], torn=True)
    _write(part_path(tmp_path, "none", 3), [{"key": "c", "response": "3"}])
    records = method_records(tmp_path, "none")
    assert [(r["key"], r["response"]) for r in records] == [("a", "1"), ("b", "2"), ("c", "3")]
    assert "dropping an incomplete record" in capsys.readouterr().err
    assert method_records(tmp_path, "directer") == []


def test_merging_writes_prompt_order_and_removes_the_parts(tmp_path):
    _write(responses_path(tmp_path, "none"), [{"key": "c"}])
    _write(part_path(tmp_path, "none", 0), [{"key": "b"}, {"key": "extra"}])
    _write(part_path(tmp_path, "none", 1), [{"key": "a"}, {"key": "c"}], torn=True)
    _write(part_path(tmp_path, "directer", 0), [{"key": "a"}])
    merge_parts(tmp_path, "none", ["a", "b", "c"])
    assert [r["key"] for r in read_records(responses_path(tmp_path, "none"))] == ["a", "b", "c", "extra"]
    assert part_paths(tmp_path, "none") == [] and (tmp_path / "parts").is_dir()  # directer's part is still there
    merge_parts(tmp_path, "directer", ["a"])
    assert not (tmp_path / "parts").exists()
    merge_parts(tmp_path, "none", ["a"])  # nothing to merge: the file stays as it is
    assert len(read_records(responses_path(tmp_path, "none"))) == 4


def test_the_main_process_refuses_to_merge_parts_it_cannot_see(tmp_path):
    _write(part_path(tmp_path, "none", 0), [{"key": "a"}])
    _check_visible(tmp_path, {0: {"none": ["a"]}, 1: {"none": []}})  # process 1 had nothing to do
    with pytest.raises(UsageError, match="process 1 wrote 2 responses of 'none'.*file system every machine shares"):
        _check_visible(tmp_path, {0: {"none": ["a"]}, 1: {"none": ["b", "c"]}})
