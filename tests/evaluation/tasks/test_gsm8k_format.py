"""GSM8K-Format: the items (seeded, balanced constraints appended as the span) and every constraint's
checker on a response that follows it and one that does not."""

from __future__ import annotations

import collections
import json
from collections import Counter
from pathlib import Path

import pytest

from directer.errors import UsageError
from directer.evaluation.tasks.gsm8k_format import FORMATS, gsm8k_format_items, load_gsm8k
from directer.evaluation.tasks.registry import load_task, select
from directer.evaluation.tasks.scoring import score_item

# 240 problems written for the tests in the GSM8K test split's file format (question; worked answer
# ending in "#### N"), so that the whole path from a data file runs offline in every clone.
FIXTURE = Path(__file__).resolve().parent / "data" / "gsm8k_style.jsonl"


def rows(n: int) -> list[tuple[str, str]]:
    return [(f"Question {i}: what is {i} + {i}?", str(2 * i)) for i in range(n)]


def test_every_problem_gets_one_constraint_appended_after_a_blank_line_as_its_span():
    items = gsm8k_format_items(rows(30))
    for item, (question, answer) in zip(items, rows(30)):
        fmt = next(f for f in FORMATS if f.id == item.instruction_id_list[0])
        assert item.prompt == f"{question}\n\n{fmt.text}"
        assert item.instructions == [fmt.text] and item.kwargs == [fmt.kwargs]
        assert item.answer == answer and item.matcher == "number"


def test_the_assignment_is_seeded_and_balanced():
    a, b = gsm8k_format_items(rows(120)), gsm8k_format_items(rows(120))
    assert [i.instruction_id_list for i in a] == [i.instruction_id_list for i in b]
    counts = collections.Counter(i.instruction_id_list[0] for i in a)
    assert len(FORMATS) >= 8 and set(counts) == {f.id for f in FORMATS} and set(counts.values()) == {120 // len(FORMATS)}
    # not simply cycling in data order
    assert [i.instruction_id_list[0] for i in a[:len(FORMATS)]] != [f.id for f in FORMATS]


# A response that follows each constraint (and answers 18), and one that does not.
FOLLOWS = {
    "answer_format:answer_sentence": ("She sells 9 eggs at $2 each. The answer is 18.", "She makes 18 dollars."),
    "answer_format:json_answer": ('{"steps": "16 - 3 - 4 = 9, 9 * 2 = 18", "answer": 18}', "answer: 18"),
    "answer_format:boxed": ("9 * 2 = 18, so \\boxed{18}.", "9 * 2 = 18, so 18."),
    # (the case checkers also ask langdetect whether the text is English: long enough sentences)
    "change_case:english_lowercase": ("janet has sixteen eggs. she eats three and bakes with four, so she sells "
                                      "the other nine at the market and makes 18 dollars every day.",
                                      "Janet has sixteen eggs. She eats three and bakes with four, so she sells "
                                      "the other nine at the market and makes 18 dollars every day."),
    "punctuation:no_comma": ("She sells 9 eggs and makes 18 dollars.", "She sells 9 eggs, and makes 18 dollars."),
    "length_constraints:number_sentences": ("16 - 7 = 9 eggs. 9 * 2 = 18. She makes 18 dollars.",
                                            "She has 16. She eats 3. She bakes 4. She sells 9. She makes 18."),
    "detectable_format:number_highlighted_sections": ("*9 eggs* are left, so she makes *18 dollars*.",
                                                      "*9 eggs* are left, so she makes 18 dollars."),
    "startend:quotation": ('"She makes 18 dollars."', "She makes 18 dollars."),
    # (langdetect calls many all-capital English texts German: IFEval's checker then fails them too)
    "change_case:english_capital": ("THIS IS THE ANSWER TO THE QUESTION: SHE MAKES 18 DOLLARS EVERY DAY AT THE MARKET.",
                                    "THIS IS THE ANSWER TO THE QUESTION: SHE MAKES 18 dollars every day at the market."),
    "startend:end_checker": ("She makes 18 dollars. Is there anything else I can help with?",
                             "Is there anything else I can help with? She makes 18 dollars."),
    "detectable_format:number_bullet_lists": ("* 16 - 3 - 4 = 9\n* 9 * 2 = 18\n* She makes 18 dollars",
                                              "* 16 - 3 - 4 = 9\n* She makes 18 dollars"),
    "detectable_format:title": ("<<Eggs for sale>>\nShe makes 18 dollars.", "Eggs for sale: she makes 18 dollars."),
}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.id)
def test_every_constraint_is_checked(fmt):
    item = next(i for i in gsm8k_format_items(rows(24)) if i.instruction_id_list == [fmt.id])
    item.answer = "18"
    good, bad = FOLLOWS[fmt.id]
    ok, not_ok = score_item(item, good), score_item(item, bad)
    assert ok.strict == [True] and ok.answer is True and ok.both_strict
    assert not_ok.strict == [False] and not not_ok.both_strict


def test_data_file_errors_name_the_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"question": "q", "answer": "#### 4"}\n{"question": "q2"}\n')
    with pytest.raises(UsageError, match=r"g\.jsonl:2: a record needs"):
        load_gsm8k(str(path))
    path.write_text('{"question": "q", "answer": "#### four"}\n')
    with pytest.raises(UsageError, match=r"g\.jsonl:1: the answer 'four' is not a number"):
        load_gsm8k(str(path))
    path.write_text("not json\n")
    with pytest.raises(UsageError, match=r"g\.jsonl:1: not JSON"):
        load_gsm8k(str(path))
    with pytest.raises(UsageError, match="cannot read --data"):
        load_gsm8k(str(tmp_path / "missing.jsonl"))


def test_bare_answers_and_gsm8k_solutions_are_both_accepted(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"}) + "\n"
                    + json.dumps({"question": "r", "answer": 1000}) + "\n")
    got, digest = load_gsm8k(str(path))
    assert got == [("q", "4"), ("r", "1000")] and len(digest) == 64


def test_a_gsm8k_format_data_file_loads_as_one_item_per_problem():
    task = load_task("gsm8k-format", {"data": str(FIXTURE)})
    assert len(task.items) == 240 and task.args["version"] == "1"
    first = json.loads(FIXTURE.read_text().splitlines()[0])
    assert task.items[0].answer == first["answer"].rsplit("#### ", 1)[1]
    assert task.items[0].prompt.startswith(first["question"])
    chosen = select(task.items, sample=200, seed=0)
    assert len(chosen) == 200 and [i.key for i in chosen] == sorted(i.key for i in chosen)
    # every format constraint is used, each about equally often (the seeded balanced assignment)
    counts = Counter(i.instruction_id_list[0] for i in task.items)
    assert len(counts) == len(FORMATS) and max(counts.values()) - min(counts.values()) <= 1


def test_the_hub_is_used_only_without_data_and_through_datasets(monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(name, config, split):  # the Hub is not reached from tests: a stand-in records the call
        calls.append((name, config, split))
        return [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    rows, _ = load_gsm8k(None)
    assert calls == [("openai/gsm8k", "main", "test")] and rows == [("What is 2 + 2?", "4")]

    def unreachable(name, config, split):
        raise ConnectionError("no network")

    fake.load_dataset = unreachable
    with pytest.raises(UsageError, match="cannot load openai/gsm8k .*pass --data FILE"):
        load_gsm8k(None)
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(UsageError, match="pip install datasets, or pass --data FILE"):
        load_gsm8k(None)
