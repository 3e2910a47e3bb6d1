"""Sliding-window layers (engine/sliding_window.py): steered columns evicted from a window are reported."""

from __future__ import annotations

import pytest

from tiny import ARCHS, random_prompt, run, tiny_model


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def test_sliding_window_eviction_is_reported():
    model = tiny_model("gemma3", sliding_window=6)
    out = run(model, [random_prompt(3, 24)], positions=[[2, 3, 4]], new=3)[0]
    sliding = [i for i in range(4) if i % 2 == 0]
    assert out.stats.evicted_layers == sliding
    out = run(tiny_model("llama"), [random_prompt(3, 24)], positions=[[2, 3, 4]], new=3)[0]
    assert out.stats.evicted_layers == []
