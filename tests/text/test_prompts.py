"""Building the prompt (text/prompts.py): the authors' layout, and instructions found in the prompt."""

from __future__ import annotations

from directer.text import prompts
from directer.text import spans as spans_module
from directer.text.spans import compose_user_message

TASK = "Write a poem about the sea."
NO_COMMAS = "Do not use any commas."
SHORT = "Keep it under 50 words."


def test_prompt_building_is_reexported():
    assert spans_module.compose_user_message is prompts.compose_user_message
    assert set(spans_module.__all__) <= set(dir(spans_module))


def test_compose_user_message():
    assert compose_user_message(TASK, [NO_COMMAS]) == TASK + "\n\n" + NO_COMMAS
    assert compose_user_message(TASK, [NO_COMMAS, SHORT]) == TASK + "\n\n" + NO_COMMAS + "\n" + SHORT
    assert compose_user_message(TASK, []) == TASK
    assert compose_user_message("", [NO_COMMAS]) == NO_COMMAS


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #


def test_instructions_are_found_ignoring_case_and_spacing():
    from directer.text.prompts import find_instructions

    contents = ["Write a poem.\nDo  NOT use\nany commas, please.", "Be brief."]
    assert find_instructions(["do not use any commas"], contents) == ["Do  NOT use\nany commas"]
    assert find_instructions(["Write a poem."], contents) == ["Write a poem."]  # verbatim: unchanged
    assert find_instructions(["be BRIEF."], contents) == ["Be brief."]
    assert find_instructions(["Use no emoji."], contents) == ["Use no emoji."]  # missing: left to be appended
