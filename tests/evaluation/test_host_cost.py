"""What directer.evaluation.host_cost counts: ops, the kernels among them, synchronisations, copies."""

from __future__ import annotations

import torch

from directer.evaluation.host_cost import count_host_cost


def test_kernels_leave_out_views_allocations_and_ops_that_return_their_input():
    x = torch.randn(4, 4)
    with torch.inference_mode(), count_host_cost() as cost:
        x.view(16), x.t(), x[1:], x.float(), x.reshape(16), torch.empty(3)  # no device work
        x.to(torch.float64), x.t().reshape(16), x + 1  # a conversion, a copying reshape, an add
    assert cost.ops == 10 and cost.kernels == 3, dict(cost.by_op)
    assert cost.syncs == 0


def test_syncs_and_host_copies_are_counted():
    x = torch.randn(5)
    with torch.inference_mode(), count_host_cost() as cost:
        float(x.sum()), x.tolist(), x[x > 0], torch.tensor([1, 2, 3])
        x[0] = 1.0  # a Python scalar: no copy
    assert cost.syncs == 3 and cost.copies == 1, dict(cost.sync_ops)
    assert cost.per(3)["kernels"] == cost.kernels / 3
