"""Layer sensitivity ranking (method.md §5, Eq. 3-4) and the released code's variant (§6.7).

Once per prompt, on the last prompt token, each layer is steered alone and the attention sub-layer of
every layer is observed: its input (after the input norm) and its output (after ``o_proj``, before the
residual add). The L single-layer probes are independent given the cache, so they run as batched
forwards of up to ``probe_batch_size`` rows. This module holds the scores (pure functions of the
captured states) and the capture hooks; the result, a :class:`~directer.results.Ranking`, is a record
of ``directer.results`` (reusable across prompts as JSON).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from ..results import Ranking

__all__ = ["AttentionRecorder", "paper_scores", "rank_from_scores", "reference_scores", "score_layers"]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def paper_scores(pre: torch.Tensor, post: torch.Tensor, pre_s: torch.Tensor, post_s: torch.Tensor) -> torch.Tensor:
    """Sensitivity of each probed layer, Eq. 3-4.

    ``pre``/``post``: [L_measured, H] raw attention input/output; ``pre_s``/``post_s``:
    [L_probed, L_measured, H] the same with only the probed layer steered. Returns [L_probed]:
    the mean over measured layers j of the direct plus the propagation effect, each relative to the
    raw distance.
    """
    pre, post, pre_s, post_s = (t.float() for t in (pre, post, pre_s, post_s))
    base = cosine_distance(pre, post)  # [L_measured]
    direct = cosine_distance(pre.unsqueeze(0), post_s) - base
    propagation = cosine_distance(pre_s, post.unsqueeze(0)) - base
    return (direct + propagation).mean(dim=1)


def reference_scores(pre: torch.Tensor, post: torch.Tensor, pre_s: torch.Tensor, post_s: torch.Tensor) -> torch.Tensor:
    """The released code's variant (method.md §6.7): per measured layer j, the mean over probes of
    max(0, d(pre_j, post_s_lj) + d(post_j, pre_s_lj)), no baseline subtraction. Returns [L_measured]."""
    pre, post, pre_s, post_s = (t.float() for t in (pre, post, pre_s, post_s))
    m = cosine_distance(pre.unsqueeze(0), post_s) + cosine_distance(post.unsqueeze(0), pre_s)
    return m.clamp_min(0.0).mean(dim=0)


def rank_from_scores(scores: torch.Tensor, mode: str, model: str | None = None) -> Ranking:
    """Sort layers by score, most sensitive first (ties keep layer order)."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    return Ranking(order=order, scores=[float(scores[i]) for i in order], mode=mode, model=model)


def score_layers(mode: str, pre, post, pre_s, post_s) -> torch.Tensor:
    return reference_scores(pre, post, pre_s, post_s) if mode == "reference" else paper_scores(pre, post, pre_s, post_s)


class AttentionRecorder:
    """Forward hooks that record each attention sub-layer's input and output at the last position
    (the last ``tail`` positions: a prompt's last token and the extra query positions after it)."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.modules = modules
        self.pre: list[torch.Tensor | None] = [None] * len(modules)
        self.post: list[torch.Tensor | None] = [None] * len(modules)
        self.tail = 1

    @contextmanager
    def recording(self, tail: int = 1) -> Iterator["AttentionRecorder"]:
        self.tail = tail
        handles = [m.register_forward_hook(self._hook(i), with_kwargs=True) for i, m in enumerate(self.modules)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, i: int):
        def hook(module, args, kwargs, output):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            out = output[0] if isinstance(output, tuple) else output
            self.pre[i] = hidden[:, -self.tail:, :].detach().float()
            self.post[i] = out[:, -self.tail:, :].detach().float()

        return hook

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[rows, L, H] inputs and outputs of the last recorded pass ([rows, tail, L, H] for a tail)."""
        # Under a device map each layer's states are on its device: stacked on the first layer's.
        home = self.pre[0].device
        pre = torch.stack([t.to(home) for t in self.pre], dim=2)
        post = torch.stack([t.to(home) for t in self.post], dim=2)
        return (pre[:, 0], post[:, 0]) if self.tail == 1 else (pre, post)
