"""The final-answer extractor and the answer matchers (task accuracy)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from directer.evaluation.tasks.answers import answer_matches, extract_number, gsm8k_reference, parse_number


@pytest.mark.parametrize("text, value", [
    ("18", "18"), ("1,000", "1000"), ("$1,000.50", "1000.50"), ("-3", "-3"), ("−3", "-3"), ("75%", "75"),
    ("42.", "42"), (".5", "0.5"), (" 7 ", "7"),
])
def test_numbers_parse_with_separators_signs_and_units(text, value):
    assert parse_number(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "abc", "1/2", "inf", "nan", "."])
def test_non_numbers_are_refused(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("response, value", [
    # 1. the last \boxed{} wins over every other number
    ("First 3 + 4 = 7, so \\boxed{7}. Check: 8 - 1 = 7? Yes, 99 cents.", "7"),
    ("\\boxed{5} no wait \\boxed{\\text{1,250}} dollars", "1250"),
    # 2. a JSON answer, whole or fenced
    ('{"reasoning": "16 - 3 - 4 = 9; 9 * 2 = 18", "answer": 18}', "18"),
    ('```json\n{"answer": "$18", "steps": 3}\n```', "18"),
    # 3. an answer cue, in any case, the last one
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18. That took 2 steps.", "18"),
    ("SHE MAKES 9 * 2 = 18 DOLLARS. THE ANSWER IS $18.", "18"),
    ("Answer: 1,234", "1234"),
    ("so 5 + 5 = 10\n#### 10", "10"),
    ("answer = -4 (we had 3 tries)", "-4"),
    # 4. otherwise the last number
    ("Janet sells 9 eggs at $2, making $18 every day.", "18"),
    ("it is 2.50 per cup", "2.50"),
])
def test_extractor_reads_the_final_answer_in_the_documented_order(response, value):
    assert extract_number(response) == Decimal(value)


def test_no_number_means_no_answer():
    assert extract_number("I cannot say.") is None
    assert not answer_matches("I cannot say.", "18")


def test_number_matcher_compares_values_not_text():
    assert answer_matches("The answer is 18.00.", "18")
    assert answer_matches("The total is $1,000.", "1000")
    assert not answer_matches("The answer is 17.", "18")
    assert answer_matches("The answer is 18, not 19 as I first said.", "18")  # a cue beats later numbers
    with pytest.raises(ValueError, match="not a number"):
        answer_matches("x", "eighteen")


def test_exact_and_regex_matchers():
    assert answer_matches('  "Paris."  ', "paris", "exact")
    assert not answer_matches("It is Paris.", "Paris", "exact")
    assert answer_matches("It is Paris.", r"\bParis\b", "regex")
    assert not answer_matches("It is paris.", r"\bParis\b", "regex")
    with pytest.raises(ValueError, match="unknown matcher"):
        answer_matches("x", "x", "fuzzy")


def test_gsm8k_reference_is_the_text_after_the_marks():
    assert gsm8k_reference("16 - 3 - 4 = <<16-3-4=9>>9\n9 * 2 = $<<9*2=18>>18\n#### 18") == "18"
    assert gsm8k_reference("... #### 1,000") == "1,000"
    with pytest.raises(ValueError):
        gsm8k_reference("no marks")
