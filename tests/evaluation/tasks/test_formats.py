"""Our format checkers (answer sentence, JSON answer, boxed), strict and loose like IFEval's."""

from __future__ import annotations

import pytest

from directer.evaluation.tasks.base import loose_variants
from directer.evaluation.tasks.formats import FORMAT_CHECKERS, check_own


@pytest.mark.parametrize("response, strict", [
    ("9 * 2 = 18 dollars. The answer is 18.", True),
    ("The answer is 1,018.", True),
    ("The answer is 18.\n", True),
    ("The answer is 18", False),  # the sentence asked for has its full stop
    ("The answer is 18. Hope this helps!", False),  # not at the end
    ("the answer is 18.", False),  # not the sentence asked for
    ("The answer is eighteen.", False),
    ("", False),
])
def test_answer_sentence(response, strict):
    assert check_own("answer_format:answer_sentence", {}, response)[0] is strict


def test_answer_sentence_loose_forgives_a_trailing_line_and_bold_marks():
    assert check_own("answer_format:answer_sentence", {}, "The answer is 18.\nHope this helps!") == (False, True)
    assert check_own("answer_format:answer_sentence", {}, "**The answer is 18.**") == (False, True)


@pytest.mark.parametrize("response, strict", [
    ('{"answer": 18}', True),
    ('{"steps": ["9 * 2"], "answer": "18"}', True),
    ('```json\n{"answer": 18.5}\n```', True),
    ('{"answer": "eighteen"}', False),
    ('{"answer": true}', False),
    ('{"result": 18}', False),
    ('[18]', False),
    ('The JSON is {"answer": 18}', False),
    ('{"answer": 18', False),
])
def test_json_answer(response, strict):
    assert check_own("answer_format:json_answer", {}, response)[0] is strict


def test_json_answer_loose_forgives_a_line_of_preamble():
    assert check_own("answer_format:json_answer", {}, 'Here it is:\n{"answer": 18}') == (False, True)


@pytest.mark.parametrize("response, strict", [
    ("So she makes \\boxed{18} dollars.", True),
    ("\\boxed{\\$1,250}", True),
    ("\\boxed{}", False),
    ("\\boxed{x}", False),
    ("boxed 18", False),
])
def test_boxed(response, strict):
    assert check_own("answer_format:boxed", {}, response)[0] is strict


def test_blank_responses_follow_nothing():
    for iid in FORMAT_CHECKERS:
        assert check_own(iid, {}, "   \n ") == (False, False)


def test_loose_variants_are_ifevals_eight():
    variants = loose_variants("*a*\nb\n*c*")
    assert variants == ["*a*\nb\n*c*", "b\n*c*", "*a*\nb", "b", "a\nb\nc", "b\nc", "a\nb", "b"]
