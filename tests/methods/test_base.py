"""The plausibility filter of methods/base.py on the baselines: it never emits a token outside the raw
beta-head, and it does let steered tokens through.
"""

from __future__ import annotations

import pytest
import torch

from tiny import ARCHS, greedy, prompts, run, tiny_model

BIAS_METHODS = ("pasta", "spotlight", "instaboost")
STRONG = {"pasta": "pasta:alpha_p=0.0001", "spotlight": "spotlight:target=0.9", "instaboost": "instaboost:m=1000",
          "static": "static"}


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


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
