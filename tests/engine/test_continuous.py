"""Property tests of the continuous engine (engine/continuous.py) on tiny random models of five
architectures (float32): the decoding invariants, continuous admission, cancellation, mixed settings in
one forward, and equality with the sequential specification (engine/reference.py)."""

from __future__ import annotations

import pytest

from directer.engine.continuous import Engine, EngineOptions, output
from directer.engine.reference import ReferenceDecoder
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.methods import make_method

from tiny import ARCHS, SPAN, assert_same_ranking, greedy, prompts, random_prompt, run, run_engine, tiny_model, tokens


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def traces(outputs):
    return [o.trace for o in outputs]


def test_alpha_one_and_method_none_equal_plain_greedy(model):
    expected = [greedy(model, p) for p in prompts()]
    assert tokens(run_engine(model, prompts(), alpha=1.0, slots=1)) == expected
    assert tokens(run_engine(model, prompts(), method="none")) == expected
    assert tokens(run_engine(model, prompts(), method="static", alpha=1.0)) == expected


def test_steering_changes_the_output(model):
    expected = [greedy(model, p) for p in prompts()]
    assert tokens(run_engine(model, prompts(), method="static")) != expected


@pytest.mark.parametrize("method", ["directer", "static", "none"])
def test_engine_equals_the_sequential_specification(model, method):
    """One prompt at a time, one trial and one probe per forward, keys scaled on a cache view (the
    released code's structure, with paper-mode policies) decodes what the packed engine decodes."""
    spec = ReferenceDecoder(model, make_method(method), max_new_tokens=10, eos_token_ids=frozenset())
    old = spec.run([DecodeRequest(p, SPAN) for p in prompts()])
    new = run_engine(model, prompts(), method=method)
    assert tokens(new) == tokens(old)
    assert traces(new) == traces(old)
    for o, n in zip(old, new):
        assert n.raw_logprobs == pytest.approx(o.raw_logprobs, abs=1e-4)
        if o.ranking is not None:  # float-level differences only (the raw pass is a prefill here)
            assert n.ranking.scores == pytest.approx(o.ranking.scores, abs=1e-5)


@pytest.mark.parametrize("method", ["directer", "static", "none"])
def test_batched_equals_one_at_a_time(model, method):
    together = run_engine(model, prompts(), method=method)
    alone = [run_engine(model, [p], method=method)[0] for p in prompts()]
    assert tokens(together) == tokens(alone)
    assert traces(together) == traces(alone)


def test_skip_gate_never_changes_the_output(model):
    on, off = run_engine(model, prompts()), run_engine(model, prompts(), gate=False)
    assert tokens(on) == tokens(off)
    assert sum(o.stats.gate_skips for o in off) == 0


@pytest.mark.parametrize("trials", ["all", "first"])
@pytest.mark.parametrize("speculate", ["never", "always"])
def test_trial_policies_never_change_the_output(model, trials, speculate):
    a = run_engine(model, prompts(), trials="auto")
    b = run_engine(model, prompts(), trials=trials, speculate=speculate)
    assert tokens(a) == tokens(b) and traces(a) == traces(b)


def test_auto_speculation_follows_the_cost_of_rows(model):
    """speculate="auto" folds the trials into the raw forward where rows are free (a weight-bound GPU's
    costs: fewer forwards, the trials of a shut gate the price) and never where they are dear (costs
    fixed, not learnt, so the choice is the same on every machine); the tokens and traces are never's."""
    engines = []
    never = run_engine(model, prompts(), speculate="never", engines=engines)
    free = run_engine(model, prompts(), speculate="auto", cost=(0.015, 0.0), engines=engines)
    dear = run_engine(model, prompts(), speculate="auto", cost=(0.015, 1.0), engines=engines)
    assert tokens(free) == tokens(never) == tokens(dear) and traces(free) == traces(never) == traces(dear)
    forwards = [e.forwards for e in engines]
    rows = [sum(o.stats.trial_rows for o in outs) for outs in (never, free, dear)]
    assert forwards[1] < forwards[0] == forwards[2] and rows[1] >= rows[0] == rows[2], (forwards, rows)


def test_probes_in_the_prefill_equal_probes_in_a_decode_forward(model):
    # Prompts of different lengths (left padding in the prefill), some gates open at step 0 (the
    # all-layer trial's token read off the prefill), rankings from extra query positions.
    ps = [random_prompt(30 + i, 14 + 5 * i) for i in range(4)]
    decode = run_engine(model, ps, probes="decode")
    prefill = run_engine(model, ps, probes="prefill")
    assert tokens(prefill) == tokens(decode) and traces(prefill) == traces(decode)
    for d, p in zip(decode, prefill):
        assert_same_ranking(p.ranking, d.ranking)
    assert any(not o.trace[0].skipped for o in prefill)  # a first step decided by the folded trial


def test_sliding_window_probes_in_the_prefill_match_when_columns_leave_the_window():
    # Window 6 against 20-token prompts: the extra rows see only the window, as a decode row would.
    model = tiny_model("mistral", sliding_window=6)
    ps = [random_prompt(40, 20), random_prompt(41, 16)]
    a, b = run_engine(model, ps, probes="decode"), run_engine(model, ps, probes="prefill")
    assert tokens(a) == tokens(b)
    for x, y in zip(a, b):
        assert y.ranking.scores == pytest.approx(x.ranking.scores, abs=1e-5)


def test_unknown_engine_options_are_named(model):
    with pytest.raises(ValueError, match="unknown probe placement 'early'"):
        Engine(model, EngineOptions(probes="early"))


