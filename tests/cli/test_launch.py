"""Commands under a launcher (torchrun, accelerate launch) and ``--workers N``: the prompts of every method
shared out among processes, each writing its own part file, merged and scored once; resumable with another
process count; the same responses as one process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from directer.cli.launch import without_option
from directer.evaluation.records import part_path, read_records, responses_path

from cli_runner import directer

EVAL = ["eval", "ifeval", "--method", "none", "--method", "directer", "--limit", "4", "--max-new-tokens", "6",
        "--batch-size", "2"]


def _responses(run, method: str) -> dict[str, str]:
    return {r["key"]: r["response"] for r in read_records(responses_path(run, method))}


def _decoded(stderr: str) -> int:
    """Responses decoded in this launch, from the main process's line per process."""
    return sum(int(n) for n in re.findall(r"directer: process \d+: (\d+) responses", stderr))


def test_without_option_drops_the_option_and_its_value():
    assert without_option(["eval", "ifeval", "--workers", "2", "--limit", "3"], "--workers") == ["eval", "ifeval", "--limit", "3"]
    assert without_option(["eval", "--workers=2", "--workers-x", "1"], "--workers") == ["eval", "--workers-x", "1"]


def test_workers_must_be_positive():
    bad = directer("eval", "ifeval", "--workers", "0", "--limit", "1")
    assert bad.returncode == 2 and "invalid --workers 0" in bad.stderr and "Traceback" not in bad.stderr


def _launched_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_WORLD_SIZE="2", PYTHONWARNINGS="ignore", **extra)


def test_settings_that_cannot_work_under_a_launcher_fail_before_loading(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "directer.cli", *args], capture_output=True, text=True,
                              env=_launched_env(), timeout=120)

    workers = run(*EVAL, "--workers", "2", "--output-dir", str(tmp_path / "a"))
    assert workers.returncode == 2 and "drop --workers" in workers.stderr
    assert workers.stderr.startswith("directer [process 0]: error:")
    mapped = run(*EVAL, "--device-map", "auto", "--output-dir", str(tmp_path / "b"))
    assert mapped.returncode == 2 and "--device-map with several processes on one machine" in mapped.stderr
    one = run("generate", "Say hi.", "-i", "Say hi.")
    assert one.returncode == 2 and "give --input FILE" in one.stderr
    for r in (workers, mapped, one):
        assert "Traceback" not in r.stderr and "loading" not in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_device_map_and_workers_exclude_each_other():
    r = directer(*EVAL, "--device-map", "auto", "--workers", "2")
    assert r.returncode == 2 and "--device-map with several processes" in r.stderr
    r = directer(*EVAL, "--device-map", '{"model": "gpu9"}')
    assert r.returncode == 2 and "invalid device 'gpu9'" in r.stderr
    r = directer(*EVAL, "--device-map", "{not json")
    assert r.returncode == 2 and "not a JSON object" in r.stderr


@pytest.mark.slow
def test_two_processes_give_one_process_responses_and_resume_with_another_count(tmp_path):
    single = tmp_path / "single"
    alone = directer(*EVAL, "--output-dir", str(single))
    assert alone.returncode == 0, alone.stderr

    run = tmp_path / "two"
    two = directer(*EVAL, "--output-dir", str(run), "--workers", "2")
    assert two.returncode == 0, two.stderr
    assert "2 processes, 1 thread(s) each" in two.stderr and _decoded(two.stderr) == 8
    assert two.stdout.count("| directer | 4 |") == 1  # one table, from the main process
    assert not (run / "parts").exists()  # merged
    for method in ("none", "directer"):
        assert _responses(run, method) == _responses(single, method)
        keys = json.loads((run / "config.json").read_text())["selection"]["keys"]
        assert [r["key"] for r in read_records(responses_path(run, method))] == keys  # merged in prompt order
        assert all(r["timing"]["threads"] == 1 for r in read_records(responses_path(run, method)))

    # What a killed two-process run leaves: part files (one with a torn last line), a responses file.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(run / "config.json", cut / "config.json")
    none = read_records(responses_path(run, "none"))
    part = part_path(cut, "none", 0)
    part.parent.mkdir()
    part.write_text("".join(json.dumps(r) + "\n" for r in none[:2]) + '{"key": "x", "respo')
    part_path(cut, "none", 1).write_text(json.dumps(none[2]) + "\n")
    responses_path(cut, "directer").write_text(json.dumps(read_records(responses_path(run, "directer"))[0]) + "\n")
    three = directer(*EVAL, "--output-dir", str(cut), "--workers", "3")
    assert three.returncode == 0, three.stderr
    assert _decoded(three.stderr) == 1 + 3  # exactly what was missing: nothing lost, nothing repeated
    for method in ("none", "directer"):
        assert _responses(cut, method) == _responses(single, method)
        assert len(read_records(responses_path(cut, method))) == 4
    assert not (cut / "parts").exists()


@pytest.mark.slow
def test_generate_input_under_torchrun_writes_every_record_in_input_order(tmp_path):
    data = tmp_path / "in.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Name {i + 2} colours. Use only lowercase letters.",
             "instructions": ["Use only lowercase letters."]} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["generate", "--input", str(data), "--max-new-tokens", "5", "--batch-size", "2"]
    alone = directer(*args, "--output", str(tmp_path / "one.jsonl"))
    assert alone.returncode == 0, alone.stderr
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "directer.cli", *args, "--output", str(tmp_path / "two.jsonl")],
                              capture_output=True, text=True, env=env, timeout=900)
    assert launched.returncode == 0, launched.stderr
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["id"] for r in two] == [r["id"] for r in rows]
    assert [r["token_ids"] for r in two] == [r["token_ids"] for r in one]
