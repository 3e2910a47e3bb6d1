"""The baselines of method.md §7 and DIRECTER's ablations, on tiny random models (float32, eager).

Zero strength equals plain greedy decoding for every method; the attention-bias mechanism matches
the analytic attention weights on hand-built cases; the steered stream equals a full recomputation
under the same bias; the plausibility filter never emits a token outside the raw beta-head; seeded
ablations reproduce; batches equal prompts one at a time.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from directer.attention_bias import (BIAS_KWARG, AttentionBias, BiasPlan, RowBias, _biased_attention, _targets,
                                     enable_attention_bias)
from directer.decoding import DecodeOptions, DecodeRequest, DecodingLoop
from directer.errors import UsageError
from directer.methods import make_method, prompt_key

from tiny import ARCHS, greedy, random_prompt, tiny_model

NEW = 10
SPAN = list(range(4, 11))
BIAS_METHODS = ("pasta", "spotlight", "instaboost")
ZERO = {"pasta": "pasta:alpha_p=1", "spotlight": "spotlight:target=0", "instaboost": "instaboost:m=1",
        "static": "static:alpha=1"}
STRONG = {"pasta": "pasta:alpha_p=0.0001", "spotlight": "spotlight:target=0.9", "instaboost": "instaboost:m=1000",
          "static": "static"}


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def prompts(n=3):
    return [random_prompt(seed, 18 + 5 * seed) for seed in range(n)]


def run(model, ps, spec, new=NEW, batch=True, filt=False, beta=0.5, eos=frozenset(), limits=None):
    opts = DecodeOptions(alpha=100.0, max_new_tokens=new, eos_token_ids=eos, pad_token_id=0)
    meth = make_method(spec, beta=beta, plausibility_filter=filt)
    reqs = [DecodeRequest(p, SPAN, max_new_tokens=(limits[i] if limits else None)) for i, p in enumerate(ps)]
    if batch:
        return DecodingLoop(model, meth, opts).run(reqs)
    return [DecodingLoop(model, meth, opts).run([r])[0] for r in reqs]


def tokens(outputs):
    return [o.token_ids for o in outputs]


# -- zero strength, and steering that does something ------------------------------------------------------


@pytest.mark.parametrize("method", sorted(ZERO))
@pytest.mark.parametrize("filt", [False, True])
def test_zero_strength_equals_plain_greedy(model, method, filt):
    expected = [greedy(model, p) for p in prompts()]
    assert tokens(run(model, prompts(), ZERO[method], filt=filt)) == expected


@pytest.mark.parametrize("method", BIAS_METHODS)
def test_strong_bias_changes_the_output(model, method):
    expected = [greedy(model, p) for p in prompts()]
    assert tokens(run(model, prompts(), STRONG[method], batch=False)) != expected


def test_the_wrapper_leaves_unbiased_forwards_untouched():
    for attn in ("eager", "sdpa"):
        model = tiny_model("qwen3", attn=attn)
        x = torch.tensor([random_prompt(1, 16)])
        before = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        enable_attention_bias(model)
        assert model.config._attn_implementation == f"directer_{attn}"
        after = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        assert torch.equal(before, after)


def test_flash_attention_is_refused_for_bias_methods():
    model = tiny_model("llama")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UsageError, match="eager or sdpa"):
        enable_attention_bias(model)


# -- the mechanism against analytic attention weights -------------------------------------------------------


def _attend(bias: AttentionBias, columns, q_len=1, kv=10, heads=4, kv_heads=2, dim=8, query=None, seed=0):
    torch.manual_seed(seed)
    q = torch.zeros(1, heads, q_len, dim) if query is None else query
    k, v = torch.randn(1, kv_heads, kv, dim), torch.randn(1, kv_heads, kv, dim)
    module = SimpleNamespace(head_dim=dim, layer_idx=0)
    row = RowBias(0, bias, frozenset({0}), torch.tensor(columns))
    mask = torch.ones(1, 1, q_len, kv, dtype=torch.bool)
    targets = _targets([row], 0, heads, kv, 0, q.device)
    out, weights = _biased_attention(module, q, k, v, mask, None, None, None, targets)
    return out, weights, v


def test_additive_bias_gives_the_analytic_weights():
    # Zero queries: uniform logits, so the weights are exactly factor / (sum of factors).
    span, kv = [2, 3, 4], 10
    for factor, target in [(0.01, "outside"), (5.0, "span")]:
        _, w, v = _attend(AttentionBias("add", factor, target=target), span if target == "span" else
                          [i for i in range(kv) if i not in span])
        f = torch.tensor([factor if (i in span) == (target == "span") else 1.0 for i in range(kv)])
        assert torch.allclose(w[0, :, 0], (f / f.sum()).expand(4, kv), atol=1e-6)


def test_head_profile_biases_only_its_heads():
    heads = {0: (1, 3)}
    _, w, _ = _attend(AttentionBias("add", 0.01, target="outside", heads=heads), list(range(5, 10)))
    uniform = torch.full((10,), 0.1)
    assert torch.allclose(w[0, 0, 0], uniform) and torch.allclose(w[0, 2, 0], uniform)
    f = torch.tensor([1.0] * 5 + [0.01] * 5)
    assert torch.allclose(w[0, 1, 0], f / f.sum(), atol=1e-6) and torch.allclose(w[0, 3, 0], f / f.sum(), atol=1e-6)


def test_spotlight_lifts_a_short_share_by_log_target_over_share():
    span, kv, target = [2, 3], 10, 0.5
    _, w, _ = _attend(AttentionBias("spotlight", target), span)
    share = len(span) / kv  # 0.2 under uniform attention, below the target
    lifted = torch.tensor([target / share if i in span else 1.0 for i in range(kv)])
    assert torch.allclose(w[0, :, 0], (lifted / lifted.sum()).expand(4, kv), atol=1e-6)
    # A share already above the target is left alone.
    _, w, _ = _attend(AttentionBias("spotlight", 0.1), span)
    assert torch.allclose(w[0, :, 0], torch.full((4, kv), 0.1), atol=1e-6)


def test_biased_output_is_the_weighted_sum_of_values():
    torch.manual_seed(3)
    query = torch.randn(1, 4, 1, 8)
    out, w, v = _attend(AttentionBias("add", 7.0), [1, 5], query=query, seed=3)
    expected = torch.einsum("bhqk,bhkd->bqhd", w, v.repeat_interleave(2, dim=1))
    assert torch.allclose(out, expected, atol=1e-6)


# -- the steered stream ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pasta", "instaboost"])
def test_stream_equals_a_full_recomputation_under_the_bias(model, method):
    """The steered stream (prefill + cached steps) picks the tokens a single uncached forward over
    prompt + generated tokens, biased at every position, would pick."""
    p = random_prompt(7, 24)
    spec = {"pasta": "pasta:alpha_p=0.001", "instaboost": "instaboost:m=50"}[method]
    out = run(model, [p], spec, new=16)[0]
    meth = make_method(spec)
    trial = meth.schedule(None, model.config.num_hidden_layers)[0]
    seq = p + out.token_ids[:-1]
    cols = SPAN if trial.bias.target == "span" else [i for i in range(len(p)) if i not in SPAN]
    plan = BiasPlan([RowBias(0, trial.bias, trial.layers, torch.tensor(cols))])
    enable_attention_bias(model)
    x = torch.tensor([seq])
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), **{BIAS_KWARG: plan}).logits[0]
    assert torch.argmax(logits[len(p) - 1:], dim=-1).tolist() == out.token_ids


@pytest.mark.parametrize("method", BIAS_METHODS + ("static",))
@pytest.mark.parametrize("filt", [False, True])
def test_batch_equals_one_at_a_time(model, method, filt):
    limits = [NEW, 4, 7]  # rows leave the batch at different steps
    one = run(model, prompts(), STRONG[method], batch=False, filt=filt, limits=limits)
    many = run(model, prompts(), STRONG[method], filt=filt, limits=limits)
    assert tokens(one) == tokens(many)
    assert [o.trace for o in one] == [o.trace for o in many]


# -- the plausibility filter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", BIAS_METHODS + ("static",))
def test_filter_never_emits_a_token_outside_the_raw_beta_head(model, method):
    beta = 0.3
    outs = run(model, prompts(), STRONG[method], filt=True, beta=beta, new=12)
    steered = 0
    for p, o in zip(prompts(), outs):
        x = torch.tensor([p + o.token_ids])
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=x).logits[0, len(p) - 1:-1].float(), dim=-1)
        for step, tok in enumerate(o.token_ids):
            assert float(probs[step, tok]) >= beta * float(probs[step].max()) - 1e-6
            steered += tok != int(probs[step].argmax())
        assert all(t.layers is None or t.trials == 1 for t in o.trace)
    # Stats add up: every step is a gate skip, an accepted steered token or a fallback.
    for o in outs:
        assert o.stats.gate_skips + sum(o.stats.accepted.values()) + o.stats.fallbacks == o.stats.steps


def test_filter_emits_steered_tokens_somewhere():
    # The filter must not be vacuous: on some architecture it lets a steered token through that differs
    # from the raw top-1.
    differing = 0
    for arch in ARCHS:
        m = tiny_model(arch)
        for p, o in zip(prompts(), run(m, prompts(), STRONG["pasta"], filt=True, beta=0.1, new=12)):
            differing += o.token_ids != greedy(m, p, 12)
    assert differing


# -- ablations and method specs -------------------------------------------------------------------------------


def test_seeded_ablations_reproduce():
    p = random_prompt(2, 30)
    a = make_method("directer:ranking=random:seed=1").schedule(None, 30, prompt_key(p))
    b = make_method("directer:ranking=random:seed=1").schedule(None, 30, prompt_key(p))
    c = make_method("directer:ranking=random:seed=2").schedule(None, 30, prompt_key(p))
    assert a == b and a != c and a[0].size == 30
    pos = make_method("directer:positions=random:seed=1")
    x, y = pos.steering_positions(p, SPAN, prompt_key(p)), pos.steering_positions(p, SPAN, prompt_key(p))
    z = make_method("directer:positions=random:seed=2").steering_positions(p, SPAN, prompt_key(p))
    assert x == y and x != z and len(x) == len(SPAN) and not set(x) & set(SPAN) and max(x) < len(p) - 1


def test_ablation_runs_reproduce_and_reversed_ranking_reverses(model):
    for spec in ("directer:ranking=random:seed=3", "directer:positions=random:seed=3"):
        assert tokens(run(model, prompts(), spec)) == tokens(run(model, prompts(), spec, batch=False))
    fwd = run(model, prompts()[:1], "directer")[0]
    rev = run(model, prompts()[:1], "directer:ranking=reversed")[0]
    assert rev.ranking.order == fwd.ranking.order  # the same sensitivity ranking, used upside down


def test_method_specs_and_their_errors():
    m = make_method("static:alpha=3:layers=0-7", layers=(1,))
    assert m.alpha == 3.0 and m.layers == tuple(range(8))
    assert make_method("pasta", plausibility_filter=True).filter
    assert not make_method("pasta:filter=0", plausibility_filter=True).filter
    for spec, msg in [("nope", "unknown method 'nope'"), ("pasta:beta", "KEY=VALUE"),
                      ("pasta:alpha=3", "no parameter 'alpha'"), ("static:alpha=x", "invalid value 'x'"),
                      ("instaboost:m=0", "invalid instaboost m"), ("spotlight:target=1.5", "invalid spotlight"),
                      ("directer:ranking=best", "unknown directer ranking"), ("none:filter=1", "no parameter")]:
        with pytest.raises(UsageError, match=msg):
            make_method(spec)


def test_head_profile_is_checked_against_the_model(tmp_path):
    profile = tmp_path / "heads.json"
    profile.write_text('{"heads": [[0, 1], [2, 9]]}')
    meth = make_method(f"pasta:profile={profile}")
    with pytest.raises(UsageError, match="does not fit"):
        DecodingLoop(tiny_model("llama"), meth, DecodeOptions())
    profile.write_text("{not json")
    with pytest.raises(UsageError, match="corrupt head profile"):
        make_method(f"pasta:profile={profile}")
    with pytest.raises(UsageError, match="not found"):
        make_method(f"pasta:profile={tmp_path / 'missing.json'}")


def test_profiled_pasta_steers_only_the_profiled_layers(tmp_path):
    profile = tmp_path / "heads.json"
    profile.write_text('{"heads": [[1, 0], [1, 2], [3, 1]]}')
    trial = make_method(f"pasta:profile={profile}").schedule(None, 4)[0]
    assert trial.layers == frozenset({1, 3}) and trial.bias.heads == {1: (0, 2), 3: (1,)}
    assert math.isclose(trial.bias.factor, 0.01)
