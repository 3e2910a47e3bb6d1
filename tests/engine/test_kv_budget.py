"""The KV cache budget (engine/kv_budget.py): what it allows, what it refuses, and that a cache held to
it decodes exactly what an unlimited one does (slot_cache.compact squeezes the holes out)."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.kv_budget import CacheBudget, cache_budget, column_bytes
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.engine.slot_cache import SlotCache
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
        widest[0] = max(widest[0], engine.cache.capacity, engine.cache.width)

    return engine.run(reqs, settings, watch), engine, widest[0]


@pytest.mark.parametrize("mix", ["directer", "directer+pasta:filter=1"])
def test_a_cache_held_to_the_budget_decodes_what_an_unlimited_one_does(model, mix):
    # Prompts of different lengths through few slots (so sequences join mid-decode), trials one per
    # forward (so a sequence skips the forwards in which others advance, leaving holes in its slot):
    # the tightest budget that fits the longest request forces trims and compactions. A filtered
    # PASTA stream (a raw and a biased slot) rides along in the mixed case.
    ps = [random_prompt(80 + i, 26 - 3 * i) for i in range(5)]
    limits = [12, 12, 6, 12, 9]
    methods = mix.split("+")
    settings = [SequenceSettings(make_method(methods[i % len(methods)].split(":")[0],
                                             plausibility_filter=":filter=1" in methods[i % len(methods)]),
                                 max_new_tokens=12, speculate="never") for i in range(len(ps))]  # no speculation: holes
    slots = 2 * len(methods)
    need = max(len(p) + n for p, n in zip(ps, limits))
    free, _, _ = _decode(model, ps, limits, None, settings, slots)
    held, engine, widest = _decode(model, ps, limits, need, settings, slots)
    assert tokens(held) == tokens(free)
    assert [o.trace for o in held] == [o.trace for o in free]
    assert widest <= need
    assert engine.cache.compactions > 0  # the budget was reached: holes were squeezed out


def test_a_request_that_can_never_fit_is_refused_before_any_forward(model):
    engine, meth = _engine(model, 2, 30), make_method("directer")
    with pytest.raises(UsageError, match=r"prompt \(24 tokens\) plus --max-new-tokens \(10\) needs 34 cache columns.*"
                                         r"holds 30 \(--cache-tokens 30\).*raise --cache-tokens"):
        engine.run([DecodeRequest(random_prompt(1, 24), SPAN)], SequenceSettings(meth, max_new_tokens=10))
    assert engine.forwards == 0
    # Exactly at the budget is fine.
    out = engine.run([DecodeRequest(random_prompt(1, 20), SPAN)], SequenceSettings(meth, max_new_tokens=10))
    assert len(out[0].token_ids) == 10


def test_compaction_keeps_every_slot_s_columns_in_order():
    cache = SlotCache(2, 3, torch.device("cpu"), limit=10)
    start = cache.place(torch.tensor([0, 1]), [4, 2])
    for layer in range(2):
        k = torch.arange(2 * 1 * 4 * 2, dtype=torch.float32).view(2, 1, 4, 2) + 100 * layer
        cache.write(layer, torch.tensor([0, 1]), start, k, -k)
    for step in range(3):  # slot 0 writes at steps 0 and 2, slot 1 at step 1: holes in both
        slot = torch.tensor([0 if step != 1 else 1])
        col = cache.open_column(slot, torch.tensor([10 + step]))
        for layer in range(2):
            v = torch.full((1, 1, 1, 2), 50.0 + step)
            cache.write(layer, slot, col, v, -v)
    before = [k.clone() for k in cache.keys]
    valid = cache.valid[:, :cache.width].clone()
    moved = cache.compact([0, 1])
    assert cache.width == 6  # slot 0: 4 prompt columns + 2 written decode columns
    assert cache.valid[0, :6].all() and cache.valid[1, :3].all() and not cache.valid[1, 3:].any()
    assert not cache.valid[2].any()
    for s in (0, 1):
        old = valid[s].nonzero().flatten().tolist()
        assert [moved[s][c] for c in old] == list(range(len(old)))
        for layer in range(2):
            torch.testing.assert_close(cache.keys[layer][s, :, :len(old)], before[layer][s, :, old])
            torch.testing.assert_close(cache.values[layer][s, :, :len(old)], -before[layer][s, :, old])
    assert cache.pos[0, :6].tolist() == [0, 1, 2, 3, 10, 12]


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
