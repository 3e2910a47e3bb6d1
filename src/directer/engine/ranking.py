"""What the layer ranking observes (docs/method.md §5).

Once per prompt, on the last prompt token, each layer is steered alone and the attention sub-layer of
every layer is observed: its input (after the input norm) and its output (after ``o_proj``, before the
residual add). This module holds the capture hooks; the policy scores what they captured
(:meth:`directer.methods.base.Method.rank_layers`, :mod:`directer.methods.sensitivity`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["AttentionRecorder"]


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
