"""Reference mode's sequential specification (engine/reference.py): its key-scaling view equals scaling
a deep copy of the cache and never touches the cache before commit, its persistent cache equals plain
decoding's, and it reproduces, token for token, what the synchronised loop it replaced decoded."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from transformers.cache_utils import DynamicCache

from directer.engine.reference import ReferenceDecoder, _ScaledView
from directer.engine.requests import DecodeRequest
from directer.methods import make_method

from tiny import ARCHS, SPAN, copy_scaled_logits, random_prompt, tiny_model

ORACLE = json.loads((pathlib.Path(__file__).parent / "data" / "loop_oracle.json").read_text())


@pytest.mark.parametrize("window", [None, 6])
def test_on_the_fly_scaling_equals_scaling_a_deep_copy(window):
    archs = ARCHS if window is None else ("gemma3", "mistral")
    for arch in archs:
        model = tiny_model(arch, **({} if window is None else {"sliding_window": window}))
        p = random_prompt(7, 20)
        # With a window of 6, columns 12-13 are evicted and 14-17 are still held: both paths are exercised.
        span = SPAN if window is None else list(range(12, 18))
        layers = frozenset({0, 2, 3})
        expected = copy_scaled_logits(model, p, span, layers, 100.0)  # deep copy, keys scaled in place
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(torch.tensor([p[:-1]]), cache=cache)
            before = [lay.keys.clone() for lay in cache.layers]
            view = _ScaledView(cache, layers, span, 100.0)
            got = model(torch.tensor([p[-1:]]), position_ids=torch.tensor([[len(p) - 1]]), cache=view).logits[0, -1]
            raw = model(torch.tensor([p[-1:]]), position_ids=torch.tensor([[len(p) - 1]]),
                        cache=_ScaledView(cache)).logits[0, -1]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        assert not torch.allclose(expected, raw), arch
        for b, lay in zip(before, cache.layers):  # a view never touches the persistent cache
            assert torch.equal(b, lay.keys)
        view.commit()
        assert cache.get_seq_length() == len(p)


@pytest.mark.parametrize("case", [c for c in ORACLE["cases"] if c.get("mode") == "reference"],
                         ids=lambda c: f"{c['arch']}-{c['method']}")
def test_reference_mode_reproduces_the_recorded_loop(case):
    model = tiny_model(case["arch"])
    method = make_method(case["method"], mode="reference")
    outs = ReferenceDecoder(model, method, max_new_tokens=case["new"], eos_token_ids=frozenset()).run(
        [DecodeRequest(p, SPAN) for p in case["prompts"]])
    assert [o.token_ids for o in outs] == case["tokens"]
    assert [[[t.skipped, t.trials, t.layers] for t in o.trace] for o in outs] == case["trace"]
    assert [o.ranking.order if o.ranking else None for o in outs] == case["ranking"]
    for got, want in zip(outs, case["logprobs"]):
        assert got.raw_logprobs == pytest.approx(want, abs=1e-4)


def test_reference_mode_refuses_attention_bias_methods():
    with pytest.raises(ValueError, match="key-scaling policies only"):
        ReferenceDecoder(tiny_model("llama"), make_method("pasta"), max_new_tokens=2, eos_token_ids=frozenset())
