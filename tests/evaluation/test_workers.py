"""`directer eval --workers N`: the methods shared out among processes, into one run directory."""

from __future__ import annotations

import json

import pytest

from directer.evaluation.workers import split_methods

from cli_runner import directer


def test_split_methods_balances_the_guessed_cost_and_keeps_every_method_once():
    methods = ["none", "directer", "pasta:filter=1", "spotlight:filter=1", "static", "instaboost"]
    groups = split_methods(methods, 2)
    assert sorted(m for g in groups for m in g) == sorted(methods)
    assert [g[0] for g in groups] == ["pasta:filter=1", "spotlight:filter=1"]  # the two-stream ones apart
    assert split_methods(["none", "directer"], 4) == [["none"], ["directer"]]  # no idle worker
    assert split_methods(["none"], 1) == [["none"]]
    # A resumed run: finished methods go to no worker, the rest by the work left.
    left = {"none": 0, "directer": 0, "static": 150, "pasta:filter=1": 50, "spotlight": 100}
    groups = split_methods(list(left), 2, left)
    assert sorted(map(sorted, groups)) == [["pasta:filter=1", "spotlight"], ["static"]]
    assert split_methods(["none", "directer"], 2, {"none": 0, "directer": 0}) == []  # all done: no worker


@pytest.mark.slow
def test_two_workers_fill_one_run_directory_and_resume(tmp_path):
    run = tmp_path / "run"
    args = ["eval", "ifeval", "--method", "none", "--method", "directer", "--method", "static:alpha=3", "--limit", "2",
            "--max-new-tokens", "6", "--batch-size", "2", "--output-dir", str(run), "--workers", "2"]
    first = directer(*args)
    assert first.returncode == 0, first.stderr
    assert "2 workers, 1 thread(s) each" in first.stderr
    for method, name in (("none", "none"), ("directer", "directer"), ("static:alpha=3", "static+alpha=3")):
        records = [json.loads(x) for x in (run / f"responses-{name}.jsonl").read_text().splitlines()]
        assert [r["method"] for r in records] == [method, method]
        assert all(r["timing"]["threads"] == 1 for r in records)
        assert f"| {method} | 2 |" in first.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["methods"] == ["none", "directer", "static:alpha=3"]

    # The same responses as one process would give: the workers change who decodes, not what.
    single = tmp_path / "single"
    alone = directer(*[a if a != str(run) else str(single) for a in args[:-2]])
    assert alone.returncode == 0, alone.stderr
    for name in ("none", "directer", "static+alpha=3"):
        a = [json.loads(x)["response"] for x in (run / f"responses-{name}.jsonl").read_text().splitlines()]
        b = [json.loads(x)["response"] for x in (single / f"responses-{name}.jsonl").read_text().splitlines()]
        assert a == b

    again = directer(*args)  # everything finished: nothing to decode, the table again
    assert again.returncode == 0, again.stderr
    assert "| directer | 2 |" in again.stdout


def test_workers_must_be_positive():
    bad = directer("eval", "ifeval", "--workers", "0", "--limit", "1")
    assert bad.returncode == 2 and "invalid --workers 0" in bad.stderr and "Traceback" not in bad.stderr
