"""The attention-bias baselines (PASTA, SpotLight, InstABoost, filtered or not) on the continuous engine
decode what the synchronised loop they replaced decoded (tokens, trace, raw log-probabilities; greedy
and sampled), alone, batched, and beside key-scaling sequences; a filtered stream holds two slots."""

from __future__ import annotations

import json
import pathlib

import pytest

from directer.methods.sampling import SamplingParams

from tiny import SPAN, prompts, run_engine, tiny_model

ORACLE = json.loads((pathlib.Path(__file__).parent / "data" / "loop_oracle.json").read_text())
CASES = [c for c in ORACLE["cases"] if c.get("mode") != "reference"]
SAMPLED = SamplingParams(0.8, 0.95, 0, 0.0, 7)  # what the oracle's sampled cases were recorded with


def _trace(outs):
    return [[[t.skipped, t.trials, t.layers] for t in o.trace] for o in outs]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['arch']}-{c['method']}-{'sampled' if c['sampled'] else 'greedy'}")
def test_bias_methods_on_the_engine_equal_the_recorded_loop(case):
    model = tiny_model(case["arch"])
    sampling = SAMPLED if case["sampled"] else SamplingParams()
    for slots in (None, 2):  # all prompts at once, and one or two at a time through the slots
        outs = run_engine(model, case["prompts"], case["method"], sampling=sampling, new=case["new"], slots=slots)
        assert [o.token_ids for o in outs] == case["tokens"]
        assert _trace(outs) == case["trace"]
        for got, want in zip(outs, case["logprobs"]):
            assert (got.raw_logprobs is None) == (want is None)  # no raw model without the filter
            if want is not None:
                assert got.raw_logprobs == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_mixed_methods_in_one_engine_equal_each_alone(arch):
    from directer.engine.continuous import Engine, EngineOptions
    from directer.engine.requests import DecodeRequest
    from directer.engine.sequence import SequenceSettings
    from directer.methods import make_method

    model = tiny_model(arch)
    specs = ["none", "pasta:filter=1", "directer", "spotlight", "instaboost:filter=1", "static"]
    ps = prompts(3)
    alone = {spec: [o.token_ids for o in run_engine(model, ps, spec, new=8)] for spec in specs}
    engine = Engine(model, EngineOptions(slots=6))  # fewer slots than rows: admission as slots free up
    seqs = [(spec, i, engine.submit(DecodeRequest(p, SPAN), SequenceSettings(make_method(spec), max_new_tokens=8)))
            for spec in specs for i, p in enumerate(ps)]
    while engine.busy:
        engine.step()
    for spec, i, seq in seqs:
        assert seq.tokens == alone[spec][i], (spec, i)


def test_a_filtered_stream_needs_two_slots():
    from directer.engine.continuous import Engine, EngineOptions
    from directer.engine.requests import DecodeRequest
    from directer.engine.sequence import SequenceSettings
    from directer.methods import make_method

    engine = Engine(tiny_model("llama"), EngineOptions(slots=1))
    with pytest.raises(ValueError, match="needs 2 slots"):
        engine.submit(DecodeRequest(prompts(1)[0], SPAN), SequenceSettings(make_method("pasta:filter=1")))
