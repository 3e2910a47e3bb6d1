"""The key-scaling view (engine/key_scaling.py): on-the-fly scaling equals scaling a deep copy, and the
persistent cache equals plain decoding's after every step (trials never mutate it)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache

from directer.engine.key_scaling import SteeredCache
from directer.engine.plan import ForwardPlan, RowSteering

from tiny import ARCHS, SPAN, copy_scaled_logits, prompts, random_prompt, run, tiny_model


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def _plain_cache(model, ids):
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(torch.tensor([ids[:-1]]), cache=cache)
        model(torch.tensor([ids[-1:]]), cache=cache)
    return cache


def test_persistent_cache_equals_plain_decoding_cache(model):
    p = prompts(1)[0]
    checked = []

    def check(loop, rows):
        emitted = rows[0].tokens
        # The cache holds the prompt and every emitted token but the last one (fed at the next step).
        plain = _plain_cache(model, p + emitted[:-1])
        for mine, ref in zip(loop.cache.layers, plain.layers):
            assert mine.keys.shape == ref.keys.shape
            torch.testing.assert_close(mine.keys, ref.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mine.values, ref.values, atol=1e-5, rtol=1e-5)
        checked.append(len(emitted))

    out = run(model, [p], new=6, on_step=check)[0]
    assert checked == list(range(1, 7))
    assert sum(out.stats.accepted.values()) > 0  # trials really ran on this cache


@pytest.mark.parametrize("window", [None, 6])
def test_on_the_fly_scaling_equals_scaling_a_deep_copy(window):
    archs = ARCHS if window is None else ("gemma3", "mistral")
    for arch in archs:
        kw = {} if window is None else {"sliding_window": window}
        model = tiny_model(arch, **kw)
        p = random_prompt(7, 20)
        # With a window of 6, columns 12-13 are evicted and 14-17 are still held: both paths are exercised.
        span = SPAN if window is None else list(range(12, 18))
        layers = frozenset({0, 2, 3})
        # Reference: deep copy, scale the stored keys in place, plain forward.
        expected = copy_scaled_logits(model, p, span, layers, 100.0)
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(torch.tensor([p[:-1]]), cache=cache)
            before = [lay.keys.clone() for lay in cache.layers]
            plan = ForwardPlan([RowSteering(0), RowSteering(0, layers, torch.tensor(span))], alpha=100.0, persist=1)
            view = SteeredCache(cache, plan)
            got = model(torch.tensor([p[-1:], p[-1:]]), cache=view,
                        attention_mask=torch.ones(2, len(p), dtype=torch.long)).logits[:, -1]
            raw = model(torch.tensor([p[-1:]]), cache=copy.deepcopy(cache)).logits[0, -1]
        torch.testing.assert_close(got[1], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(got[0], raw, atol=1e-5, rtol=0)
        assert not torch.allclose(expected, raw), arch
        # The view never touches the persistent cache until commit.
        for b, lay in zip(before, cache.layers):
            assert torch.equal(b, lay.keys)
        view.commit()
        assert cache.get_seq_length() == len(p)
