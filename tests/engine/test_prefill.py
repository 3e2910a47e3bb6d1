"""Prefill inputs of the continuous engine (engine/prefill.py): left padding and the extra query
positions that carry a prompt's probes and leading trials."""

from __future__ import annotations

import torch

from directer.engine.prefill import left_padded, ranking_probes
from directer.engine.sequence import Sequence, SequenceSettings
from directer.methods import make_method


def _seq(ids: list[int], positions: list[int]) -> Sequence:
    return Sequence(0, ids, positions, SequenceSettings(make_method("directer", alpha=7.0)), None, 0)


def test_left_padded_puts_extra_positions_at_the_last_token():
    a, b = _seq([5, 6, 7, 8], [1, 2]), _seq([9, 10], [0])
    ids, mask, pos, width = left_padded([a.input_ids, b.input_ids], 3, pad_token_id=0)
    assert width == 4
    assert ids.tolist() == [[5, 6, 7, 8, 8, 8, 8], [0, 0, 9, 10, 10, 10, 10]]
    assert mask.tolist() == [[1] * 7, [0, 0, 1, 1, 1, 1, 1]]
    assert pos.tolist() == [[0, 1, 2, 3, 3, 3, 3], [0, 0, 0, 1, 1, 1, 1]]


def test_without_extra_positions_it_is_a_plain_left_padded_batch():
    ids, mask, pos, width = left_padded([[5, 6, 7], [9]], 0, pad_token_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 9]] and width == 3
    assert pos[1].tolist() == [0, 0, 0]


def test_ranking_probes_steer_one_layer_each_at_the_instruction_columns():
    s = _seq([5, 6, 7, 8], [1, 2])
    rows = ranking_probes(s, 3)
    assert [r.layers for r in rows] == [frozenset({0}), frozenset({1}), frozenset({2})]
    assert all(r.alpha == 7.0 and list(r.columns) == [1, 2] for r in rows)  # a column is a position