def test_continuous_admission_gives_each_prompt_its_tokens_alone(model):
    # Seven prompts of different lengths and limits through two slots: rows finish at different
    # steps and are replaced, so prompts join while others are mid-decode (at every trial state).
    ps = [random_prompt(10 + i, 12 + 4 * i) for i in range(7)]
    limits = [3, 12, 5, 9, 1, 7, 10]
    joined = run_engine(model, ps, slots=2, limits=limits, admit_min=1, new=12)
    alone = [run_engine(model, [p], limits=[n], new=12)[0] for p, n in zip(ps, limits)]
    assert tokens(joined) == tokens(alone)
    assert traces(joined) == traces(alone)
    assert [len(o.token_ids) for o in joined] == limits


def test_mixed_settings_in_one_forward_equal_each_request_alone(model):
    ps = prompts(4)
    settings = [
        SequenceSettings(make_method("directer"), max_new_tokens=8),
        SequenceSettings(make_method("directer", alpha=5.0, beta=0.2), max_new_tokens=6),
        SequenceSettings(make_method("none"), max_new_tokens=10),
        SequenceSettings(make_method("static", alpha=3.0), max_new_tokens=7),
    ]
    reqs = [DecodeRequest(p, SPAN) for p in ps]
    mixed = Engine(model, EngineOptions(slots=4)).run(reqs, settings)
    alone = [Engine(model, EngineOptions(slots=1)).run([r], s)[0] for r, s in zip(reqs, settings)]
    assert tokens(mixed) == tokens(alone)
    assert traces(mixed) == traces(alone)


def test_a_cancelled_request_frees_its_slot_and_changes_nothing_else(model):
    ps = prompts(3)
    reqs = [DecodeRequest(p, SPAN) for p in ps]
    settings = SequenceSettings(make_method("directer"), max_new_tokens=10)
    expected = Engine(model, EngineOptions(slots=3)).run(reqs, settings)
    engine = Engine(model, EngineOptions(slots=3))
    seqs = [engine.submit(r, settings) for r in reqs]
    while len(seqs[1].tokens) < 3:
        engine.step()
    slot = seqs[1].slot
    engine.cancel(seqs[1])
    while engine.busy:
        engine.step()
    assert seqs[1].finish_reason == "cancelled" and len(seqs[1].tokens) < 10
    assert slot in engine.free and not engine.cache.valid[slot].any()
    assert [output(seqs[i]).token_ids for i in (0, 2)] == [expected[i].token_ids for i in (0, 2)]


def test_own_keys_from_scratch_or_concatenated_decode_the_same(model, monkeypatch):
    # a decode forward's extra rows read their own keys from the cache's scratch row when their padded
    # count fits its columns, else concatenate them: the same keys in the same layout, bit for bit
    from directer.engine.packed_attention import PackedPlan
    used = []
    scratch = PackedPlan._own_in_scratch

    def recorded(self):
        used.append(scratch(self))
        return used[-1]

    monkeypatch.setattr(PackedPlan, "_own_in_scratch", recorded)
    a = run_engine(model, prompts(), speculate="always")
    assert any(used)
    monkeypatch.setattr(PackedPlan, "_own_in_scratch", lambda self: False)
    b = run_engine(model, prompts(), speculate="always")
    assert tokens(a) == tokens(b) and traces(a) == traces(b)
    assert [o.raw_logprobs for o in a] == [o.raw_logprobs for o in b]


def test_trials_never_touch_the_persistent_cache(model):
    # After some steered steps, a sequence's slot holds exactly plain decoding's keys and values of
    # the tokens it was fed (trial and probe rows keep none of theirs).
    p = prompts(1)[0]
    engine = Engine(model, EngineOptions(slots=2))
    settings = SequenceSettings(make_method("directer", beta=0.05), max_new_tokens=10)
    seq = engine.submit(DecodeRequest(p, SPAN), settings)
    engine.submit(DecodeRequest(prompts(2)[1], SPAN), settings)
    while not (len(seq.tokens) >= 6 and seq.state == "raw"):
        engine.step()
    assert seq.stats.trial_rows > 0
    fed = p + seq.tokens[:-1]
    import torch
    from transformers.cache_utils import DynamicCache
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=torch.tensor([fed]), cache=cache, use_cache=True)
    c = engine.cache
    assert c.valid[seq.slot].nonzero().squeeze(1).tolist() == list(range(len(fed)))  # a column is a position
    cols = torch.arange(len(fed))
    for layer in range(len(cache.layers)):
        expected = cache.layers[layer].keys[0]
        got = c.keys[layer][seq.slot][:, cols]
        n = expected.shape[-2]  # a sliding layer keeps only its window
        torch.testing.assert_close(got[:, -n:], expected, atol=1e-5, rtol=1e-5)


def test_trace_and_stats_are_consistent(model):
    for o in run_engine(model, prompts(), slots=2):
        assert len(o.trace) == len(o.token_ids) == o.stats.steps == len(o.raw_logprobs)
        assert sum(o.stats.accepted.values()) + o.stats.fallbacks + o.stats.gate_skips == o.stats.steps
        assert sorted(o.ranking.order) == list(range(4))


def test_generation_stops_at_end_of_sequence(model):
    p = prompts(1)[0]
    first = greedy(model, p, new=3)
    out = run_engine(model, [p], alpha=1.0, eos=frozenset({first[2]}))[0]
    assert out.finish_reason == "eos" and out.token_ids[-1] == first[2] and len(out.token_ids) <= 3


