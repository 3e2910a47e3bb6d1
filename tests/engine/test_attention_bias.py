"""The attention-bias mechanism (engine/attention_bias.py) and the attention routing (engine/attention.py):
unbiased forwards untouched, the analytic attention weights on hand-built cases, head profiles,
SpotLight's lift, and a steered stream on the engine equal to a full recomputation under the same bias.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from transformers import AttentionInterface

from directer.engine.attention import enable_packed_attention, model_attention
from directer.engine.attention_bias import biased_attention
from directer.errors import UsageError
from directer.methods import make_method
from directer.methods.trial import AttentionBias

from tiny import ARCHS, SPAN, random_prompt, run, tiny_model


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


# -- the wrapper ------------------------------------------------------------------------------------------


def test_the_wrapper_leaves_unbiased_forwards_untouched():
    for attn in ("eager", "sdpa"):
        model = tiny_model("qwen3", attn=attn)
        x = torch.tensor([random_prompt(1, 16)])
        before = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        enable_packed_attention(model)
        assert model.config._attn_implementation == f"directer_{attn}"
        after = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        assert torch.equal(before, after)


def test_flash_attention_is_refused_with_a_message():
    model = tiny_model("llama")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UsageError, match="eager or sdpa"):
        enable_packed_attention(model)


# -- the mechanism against analytic attention weights -------------------------------------------------------


def _attend(bias: AttentionBias, columns, q_len=1, kv=10, heads=4, kv_heads=2, dim=8, query=None, seed=0):
    torch.manual_seed(seed)
    q = torch.zeros(1, heads, q_len, dim) if query is None else query
    k, v = torch.randn(1, kv_heads, kv, dim), torch.randn(1, kv_heads, kv, dim)
    mask = torch.ones(1, 1, q_len, kv, dtype=torch.bool)
    targets, spot, factor = _targets(bias, columns, heads, kv)
    out = biased_attention(q, k, v, mask, dim ** -0.5, None, None, targets, spot, factor)
    # The weights, recovered from the output: values set to the identity give them back.
    eye = torch.eye(kv)[None, None].expand(1, kv_heads, kv, kv)
    weights = biased_attention(q, k, eye, mask, dim ** -0.5, None, None, targets, spot, factor).transpose(1, 2)
    return out, weights, v


def _targets(bias: AttentionBias, columns, heads: int, kv: int):
    """One row's [1, H, 1, kv] target mask (its bias on layer 0), kind and factor."""
    targets = torch.zeros(1, heads, 1, kv, dtype=torch.bool)
    chosen = range(heads) if bias.heads is None else bias.heads.get(0, ())
    for h in chosen:
        targets[0, h, 0, list(columns)] = True
    return targets, torch.tensor([bias.kind == "spotlight"]), torch.tensor([bias.factor])


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


def _biased_model(model, bias: AttentionBias, layers, columns):
    """The model with every query of every forward biased (a full recomputation, no cache)."""
    def attention(module, query, key, value, attention_mask, **kwargs):
        if module.layer_idx not in layers:
            return model_attention(module, "eager")(module, query, key, value, attention_mask, **kwargs)
        targets, spot, factor = _targets(bias, columns, query.shape[1], key.shape[-2])
        heads = bias.heads.get(module.layer_idx, ()) if bias.heads is not None else range(query.shape[1])
        targets[:, [h for h in range(query.shape[1]) if h not in heads]] = False
        scaling = kwargs.get("scaling") or module.head_dim ** -0.5
        return biased_attention(query, key, value, attention_mask, scaling, kwargs.get("softcap"),
                                kwargs.get("sliding_window"), targets, spot, factor), None

    AttentionInterface.register("test_biased", attention)
    model.set_attn_implementation("test_biased")
    return model


@pytest.mark.parametrize("method", ["pasta", "instaboost"])
def test_stream_equals_a_full_recomputation_under_the_bias(model, method):
    """The steered stream on the engine (biased prefill + cached steps in its slot) picks the tokens a
    single uncached forward over prompt + generated tokens, biased at every position, would pick."""
    p = random_prompt(7, 24)
    spec = {"pasta": "pasta:alpha_p=0.001", "instaboost": "instaboost:m=50"}[method]
    out = run(model, [p], spec, new=16)[0]
    trial = make_method(spec).schedule(None, model.config.num_hidden_layers)[0]
    seq = p + out.token_ids[:-1]
    cols = SPAN if trial.bias.target == "span" else [i for i in range(len(p)) if i not in SPAN]
    arch = model.config.model_type
    full = _biased_model(tiny_model({"gemma3_text": "gemma3"}.get(arch, arch)), trial.bias, trial.layers, cols)
    x = torch.tensor([seq])
    with torch.no_grad():
        logits = full(input_ids=x).logits[0]
    assert torch.argmax(logits[len(p) - 1:], dim=-1).tolist() == out.token_ids
