"""`directer eval ifeval` and `directer report`, end to end on the bundled model (a few prompts, few tokens)."""

from __future__ import annotations

import json

import pytest

from cli_runner import directer

pytestmark = pytest.mark.slow


def test_small_comparison_resume_and_report(tmp_path):
    run = tmp_path / "run"
    args = ["eval", "ifeval", "--method", "none", "--method", "directer", "--limit", "3", "--max-new-tokens", "8",
            "--batch-size", "2", "--output-dir", str(run)]
    first = directer(*args)
    assert first.returncode == 0, first.stderr
    assert "| none | 3 |" in first.stdout and "| directer | 3 |" in first.stdout
    for method in ("none", "directer"):
        lines = (run / f"responses-{method}.jsonl").read_text().splitlines()
        assert len(lines) == 3
        rec = json.loads(lines[0])
        assert {"key", "prompt", "response", "spans", "stats", "trace", "perplexity"} <= set(rec)
    summary = json.loads((run / "summary.json").read_text())
    assert [s["method"] for s in summary] == ["none", "directer"]
    assert set(summary[1]["diffs"]) == {"prompt_strict", "prompt_loose", "inst_strict", "inst_loose"}
    assert summary[1]["mcnemar"] is not None
    config = json.loads((run / "config.json").read_text())
    assert config["selection"]["limit"] == 3 and config["alpha"] == 100 and config["methods"] == ["none", "directer"]
    assert json.loads((run / "engine.json").read_text())["matmul"]["cpu/float32"] in ("stock", "transposed")

    # Interrupted mid-write: a torn last record is redone, finished ones are kept as they are.
    path = run / "responses-directer.jsonl"
    kept = path.read_text().splitlines()[:2]
    path.write_text("\n".join(kept) + "\n" + kept[1][: len(kept[1]) // 2])
    again = directer(*args)
    assert again.returncode == 0, again.stderr
    lines = path.read_text().splitlines()
    assert lines[:2] == kept and len(lines) == 3 and json.loads(lines[2])["key"]

    # A different configuration is refused, not mixed in, before the model loads.
    other = directer(*args[:-2], "--alpha", "10", "--output-dir", str(run))
    assert other.returncode == 2 and "different alpha" in other.stderr and "Traceback" not in other.stderr
    assert "loading" not in other.stderr

    # Everything finished: summarized again without loading the model.
    done = directer(*args)
    assert done.returncode == 0, done.stderr
    assert "no model needed" in done.stderr and "loading" not in done.stderr
    assert "| directer | 3 |" in done.stdout and "3 prompts x 2 methods" in done.stderr

    rep = directer("report", str(run))
    assert rep.returncode == 0, rep.stderr
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "none" in page and "directer" in page
    assert (run / "report.md").read_text().startswith("# IFEval report")


def test_baselines_with_parameters_and_the_filter(tmp_path):
    run = tmp_path / "run"
    args = ["eval", "ifeval", "--method", "none", "--method", "static:alpha=3", "--method", "pasta",
            "--method", "instaboost:m=2", "--plausibility-filter", "--limit", "2", "--max-new-tokens", "6",
            "--batch-size", "2", "--output-dir", str(run)]
    proc = directer(*args)
    assert proc.returncode == 0, proc.stderr
    names = ["none", "static:alpha=3:filter=1", "pasta:filter=1", "instaboost:m=2:filter=1"]
    summary = {s["method"]: s for s in json.loads((run / "summary.json").read_text())}
    assert list(summary) == names
    for name in names[1:]:
        assert (run / f"responses-{name.replace(':', '+')}.jsonl").exists()
        assert summary[name]["time_ratio"] > 0 and summary[name]["diffs"]
    assert "| pasta:filter=1 | 2 |" in proc.stdout and " ms (" in proc.stdout
    for line in (run / "responses-pasta+filter=1.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["cost_seconds"] > 0 and rec["stats"]["steps"] == len(rec["trace"])
    twice = directer("eval", "ifeval", "--method", "pasta", "--method", "pasta", "--limit", "2")
    assert twice.returncode == 2 and "given twice" in twice.stderr


def test_a_sampled_run_records_its_settings_and_resumes_the_same_draws(tmp_path):
    run = tmp_path / "run"
    args = ["eval", "ifeval", "--method", "none", "--method", "directer", "--limit", "3", "--max-new-tokens", "10",
            "--batch-size", "2", "--temperature", "0.8", "--top-p", "0.95", "--sampling-seed", "3",
            "--output-dir", str(run)]
    first = directer(*args)
    assert first.returncode == 0, first.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["sampling"] == {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "min_p": 0.0, "seed": 3}
    path = run / "responses-directer.jsonl"
    whole = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r["sampling"]["seed"] == 3 for r in whole)
    path.write_text("\n".join(json.dumps(r) for r in whole[:1]) + "\n")  # interrupted after one prompt
    assert directer(*args).returncode == 0
    again = [json.loads(line) for line in path.read_text().splitlines()]
    # The same draws on resume (records are written as prompts finish: compare them by key).
    assert {r["key"]: r["response"] for r in again} == {r["key"]: r["response"] for r in whole}
    other = directer(*args[:-2], "--sampling-seed", "4", "--output-dir", str(run))
    assert other.returncode == 2 and "different sampling" in other.stderr and "loading" not in other.stderr
    rep = directer("report", str(run))
    assert rep.returncode == 0 and "sampled: temperature 0.8" in (run / "report.md").read_text()


def test_gsm8k_format_run_scores_format_and_answer_and_reports(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys {i} more. How many apples does he have?",
                                        "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}) + "\n" for i in range(2, 5)))
    run = tmp_path / "run"
    args = ["eval", "gsm8k-format", "--data", str(data), "--method", "none", "--method", "directer",
            "--max-new-tokens", "8", "--batch-size", "3", "--output-dir", str(run)]
    first = directer(*args)
    assert first.returncode == 0, first.stderr
    assert "task acc." in first.stdout and "| instruction |" in first.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "gsm8k-format" and config["task_args"]["version"] == "1"
    assert config["task_args"]["data"] == str(data.resolve()) and config["selection"]["keys"] == [0, 1, 2]
    rec = json.loads((run / "responses-directer.jsonl").read_text().splitlines()[0])
    assert len(rec["spans"]) == 1 and rec["prompt"].endswith("\n\n" + rec["spans"][0])  # the appended constraint
    summary = json.loads((run / "summary.json").read_text())
    assert summary[0]["task_acc"] is not None and {"task_acc", "both_strict"} <= set(summary[1]["diffs"])
    assert summary[1]["mcnemar_task"] is not None

    done = directer(*args)
    assert done.returncode == 0 and "no model needed" in done.stderr
    rep = directer("report", str(run))
    assert rep.returncode == 0, rep.stderr
    assert (run / "report.md").read_text().startswith("# GSM8K-Format report")
    # The data moved: --data says where it is now.
    moved = tmp_path / "elsewhere.jsonl"
    data.rename(moved)
    rep = directer("report", str(run))
    assert rep.returncode == 2 and "cannot read --data" in rep.stderr
    rep = directer("report", str(run), "--data", str(moved))
    assert rep.returncode == 0, rep.stderr
    # The data changed under the run: the report says so instead of scoring other problems.
    data.write_text(moved.read_text().replace("Tom", "Ann"))
    rep = directer("report", str(run))
    assert rep.returncode == 2 and "changed since the run" in rep.stderr


def test_task_file_run(tmp_path):
    run = tmp_path / "run"
    proc = directer("eval", "tasks", "examples/tasks.jsonl", "--method", "none", "--method", "directer",
                    "--max-new-tokens", "8", "--batch-size", "6", "--output-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    lines = (run / "responses-directer.jsonl").read_text().splitlines()
    records = sorted((json.loads(line) for line in lines), key=lambda r: r["key"])  # written as they finish
    assert [r["key"] for r in records] == [1, 2, 3, 4, 5, 6]
    # given instruction texts are steered as given; "auto" ones are found by the detector
    assert records[0]["spans"] == ["Your entire response should be in English, and in all lowercase letters."]
    assert records[1]["spans"] == ["Do not use any commas in your answer."]
    summary = json.loads((run / "summary.json").read_text())
    assert summary[0]["n"] == 6 and summary[0]["task_acc"] is not None  # three records have answers


def test_a_run_pins_the_engines_kernel_choice_for_its_resumes(tmp_path, monkeypatch):
    """The multi-row product is decided once per run and recorded; a resume (or another process of a
    launch) reads it instead of timing again, so all of them decode alike."""
    from directer import Directer
    from directer.engine import row_matmul
    from directer.evaluation.runs import _pin_kernels

    from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model

    tok = load_bundled_tokenizer(padding_side="left")
    d = Directer(tiny_chat_model(tok), tok, model_name="tiny-llama")
    monkeypatch.setattr(row_matmul, "pays_off", lambda model, *a, **k: True)
    _pin_kernels(tmp_path, d)
    assert d.runner.matmul == "transposed"
    assert json.loads((tmp_path / "engine.json").read_text()) == {"matmul": {"cpu/float32": "transposed"}}
    monkeypatch.setattr(row_matmul, "pays_off", lambda model, *a, **k: False)  # this process would time otherwise
    resumed = Directer(tiny_chat_model(tok), tok, model_name="tiny-llama")
    _pin_kernels(tmp_path, resumed)
    assert resumed.runner.matmul == "transposed"
    assert resumed.runner.engine(2).transpose
