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

from ..methods.trial import AttentionBias, Trial
from .extra_rows import ExtraGroup, ExtraRow
from .sequence import Sequence

__all__ = ["bias_targets", "first_step_trials", "left_padded", "prefill_group", "ranking_probes", "trial_row"]


def left_padded(prompts: list[list[int]], extra: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Token ids, attention mask and position ids ``[B, width + extra]`` and the prompts' width."""
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    ids = torch.full((len(prompts), width + extra), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width + extra), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - lengths[i]:width] = torch.tensor(p)
        ids[i, width:] = p[-1]
        mask[i, width - lengths[i]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    positions[:, width:] = torch.tensor(lengths)[:, None] - 1  # extra rows are the last token's queries
    return ids, mask, positions, width


def ranking_probes(seq: Sequence, num_layers: int) -> list[ExtraRow]:
    """The ranking probes of a prompt: probe l steers layer l alone, on its last token."""
    cols = seq.positions  # a token's column is its position (one list: every row of the sequence shares it)
    alpha = seq.settings.method.alpha  # a policy that ranks layers scales keys: its alpha
    return [ExtraRow(frozenset([layer]), alpha, cols) for layer in range(num_layers)]


def trial_row(seq: Sequence, trial: Trial) -> ExtraRow:
    """A trial of ``seq`` as an extra row: its layers and alpha, the sequence's steered columns."""
    return ExtraRow(trial.layers, trial.alpha, seq.positions)


def prefill_group(seq: Sequence, b: int, extra: int, num_layers: int) -> ExtraGroup:
    """Prompt ``b``'s extra query positions: probe l steers layer l alone, then the leading trials;
    they see the prompt's columns before its last token, and their own key."""
    rows = ranking_probes(seq, num_layers) + [trial_row(seq, t) for t in seq.leading]
    last = len(seq.input_ids) - 1
    return ExtraGroup(seq.slot, list(range(b * extra, (b + 1) * extra)), last, last, rows)


def first_step_trials(batch: list[Sequence], first_row: dict[int, int], logits: torch.Tensor,
                      lead: int) -> list[tuple[Sequence, int, torch.Tensor, int]]:
    """Step 0's trials in a prefill's logits ``[rows, 1 + lead, V]``: ``(sequence, k, logits, raw row)``
    for the leading trials' rows, or a stream's biased row (the sequence's last), each judged against
    the raw row of its prompt."""
    rows: list[tuple[Sequence, int, torch.Tensor, int]] = []
    for s in batch:
        i = first_row[id(s)]
        if s.streamed:
            rows.append((s, 0, logits[i + len(s.stream_rows()) - 1, 0], i))
        else:
            rows += [(s, k, logits[i, 1 + k], i) for k in range(lead)]
    return rows


def bias_targets(seq: Sequence, bias: AttentionBias) -> torch.Tensor:
    """Columns an attention bias targets in a prompt: its steered positions ("span"), or every
    other prompt position ("outside", PASTA's)."""
    steered = set(seq.positions)
    if bias.target == "span":
        targets = sorted(steered)
    else:
        targets = [p for p in range(len(seq.input_ids)) if p not in steered]
    return torch.tensor(targets, dtype=torch.long)
