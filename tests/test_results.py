"""Result records (results.py): the JSON round trip of a ranking and its errors."""

from __future__ import annotations

import json

import pytest

from directer.errors import DirecterError, UsageError
from directer.results import Ranking


def test_ranking_json_round_trip_and_errors(tmp_path):
    r = Ranking(order=[2, 0, 1], scores=[0.3, 0.2, 0.1], mode="paper", model="m")
    path = tmp_path / "r.json"
    r.save(path)
    assert Ranking.load(path, num_layers=3) == r
    with pytest.raises(UsageError, match="has 3 layers but the model has 4"):
        Ranking.load(path, num_layers=4)
    path.write_text(json.dumps({"order": [0, 0, 1]}))
    with pytest.raises(DirecterError, match="permutation"):
        Ranking.load(path)
    path.write_text("[")
    with pytest.raises(DirecterError, match="corrupt"):
        Ranking.load(path)
    with pytest.raises(UsageError, match="not found"):
        Ranking.load(tmp_path / "missing.json")
