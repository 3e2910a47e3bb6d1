"""`directer eval ifeval` and `directer report`, end to end on the bundled model (a few prompts, few tokens)."""

from __future__ import annotations

import json

import pytest

from cli_runner import directer

pytestmark = pytest.mark.slow


def test_profile_heads_writes_a_profile_that_pasta_reads_and_resumes(tmp_path):
    out = tmp_path / "heads.json"
    args = ["profile-heads", "--layers", "0", "--sample", "2", "--seed", "1", "--max-new-tokens", "4", "--top-k", "3",
            "-o", str(out)]
    first = directer(*args)
    assert first.returncode == 0, first.stderr
    profile = json.loads(out.read_text())
    assert len(profile["heads"]) == 3 and all(layer == 0 for layer, _ in profile["heads"])
    assert len(profile["scores"]) == 9 and len(profile["prompts"]) == 2  # 9 heads per layer on the bundled model
    partial = tmp_path / "heads.json.partial.jsonl"
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 1 + 9  # settings, unsteered baseline, one line per head

    # Interrupted: the finished heads are kept, a torn line is redone, nothing else is recomputed.
    out.unlink()
    partial.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    again = directer(*args)
    assert again.returncode == 0, again.stderr
    assert partial.read_text().splitlines()[:-1] == lines[:-1] and json.loads(out.read_text())["heads"] == profile["heads"]

    other = directer(*args[:-2], "--alpha-p", "0.1", "-o", str(out))
    assert other.returncode == 2 and "other settings" in other.stderr

    gen = directer("generate", "Write a haiku about autumn.", "-i", "Do not use any commas.", "--method",
                   f"pasta:profile={out}", "--max-new-tokens", "6", "--json")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)["method"] == f"pasta:profile={out}"
