"""Rule 7: sentences that direct the response after the task are spans, whatever their wording; and the
detector's precision and recall on the hand-labelled prompts (test half)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from directer.autospans import detect_instructions

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "autospans_quality.py"


def quality():
    spec = importlib.util.spec_from_file_location("autospans_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("prompt, spans", [
    ("List ten rivers. Sort them by length.", ["Sort them by length."]),
    ("Write a toast. It should be short and warm.", ["It should be short and warm."]),
    ("Describe Paris. Steer clear of clichés.", ["Steer clear of clichés."]),
    ("Explain tides. No formulas.", ["No formulas."]),
    ("What is a comet? (Two sentences at most.)", ["(Two sentences at most.)"]),
    ("Summarize this. Format: a table.", ["Format: a table."]),
    # context before the task is not a constraint, nor is the task itself
    ("I run a bakery in Leeds. Write a slogan for it. Make it rhyme.", ["Make it rhyme."]),
    ("Write a slogan for my bakery.", []),
    # questions and labelled material after the task are not constraints
    ("Write a reply to this email. Why did they write?", []),
    ("Summarize the text.\n\nText: The council met on Monday and approved the plan.", []),
    # a heading's list lines
    ("Write a haiku.\n\nRequirements:\n- about frogs\n- no capital letters", ["about frogs\n- no capital letters"]),
    # manner clauses of the task sentence
    ("Using only short words, explain gravity.", ["Using only short words"]),
    ("Describe your house without naming any room.", ["without naming any room"]),
    ("Explain chess as briefly as possible.", ["as briefly as possible"]),
])
def test_directives_by_sentence_role(prompt, spans):
    assert detect_instructions(prompt) == spans


def test_ifeval_rules_are_rules_one_to_six():
    prompt = "Write a slogan for a bakery. Make it rhyme."
    assert detect_instructions(prompt) == ["Make it rhyme."]
    assert detect_instructions(prompt, directives=False) == []


def test_labelled_set_is_split_before_tuning_and_meets_the_target():
    q = quality()
    rows = q.load()
    assert len(rows) >= 150 and {r["split"] for r in rows} == {"dev", "test"}
    assert abs(sum(r["split"] == "test" for r in rows) - len(rows) / 2) <= 1
    test = q.score(q.load("test"))
    assert test.recall >= 0.9 and test.precision >= 0.8, (test.recall, test.precision)
    assert test.spanless_given_span == 0


def test_the_scores_count_characters():
    q = quality()
    row = {"id": 0, "prompt": "Write a poem. Use no rhymes.", "spans": ["Use no rhymes."]}
    s = q.score([row], detect=lambda p: [(0, 13)])  # the task sentence instead
    assert (s.precision, s.recall) == (0.0, 0.0)
    s = q.score([row], detect=lambda p: [(14, 28)])
    assert (s.precision, s.recall) == (1.0, 1.0)
    s = q.score([row], detect=lambda p: [(14, 21)])  # "Use no" (5 of 12 characters)
    assert s.precision == 1.0 and s.recall == pytest.approx(5 / 12)


def test_the_second_set_is_split_tagged_and_labelled_with_substrings():
    q = quality()
    rows = q.load(path=q.SETS["second"])
    assert len(rows) >= 120 and abs(sum(r["split"] == "test" for r in rows) - len(rows) / 2) <= 1
    assert {r["place"] for r in rows} == {"first", "middle", "last", "none"}
    assert all(r["forms"] for r in rows) and sum(not r["spans"] for r in rows) >= 10
    for r in rows:
        assert all(span in r["prompt"] for span in r["spans"]), r["id"]
        assert (r["place"] == "none") == (not r["spans"]), r["id"]
    assert set(q.families(rows)) >= {"place:first", "place:middle", "place:last", "form:fused", "form:conditional",
                                     "form:negated", "form:numeric", "form:list"}


def test_the_second_set_meets_its_target_and_the_first_is_no_worse():
    q = quality()
    second = q.score(q.load("test", q.SETS["second"]))
    assert second.recall >= 0.85 and second.precision >= 0.9, (second.recall, second.precision)
    assert second.spanless_given_span == 0
    first = q.score(q.load("test"))
    # rules 1-7 marked 2668 characters there, 2664 of them constraint, of 2945: no worse than that
    assert first.recall >= 2664 / 2945 and first.precision >= 2664 / 2668, (first.recall, first.precision)


@pytest.mark.parametrize("prompt, spans", [
    ("Tell me how to make risotto. If any step takes longer than ten minutes, warn me in advance.",
     ["If any step takes longer than ten minutes, warn me in advance."]),
    ("Write a haiku about autumn but only use words of one syllable.", ["only use words of one syllable."]),
    ("Give me a list of ten baby names, sorted alphabetically.", ["sorted alphabetically."]),
    ("Answer only with yes or no: is Canberra the capital of Australia?", ["Answer only with yes or no:"]),
    ("<constraints>Use at most five bullet points.</constraints>\nSummarise the notes.",
     ["Use at most five bullet points."]),
    ("write a python script that renames files. just the code, no comments", ["just the code, no comments"]),
    ("Can you explain what a Roth IRA is? Could you keep it under 100 words?", ["Could you keep it under 100 words?"]),
    ("Propose a name for my podcast. I'd like it to be a pun.", ["I'd like it to be a pun."]),
    ("Be brief. What is the difference between a virus and a bacterium?", ["Be brief."]),
    ("Please review this function.\n\ndef avg(xs):\n    return s / len(xs)\n", []),  # code is not a directive
    ("What is the capital of France? Explain your answer.", []),
    ("Write a poem about friendship.", []),
])
def test_rule_8_families(prompt, spans):
    assert detect_instructions(prompt) == spans
    assert detect_instructions(prompt, directives=False) != spans or not spans or prompt.startswith("Answer only")
