"""The ranking scores of docs/method.md §5 (paper) and §6.7 (reference) (methods/sensitivity.py)."""

from __future__ import annotations

import torch

from directer.methods.sensitivity import paper_scores, rank_from_scores, reference_scores


def test_paper_and_reference_rankings_differ_where_they_should():
    # Three layers, cosine geometry built by hand in 2-D. Raw attention input and output are identical
    # (distance 0) at every measured layer j. Probing layer 0 disturbs layer 2 strongly; probing layer 1
    # disturbs every layer moderately; probing layer 2 disturbs nothing. The paper ranks the probed
    # layer with the largest mean effect first (1); the released variant ranks the measured layer that
    # is disturbed most on average (2).
    e = torch.tensor([1.0, 0.0])
    def rot(deg):
        a = torch.tensor(deg * torch.pi / 180)
        return torch.stack([torch.cos(a), torch.sin(a)])
    pre = e.expand(3, 2).clone()
    post = e.expand(3, 2).clone()
    post_s = torch.stack([
        torch.stack([e, e, rot(90)]),          # probe 0: distance 1 at j=2 only
        torch.stack([rot(60), rot(50), rot(60)]),  # probe 1: distance 0.36-0.5 at every j
        torch.stack([e, e, e]),                # probe 2: nothing
    ])
    pre_s = pre.expand(3, 3, 2).clone()
    paper = paper_scores(pre, post, pre_s, post_s)   # per probed layer: mean over j
    ref = reference_scores(pre, post, pre_s, post_s)  # per measured layer: mean over probes
    assert rank_from_scores(paper, "paper").order == [1, 0, 2]
    assert rank_from_scores(ref, "reference").order == [2, 0, 1]
    # The paper subtracts the raw distance; the released variant does not and clamps at 0.
    shifted_post = torch.stack([rot(10)] * 3)
    assert torch.allclose(paper_scores(pre, shifted_post, pre, shifted_post.expand(3, 3, 2)), torch.zeros(3), atol=1e-6)
    assert (reference_scores(pre, shifted_post, pre, shifted_post.expand(3, 3, 2)) > 0).all()
