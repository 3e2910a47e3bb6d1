"""The inputs of a prefill forward of the continuous engine.

Waiting prompts are left-padded into one batch. When they need a ranking, every prompt is followed by
extra query positions, all the prompt's last token at its position: one probe per layer (steering that
layer alone) and the method's leading trials (those that need no ranking). The extra positions attend
like decode trial rows (:meth:`~directer.engine.packed_attention.PackedPlan._extras`), so the first
token's raw pass, its ranking and its all-layer trial cost one forward; their keys and values are
never kept.
"""

from __future__ import annotations

import torch

from .packed_attention import ExtraRow
from .sequence import Sequence

__all__ = ["left_padded", "ranking_probes"]


def left_padded(batch: list[Sequence], extra: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Token ids, attention mask and position ids ``[B, width + extra]`` and the prompts' width."""
    lengths = [len(s.input_ids) for s in batch]
    width = max(lengths)
    ids = torch.full((len(batch), width + extra), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width + extra), dtype=torch.long)
    for i, s in enumerate(batch):
        ids[i, width - lengths[i]:width] = torch.tensor(s.input_ids)
        ids[i, width:] = s.input_ids[-1]
        mask[i, width - lengths[i]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    positions[:, width:] = torch.tensor(lengths)[:, None] - 1  # extra rows are the last token's queries
    return ids, mask, positions, width


def ranking_probes(seq: Sequence, num_layers: int, origin: int) -> list[ExtraRow]:
    """The ranking probes of a prompt: probe l steers layer l alone, on its last token."""
    cols = seq.columns(origin)
    return [ExtraRow(frozenset([layer]), seq.settings.alpha, cols) for layer in range(num_layers)]
