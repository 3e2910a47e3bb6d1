"""``directer eval`` refuses what it can before the model loads (the end-to-end runs are in tests/evaluation)."""

from __future__ import annotations

import json
from dataclasses import asdict

from directer.evaluation.runs import RunConfig
from directer.models.locate import BUNDLED_DISPLAY_NAME

from cli_runner import directer


def test_a_changed_configuration_is_refused_before_loading(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old = RunConfig(model=BUNDLED_DISPLAY_NAME, alpha=3.0, beta=0.5, mode="paper", layers=None, max_new_tokens=512,
                    selection={"limit": 1, "sample": None, "seed": 0, "keys": []}, methods=["none"])
    (run / "config.json").write_text(json.dumps(asdict(old)))
    proc = directer("eval", "ifeval", "--method", "none", "--limit", "1", "--output-dir", str(run))
    assert proc.returncode == 2, proc.stderr
    assert "different alpha (3.0 there, 100.0 now)" in proc.stderr and "loading" not in proc.stderr


def test_bad_arguments_are_refused_before_loading(tmp_path):
    for args, words in [(["--limit", "0"], "--limit"), (["--sample", "-1"], "--sample"), (["--workers", "0"], "--workers"),
                        (["--limit", "2", "--sample", "2"], "not both"), (["--method", "none", "--method", "none"], "twice"),
                        (["--model", "./no/such/model"], "model not found")]:
        proc = directer("eval", "ifeval", *args, "--output-dir", str(tmp_path / "r"))
        assert proc.returncode in (1, 2) and words in proc.stderr and "loading" not in proc.stderr, (args, proc.stderr)
    (tmp_path / "file").write_text("x")
    proc = directer("eval", "ifeval", "--limit", "1", "--output-dir", str(tmp_path / "file"))
    assert proc.returncode == 2 and "is a file" in proc.stderr


def test_counts_are_pluralised():
    from directer.cli.evaluate import _count

    assert (_count(1, "method"), _count(4, "prompt")) == ("1 method", "4 prompts")


def test_task_arguments_are_refused_before_loading(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "answer": "1"}\n{"prompt": "p", "checks": [{"id": "no:such"}]}\n')
    for args, words in [(["tasks"], "needs a task file: directer eval tasks FILE.jsonl"),
                        (["ifeval", "x.jsonl"], "give a task file only with `tasks`"),
                        (["ifeval", "--data", "x.jsonl"], "--data is for gsm8k-format"),
                        (["tasks", str(tmp_path / "none.jsonl")], "cannot read task file"),
                        (["tasks", str(bad)], "bad.jsonl:2: checks[0]: unknown check id(s) no:such"),
                        (["gsm8k-format", "--data", str(bad)], "bad.jsonl:1: a record needs a string 'question'"),
                        (["tasks", "examples/tasks.jsonl", "--sample", "7"], "sample 7 is larger than the 6 task-file items")]:
        proc = directer("eval", *args, "--output-dir", str(tmp_path / "r"))
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)
        assert "loading" not in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_run_of_another_task_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old = RunConfig(model=BUNDLED_DISPLAY_NAME, alpha=100.0, beta=0.5, mode="paper", layers=None, max_new_tokens=512,
                    selection={"limit": 1, "sample": None, "seed": 0, "keys": [1]}, methods=["none"])
    (run / "config.json").write_text(json.dumps(asdict(old)))
    proc = directer("eval", "tasks", "examples/tasks.jsonl", "--method", "none", "--limit", "1", "--output-dir", str(run))
    assert proc.returncode == 2 and "different dataset_sha256" in proc.stderr and "loading" not in proc.stderr
