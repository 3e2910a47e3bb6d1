"""The forward cost model and the speculation rule it serves (engine/cost_model.py)."""

from __future__ import annotations

import pytest

from directer.engine.cost_model import DEFAULTS, CostModel
from directer.engine.sequence import Sequence, SequenceSettings
from directer.methods import make_method
from directer.results import TokenTrace


def test_it_fits_fixed_and_per_row_costs_from_forwards():
    cost = CostModel("cpu")
    assert cost.fit() is None  # nothing timed yet
    for rows in [1, 4, 8, 16, 2, 6, 12, 3, 9, 5]:
        cost.observe(rows, 0.05 + 0.002 * rows)
    assert cost.fit() == pytest.approx((0.05, 0.002))
    # the fit is reported, never used: the table's costs decide, so every process decides alike
    assert (cost.fixed, cost.per_row) == DEFAULTS["cpu"]


def test_rows_that_cost_nothing_measurable_are_free():
    cost = CostModel("cuda")
    for rows, noise in zip([1, 8, 16, 32] * 3, [0.001, -0.001, 0.0005, -0.002] * 3):
        cost.observe(rows, 0.02 + noise)  # a weight-bound GPU: about the same time whatever the rows
    fixed, per_row = cost.fit()
    assert per_row == 0.0 and fixed == pytest.approx(0.02, abs=0.002)


def test_the_same_rows_every_time_fit_nothing():
    cost = CostModel("cpu")
    for _ in range(20):
        cost.observe(16, 0.3)
    assert cost.fit() is None


def test_given_costs_replace_the_table():
    assert (CostModel("cpu", costs=(0.015, 0.0)).fixed, CostModel("cpu", costs=(0.015, 0.0)).per_row) == (0.015, 0.0)
    assert (CostModel("mps").fixed, CostModel("mps").per_row) == DEFAULTS["cuda"]  # another accelerator: a GPU's


def test_speculation_pays_when_the_gate_likely_opens_and_rows_are_cheap():
    cpu, gpu = CostModel("cpu"), CostModel("cuda")
    # On this CPU's costs: worth it for one sequence whose gate opens half the time, not in a batch of 16.
    assert cpu.speculation_pays(0.5, sequences=1, rows=5)
    assert not cpu.speculation_pays(0.5, sequences=16, rows=5)
    # On a GPU's (rows nearly free) it pays in a batch of 16 too, and never for a gate that never opens.
    assert gpu.speculation_pays(0.5, sequences=16, rows=5)
    assert not gpu.speculation_pays(0.0, sequences=1, rows=5)
    # The break-even: p / (1 - p) = sequences * rows * per_row / fixed.
    cost = CostModel("cpu", costs=(0.1, 0.01))
    assert cost.speculation_pays(0.51, 2, 5) and not cost.speculation_pays(0.49, 2, 5)


def _sequence() -> Sequence:
    return Sequence(0, [1, 2, 3], [1], SequenceSettings(make_method("directer")), None, 0)


def test_a_sequences_open_chance_follows_its_own_runs():
    seq = Sequence(0, [1, 2, 3], [1], SequenceSettings(make_method("directer")), None, 0)
    assert seq.open_chance() == 0.5  # nothing known yet
    shut, opened = TokenTrace(skipped=True, trials=0, layers=None), TokenTrace(skipped=False, trials=1, layers=4)
    for trace in [shut, shut, shut, opened, opened, opened, shut]:
        seq.add_trace(trace)
    # after a shut step: shut, shut, open (1 of 3 opened); after an open step: open, open, shut (2 of 3)
    assert seq.open_chance() == pytest.approx((1 + 1) / (3 + 2))
    seq.add_trace(opened)
    assert seq.open_chance() == pytest.approx((2 + 1) / (3 + 2))
