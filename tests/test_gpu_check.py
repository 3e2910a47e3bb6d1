"""The prepared GPU validation script (scripts/gpu_check.py) dry-runs on the CPU: every stage runs, writes
its JSON line, and passes its own checks on tiny shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_dry_runs_on_the_cpu(tmp_path):
    out = tmp_path / "check.jsonl"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = {r["stage"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(records) == ["env", "correctness", "bf16_agreement", "host_cost", "speed", "long_request"]
    assert all(r["ok"] for r in records.values()), [r for r in records.values() if not r["ok"]]
    assert records["host_cost"]["directer"]["syncs"] > 0
    assert set(records["speed"]["shapes"]) == {"smoke/b1", "smoke/b32"}
    assert set(records["long_request"]["shapes"]["smoke"]) == {"alone", "long_bands", "long_one_call"}


def test_the_gpu_check_refuses_cuda_where_there_is_none(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "x.jsonl")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr
