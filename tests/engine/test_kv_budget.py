"""The KV cache budget (engine/kv_budget.py): what it allows, what it refuses, and that a cache held to
it decodes exactly what an unlimited one does."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.kv_budget import CacheBudget, cache_budget, column_bytes
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.errors import UsageError
from directer.methods import make_method

from tiny import SPAN, random_prompt, tiny_model, tokens


@pytest.fixture(scope="module", params=["llama", "gemma3", "mistral"])
def model(request):
    return tiny_model(request.param)


def _engine(model, slots, columns, trials="first"):
    return Engine(model, EngineOptions(slots=slots, trials=trials, admit_min=1,
                                       budget=CacheBudget(columns, f"--cache-tokens {columns}")))


def _decode(model, ps, limits, columns, settings, slots):
    engine = _engine(model, slots, columns)
    reqs = [DecodeRequest(p, SPAN, max_new_tokens=n) for p, n in zip(ps, limits)]
    widest = [0]

    def watch(_seq):  # the cache never holds more columns than the budget
        widest[0] = max(widest[0], engine.cache.capacity)

    return engine.run(reqs, settings, watch), engine, widest[0]


@pytest.mark.parametrize("mix", ["directer", "directer+pasta:filter=1"])
def test_a_cache_held_to_the_budget_decodes_what_an_unlimited_one_does(model, mix):
    # Prompts of different lengths through few slots (so sequences join mid-decode and slots are reused),
    # trials one per forward (so a sequence skips the forwards in which others advance), under the
    # tightest budget that fits the longest request. A filtered PASTA stream (a raw and a biased slot)
    # rides along in the mixed case.
    ps = [random_prompt(80 + i, 26 - 3 * i) for i in range(5)]
    limits = [12, 12, 6, 12, 9]
    methods = mix.split("+")
    settings = [SequenceSettings(make_method(methods[i % len(methods)].split(":")[0],
                                             plausibility_filter=":filter=1" in methods[i % len(methods)]),
                                 max_new_tokens=12, speculate="never") for i in range(len(ps))]
    slots = 2 * len(methods)
    need = max(len(p) + n for p, n in zip(ps, limits))
    free, _, _ = _decode(model, ps, limits, None, settings, slots)
    held, engine, widest = _decode(model, ps, limits, need, settings, slots)
    assert tokens(held) == tokens(free)
    assert [o.trace for o in held] == [o.trace for o in free]
    assert widest == need  # the budget was reached (the spare columns were held to it)


def test_a_request_that_can_never_fit_is_refused_before_any_forward(model):
    engine, meth = _engine(model, 2, 30), make_method("directer")
    with pytest.raises(UsageError, match=r"prompt \(24 tokens\) plus --max-new-tokens \(10\) needs 34 cache columns.*"
                                         r"holds 30 \(--cache-tokens 30\).*raise --cache-tokens"):
        engine.run([DecodeRequest(random_prompt(1, 24), SPAN)], SequenceSettings(meth, max_new_tokens=10))
    assert engine.forwards == 0
    # Exactly at the budget is fine.
    out = engine.run([DecodeRequest(random_prompt(1, 20), SPAN)], SequenceSettings(meth, max_new_tokens=10))
    assert len(out[0].token_ids) == 10


def test_the_budget_is_the_smaller_of_tokens_and_memory(model, monkeypatch):
    config = model.config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_column = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # float32
    assert column_bytes(model) == {torch.device("cpu"): per_column}
    # 4 slots and the scratch row share half of 1000 x 5 columns' memory
    monkeypatch.setattr("directer.engine.kv_budget.available_memory", lambda device: 1000 * 5 * per_column)
    assert cache_budget(model, 4, cache_memory=0.5).columns == 500
    assert cache_budget(model, 4, cache_tokens=300, cache_memory=0.5).columns == 300
    by_memory = cache_budget(model, 4, cache_tokens=800, cache_memory=0.5)
    assert by_memory.columns == 500 and "--cache-memory 0.5" in by_memory.reason
    assert cache_budget(model, 4).columns is None
    with pytest.raises(ValueError, match="cache_memory"):
        cache_budget(model, 4, cache_memory=1.5)
