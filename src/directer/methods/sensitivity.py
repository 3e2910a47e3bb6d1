"""Layer sensitivity scores (docs/method.md §5, Eq. 3-4) and the released code's variant.

Pure functions of the attention states the engine records on the last prompt token: ``pre``/``post``
``[L, H]`` are every layer's attention input (after its input norm) and output (after ``o_proj``) in
the raw pass, ``pre_s``/``post_s`` ``[L_probed, L, H]`` the same with only the probed layer steered.
A policy turns them into its :class:`~directer.results.Ranking` (:meth:`Method.rank_layers`). Torch is
imported inside the functions: the policies load without it (the command line starts fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..results import Ranking

if TYPE_CHECKING:
    import torch

__all__ = ["paper_scores", "rank_from_scores", "reference_scores"]


def _cosine_distance(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    import torch.nn.functional as F

    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def paper_scores(pre, post, pre_s, post_s) -> "torch.Tensor":
    """Sensitivity of each probed layer, Eq. 3-4: the mean over measured layers j of the direct plus
    the propagation effect, each relative to the raw distance. Returns [L_probed]."""
    pre, post, pre_s, post_s = (t.float() for t in (pre, post, pre_s, post_s))
    base = _cosine_distance(pre, post)  # [L_measured]
    direct = _cosine_distance(pre.unsqueeze(0), post_s) - base
    propagation = _cosine_distance(pre_s, post.unsqueeze(0)) - base
    return (direct + propagation).mean(dim=1)


def reference_scores(pre, post, pre_s, post_s) -> "torch.Tensor":
    """The released code's variant: per measured layer j, the mean over probes of
    max(0, d(pre_j, post_s_lj) + d(post_j, pre_s_lj)), no baseline subtraction. Returns [L_measured]."""
    pre, post, pre_s, post_s = (t.float() for t in (pre, post, pre_s, post_s))
    m = _cosine_distance(pre.unsqueeze(0), post_s) + _cosine_distance(post.unsqueeze(0), pre_s)
    return m.clamp_min(0.0).mean(dim=0)


def rank_from_scores(scores: "torch.Tensor", mode: str, model: str | None = None) -> Ranking:
    """Sort layers by score, most sensitive first (ties keep layer order)."""
    import torch

    order = scores.argsort(descending=True, stable=True)
    both = torch.stack([order.double(), scores.index_select(0, order).double()]).tolist()  # one device read
    return Ranking(order=[int(i) for i in both[0]], scores=both[1], mode=mode, model=model)
