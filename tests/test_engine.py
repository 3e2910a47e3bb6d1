"""Property tests of the DIRECTER engine on tiny random models of five architectures (float32)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.cache_utils import DynamicCache

from directer.decoding import DecodeOptions, DecodeRequest, DecodingLoop
from directer.methods import make_method
from directer.steering import ForwardPlan, RowSteering, SteeredCache, column_offset

from tiny import ARCHS, greedy, random_prompt, tiny_model

NEW = 10
SPAN = list(range(4, 11))


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def prompts(n=3):
    # Different lengths, so that batches are left-padded.
    return [random_prompt(seed, 18 + 5 * seed) for seed in range(n)]


def run(model, ps, method="directer", mode="paper", alpha=100.0, beta=0.5, gate=True, batch=True,
        trial_batching="all", probe_batch_size=64, positions=None, on_step=None, new=NEW, speculate="never"):
    positions = positions or [SPAN] * len(ps)
    opts = DecodeOptions(alpha=alpha, max_new_tokens=new, eos_token_ids=frozenset(), pad_token_id=0, mode=mode,
                         trial_batching=trial_batching, probe_batch_size=probe_batch_size, speculate=speculate)
    meth = make_method(method, beta=beta, mode=mode, gate=gate)
    if batch:
        return DecodingLoop(model, meth, opts).run([DecodeRequest(p, pos) for p, pos in zip(ps, positions)], on_step)
    return [DecodingLoop(model, meth, opts).run([DecodeRequest(p, pos)], on_step)[0] for p, pos in zip(ps, positions)]


def tokens(outputs):
    return [o.token_ids for o in outputs]


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_alpha_one_and_method_none_equal_plain_greedy(model, mode):
    expected = [greedy(model, p) for p in prompts()]
    assert tokens(run(model, prompts(), alpha=1.0, mode=mode, batch=False)) == expected
    assert tokens(run(model, prompts(), method="none", batch=False)) == expected
    assert tokens(run(model, prompts(), method="static", alpha=1.0, batch=False)) == expected


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_beta_above_one_equals_plain_greedy(model, mode):
    expected = [greedy(model, p) for p in prompts()]
    out = run(model, prompts(), beta=1.5, mode=mode, batch=False)
    assert tokens(out) == expected
    assert all(t.layers is None for o in out for t in o.trace)


def test_steering_changes_the_output(model):
    # Guards the tests above against a mechanism that silently does nothing.
    expected = [greedy(model, p) for p in prompts()]
    assert tokens(run(model, prompts(), method="static", batch=False)) != expected


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_skip_gate_never_changes_the_output(model, mode):
    on = run(model, prompts(), mode=mode)
    off = run(model, prompts(), mode=mode, gate=False)
    assert tokens(on) == tokens(off)
    assert sum(o.stats.gate_skips for o in off) == 0


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_batched_trials_equal_sequential_trials(model, mode):
    a = run(model, prompts(), mode=mode, trial_batching="all")
    b = run(model, prompts(), mode=mode, trial_batching="sequential")
    assert tokens(a) == tokens(b)
    assert [o.trace for o in a] == [o.trace for o in b]
    # Sequential trials stop at the first accepted one: fewer steered rows computed.
    assert sum(o.stats.trial_rows for o in b) <= sum(o.stats.trial_rows for o in a)


@pytest.mark.parametrize("speculate", ["always", "auto"])
def test_speculative_trials_never_change_the_output(model, speculate):
    a = run(model, prompts(), speculate="never")
    b = run(model, prompts(), speculate=speculate)
    assert tokens(a) == tokens(b)
    assert [o.trace for o in a] == [o.trace for o in b]
    if speculate == "always":
        assert sum(o.stats.trial_rows for o in b) >= sum(o.stats.trial_rows for o in a)


@pytest.mark.parametrize("method", ["directer", "static", "none"])
def test_batch_of_prompts_equals_one_at_a_time(model, method):
    batched = run(model, prompts(), method=method, batch=True)
    single = run(model, prompts(), method=method, batch=False)
    assert tokens(batched) == tokens(single)
    assert [o.trace for o in batched] == [o.trace for o in single]


def test_batched_ranking_probes_equal_sequential_probes(model):
    for mode in ("paper", "reference"):
        a = run(model, prompts(2), mode=mode, probe_batch_size=64, new=1)
        b = run(model, prompts(2), mode=mode, probe_batch_size=1, new=1)
        for x, y in zip(a, b):
            assert x.ranking.order == y.ranking.order
            assert x.ranking.scores == pytest.approx(y.ranking.scores, abs=1e-5)


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
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(torch.tensor([p[:-1]]), cache=cache)
            # Reference: deep copy, scale the stored keys in place, plain forward.
            scaled = copy.deepcopy(cache)
            for layer in layers:
                lay = scaled.layers[layer]
                cols = torch.tensor(span) - column_offset(lay)
                cols = cols[(cols >= 0) & (cols < lay.keys.shape[-2])]
                lay.keys[:, :, cols, :] *= 100.0
            expected = model(torch.tensor([p[-1:]]), cache=scaled).logits[0, -1]
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


def test_sliding_window_eviction_is_reported():
    model = tiny_model("gemma3", sliding_window=6)
    out = run(model, [random_prompt(3, 24)], positions=[[2, 3, 4]], new=3)[0]
    sliding = [i for i in range(4) if i % 2 == 0]
    assert out.stats.evicted_layers == sliding
    out = run(tiny_model("llama"), [random_prompt(3, 24)], positions=[[2, 3, 4]], new=3)[0]
    assert out.stats.evicted_layers == []


def test_trace_and_stats_are_consistent(model):
    for o in run(model, prompts()):
        assert len(o.trace) == len(o.token_ids) == o.stats.steps
        assert o.stats.gate_skips == sum(t.skipped for t in o.trace)
        assert o.stats.trials == sum(t.trials for t in o.trace)
        assert sum(o.stats.accepted.values()) + o.stats.fallbacks + o.stats.gate_skips == o.stats.steps
        assert sorted(o.ranking.order) == list(range(4))


def test_reference_mode_never_gates_the_first_step(model):
    for o in run(model, prompts(), mode="reference", beta=0.01):
        assert not o.trace[0].skipped and o.trace[0].trials >= 1


def test_generation_stops_at_end_of_sequence(model):
    p = prompts(1)[0]
    first = greedy(model, p, new=3)
    opts = DecodeOptions(alpha=1.0, max_new_tokens=10, eos_token_ids=frozenset({first[2]}), pad_token_id=0)
    out = DecodingLoop(model, make_method("directer"), opts).run([DecodeRequest(p, SPAN)])[0]
    assert out.finish_reason == "eos"
    assert out.token_ids[-1] == first[2] and len(out.token_ids) <= 3
