"""Property tests shared by the baselines of docs/method.md §7 (methods/pasta.py, spotlight.py,
instaboost.py, static.py) on tiny random models (float32, eager): zero strength equals plain greedy
decoding, a strong bias changes the output, a batch equals its prompts one at a time.
"""

from __future__ import annotations

import pytest

from tiny import ARCHS, NEW, greedy, prompts, run, tiny_model, tokens

BIAS_METHODS = ("pasta", "spotlight", "instaboost")
ZERO = {"pasta": "pasta:alpha_p=1", "spotlight": "spotlight:target=0", "instaboost": "instaboost:m=1",
        "static": "static:alpha=1"}
STRONG = {"pasta": "pasta:alpha_p=0.0001", "spotlight": "spotlight:target=0.9", "instaboost": "instaboost:m=1000",
          "static": "static"}


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


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


@pytest.mark.parametrize("method", BIAS_METHODS + ("static",))
@pytest.mark.parametrize("filt", [False, True])
def test_batch_equals_one_at_a_time(model, method, filt):
    limits = [NEW, 4, 7]  # rows leave the batch at different steps
    one = run(model, prompts(), STRONG[method], batch=False, filt=filt, limits=limits)
    many = run(model, prompts(), STRONG[method], filt=filt, limits=limits)
    assert tokens(one) == tokens(many)
    assert [o.trace for o in one] == [o.trace for o in many]
