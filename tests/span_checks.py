"""What every set of automatic spans must satisfy (shared by the autospans tests)."""

from __future__ import annotations

from directer.autospans import detect_instructions


def assert_well_formed(prompt: str, spans: list[tuple[int, int]]) -> None:
    """Spans are non-empty, inside the prompt, in order and non-overlapping; their texts are substrings."""
    last_end = 0
    for start, end in spans:
        assert 0 <= last_end <= start < end <= len(prompt), (prompt, spans)
        assert prompt[start:end].strip() == prompt[start:end]
        last_end = end
    for text in detect_instructions(prompt):
        assert text in prompt
