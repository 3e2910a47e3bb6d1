"""The static and none policies (methods/static.py, methods/none.py)."""

from __future__ import annotations

import pytest
import torch

from directer.errors import UsageError
from directer.methods import RawStep, Static, make_method


def raw_step(probs: list[float], step: int = 1) -> RawStep:
    p = torch.tensor(probs, dtype=torch.float32)
    logits = p.log()
    return RawStep(step, logits, torch.softmax(logits, -1), torch.softmax(logits, -1).topk(2).values)


def test_static_and_none_policies():
    s = Static(layers=(1, 3))
    assert [t.layers for t in s.schedule(None, 4)] == [frozenset({1, 3})] and s.accept(raw_step([0.9, 0.1]), 1)
    with pytest.raises(UsageError, match="out of range"):
        Static(layers=(7,)).schedule(None, 4)
    n = make_method("none")
    assert not n.steers and n.schedule(None, 4) == []
