"""PASTA (methods/pasta.py): head profiles are checked against the model and steer only their layers."""

from __future__ import annotations

import math

import pytest

from directer.engine.continuous import Engine
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.errors import UsageError
from directer.methods import make_method

from tiny import tiny_model


def test_head_profile_is_checked_against_the_model(tmp_path):
    profile = tmp_path / "heads.json"
    profile.write_text('{"heads": [[0, 1], [2, 9]]}')
    meth = make_method(f"pasta:profile={profile}")
    with pytest.raises(UsageError, match="does not fit"):
        Engine(tiny_model("llama")).submit(DecodeRequest(list(range(3, 20)), [4, 5]), SequenceSettings(meth))
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
