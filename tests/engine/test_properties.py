"""Property tests of decoding as the library runs it (paper mode on the continuous engine, reference mode
on its sequential specification) on tiny random models of five architectures (float32)."""

from __future__ import annotations

import pytest

from directer.engine.reference import ReferenceDecoder
from directer.engine.requests import DecodeRequest
from directer.methods import make_method

from tiny import ARCHS, SPAN, assert_same_ranking, greedy, prompts, run, tiny_model, tokens


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


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


def test_the_engines_packed_probes_equal_one_probe_per_forward(model):
    """The engine's ranking (probes folded into the prefill, read copy-free) equals the sequential
    specification's, which runs one probe per forward on a cache (paper-mode scores)."""
    a = run(model, prompts(2), new=1)
    seq = ReferenceDecoder(model, make_method("directer"), max_new_tokens=1, eos_token_ids=frozenset())
    b = seq.run([DecodeRequest(p, SPAN) for p in prompts(2)])
    for x, y in zip(a, b):
        assert_same_ranking(x.ranking, y.ranking)


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
    for mode in ("paper", "reference"):
        out = run(model, [p], alpha=1.0, mode=mode, eos=frozenset({first[2]}))[0]
        assert out.finish_reason == "eos"
        assert out.token_ids[-1] == first[2] and len(out.token_ids) <= 3
