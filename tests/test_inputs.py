"""The model-free checks (inputs.py) the CLI runs before loading and the API runs when preparing."""

from __future__ import annotations

import pytest

from directer.errors import UsageError
from directer.inputs import check_output_file, check_prompt, resolve_instructions


def test_auto_and_missing_instructions():
    prompt = "Write a story about a fox. Your answer must be in all lowercase letters."
    instr, occurrence = resolve_instructions(prompt, "auto", method="directer")
    assert instr == ["Your answer must be in all lowercase letters."] and occurrence == [0]
    assert resolve_instructions(prompt, None, method="none") == ([], 0)
    with pytest.raises(UsageError, match="no instruction given"):
        resolve_instructions(prompt, [], method="directer")
    assert resolve_instructions("Tell me about foxes.", "auto", method="directer") == ([], [])  # nothing found


@pytest.mark.parametrize("prompt, instructions, system, words", [
    ("  ", ["x"], None, "empty prompt"), ("hi", [""], None, "empty instruction"), ("hi", [3], None, "int"),
    ([{"role": "user"}], ["x"], None, "message 0"), ([{"role": "system", "content": "a"}], ["x"], "b", "system given twice"),
])
def test_bad_prompts(prompt, instructions, system, words):
    with pytest.raises(UsageError, match=words):
        check_prompt(prompt, instructions, system)


def test_output_files(tmp_path):
    check_output_file(None, "--output")
    check_output_file(tmp_path / "new.jsonl", "--output")
    with pytest.raises(UsageError, match="--html .* the folder .* does not exist"):
        check_output_file(tmp_path / "missing" / "view.html", "--html")
    with pytest.raises(UsageError, match="is a folder"):
        check_output_file(tmp_path, "--save-ranking")
