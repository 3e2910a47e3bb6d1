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
