"""SteeringConfig (config.py): validation and the mode-dependent defaults."""

from __future__ import annotations

import pytest

from directer.config import SteeringConfig
from directer.errors import UsageError


@pytest.mark.parametrize("kw, word", [
    ({"alpha": 0}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"alpha": float("inf")}, "alpha"),
    ({"beta": -0.5}, "beta"), ({"mode": "fast"}, "mode"), ({"method": "pasta2"}, "method"),
    ({"max_new_tokens": 0}, "--max-new-tokens"), ({"trial_batching": "some"}, "trial_batching"),
    ({"speculate": "maybe"}, "speculate"), ({"probe_batch_size": 0}, "probe_batch_size"),
])
def test_invalid_configuration(kw, word):
    with pytest.raises(UsageError, match=word):
        SteeringConfig(**kw)


def test_reference_mode_defaults_to_one_at_a_time_evaluation():
    assert SteeringConfig(mode="reference").effective_trial_batching == "sequential"
    assert SteeringConfig(mode="reference").effective_probe_batch_size == 1
    assert SteeringConfig().effective_trial_batching == "all"


@pytest.mark.parametrize("kw, words", [
    ({"beta": 2.0}, "beta 2 > 1: no steered token"), ({"beta": 0.0}, "beta 0: the plausibility check accepts every"),
    ({"beta": 0.0, "method": "pasta:filter=1"}, "beta 0"),
])
def test_degenerate_betas_warn_what_they_do(kw, words):
    with pytest.warns(UserWarning, match=words):
        SteeringConfig(**kw)


@pytest.mark.parametrize("kw", [{"beta": 2.0, "method": "pasta"}, {"beta": 0.0, "method": "none"}, {"beta": 0.5}])
def test_beta_warns_only_where_it_decides_something(kw, recwarn):
    SteeringConfig(**kw)  # pasta without the filter and none never check Eq. 2
    assert not [w for w in recwarn if "beta" in str(w.message)]
