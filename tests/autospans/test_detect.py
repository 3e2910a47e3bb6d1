"""Rule-based instruction-span detection (autospans/detect.py, clauses.py) on hand-written prompts (no model)."""

from __future__ import annotations

import pytest

from directer import autospans
from directer.autospans import detect_instructions, detect_spans, instruction_anchors

from span_checks import assert_well_formed


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
    assert detect_instructions(prompt, directives=False) == []
    found = detect_instructions(prompt, ["keywords:existence"], [{"keywords": ["lantern"]}], directives=False)
    assert found == ["It must feature the word lantern."]
    # rule 7 finds it by its role alone (a directive after the task)
    assert detect_instructions(prompt) == ["It must feature the word lantern."]


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
