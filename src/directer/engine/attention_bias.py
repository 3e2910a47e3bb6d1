"""The attention-bias mechanism: additive biases on attention logits, per row, layer and head.

PASTA, InstABoost and SpotLight (docs/method.md §7) steer by adding ``log(factor)`` to the
attention logits of chosen key positions (a multiplier on those attention weights, then
renormalised). In the engine a biased sequence owns a slot whose every row is biased; the bias is
per-slot state (:class:`SlotBias`: factor, kind, heads per layer) and its target columns are marked in
the slot cache, so a forward needs no per-row bookkeeping. :func:`biased_attention` is the explicit
form (logits, mask, bias, float32 softmax, values, as transformers' eager attention computes them),
used wherever a bias cannot ride on an additive attention mask (SpotLight's share, logit soft-capping,
prompt encoding).
"""

from __future__ import annotations

import torch

from ..methods.trial import AttentionBias

__all__ = ["SlotBias", "biased_attention", "causal_visibility"]


def causal_visibility(q_len: int, kv_len: int, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean [q, kv] mask (True = visible) for queries at the last ``q_len`` key positions."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    visible = k_pos <= q_pos
    if sliding_window:
        visible &= k_pos > q_pos - sliding_window
    return visible


def biased_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                     scaling: float, softcap: float | None, sliding_window: int | None,
                     targets: torch.Tensor, spot: torch.Tensor, factor: torch.Tensor,
                     spotlight: bool = True) -> torch.Tensor:
    """Eager attention of biased rows: ``query [R, Hq, q, D]``, ``key``/``value`` ``[R, Hkv, kv, D]``,
    ``targets [R, Hq, 1 or q, kv]`` the biased keys per row and head, ``spot [R]`` whether a row's bias
    is SpotLight's, ``factor [R]`` its factor (float32); ``spotlight=False`` says (from the host, without
    reading ``spot``) that no row is SpotLight's. Returns ``[R, q, Hq, Dv]``."""
    n_rep = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(n_rep, dim=1) if n_rep > 1 else key
    v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    logits = torch.matmul(query, k.transpose(2, 3)) * scaling
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    q_len, kv_len = logits.shape[-2], logits.shape[-1]
    if mask is not None:
        mask = mask[..., :kv_len]
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        else:
            logits = logits + mask
    elif q_len > 1:
        visible = causal_visibility(q_len, kv_len, sliding_window, logits.device)
        logits = logits.masked_fill(~visible, torch.finfo(logits.dtype).min)
    spot4 = spot[:, None, None, None]
    factor4 = factor[:, None, None, None]
    # Constant biases: log(factor) on the target keys.
    add = torch.where(spot4, torch.zeros_like(factor4), factor4.log())  # SpotLight's factor is a share, not a bias
    logits = logits + (targets & ~spot4).to(logits.dtype) * add.to(logits.dtype)
    if spotlight:  # lift the targets' attention share to the target where it falls short
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        spot_targets = targets & spot4
        share = (probs * spot_targets).sum(-1, keepdim=True)  # [R, H, q, 1]
        short = spot4 & (share < factor4) & spot_targets.any(-1, keepdim=True)
        lift = torch.log(factor4 / share.clamp_min(torch.finfo(torch.float32).tiny))
        logits = logits + torch.where(short & spot_targets, lift, torch.zeros_like(lift)).to(logits.dtype)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, v).transpose(1, 2).contiguous()


class SlotBias:
    """The attention bias of every slot of the engine's cache (a slot without one: no layer biased).

    Device tensors ``factor [slots]`` (float32), ``spot [slots]`` (SpotLight's kind) and
    ``heads [slots, layers, heads]`` (where the bias applies), set when a biased sequence takes a slot
    and cleared when it leaves; the host keeps which layers any slot biases, so a forward knows
    without reading the device which layers need the biased path.
    """

    def __init__(self, slots: int, num_layers: int, num_heads: int, device: torch.device):
        self.num_layers, self.num_heads = num_layers, num_heads
        self.factor = torch.ones(slots, dtype=torch.float32, device=device)
        self.spot = torch.zeros(slots, dtype=torch.bool, device=device)
        self.heads = torch.zeros(slots, num_layers, num_heads, dtype=torch.bool, device=device)
        self._slots: dict[int, tuple[frozenset[int], bool, bool]] = {}  # slot -> (layers, SpotLight, every head)

    def set(self, slot: int, bias: AttentionBias, layers: frozenset[int]) -> None:
        def chosen(layer: int) -> set[int]:
            if layer not in layers:
                return set()
            return set(range(self.num_heads)) if bias.heads is None else set(bias.heads.get(layer, ()))

        # built on the host, one copy to the device
        rows = [chosen(layer) for layer in range(self.num_layers)]
        self.heads[slot] = torch.tensor([[h in row for h in range(self.num_heads)] for row in rows],
                                        dtype=torch.bool, device=self.heads.device)
        self.factor[slot] = float(bias.factor)
        self.spot[slot] = bias.kind == "spotlight"
        biased = frozenset(layer for layer in layers if bias.heads is None or bias.heads.get(layer))
        self._slots[slot] = (biased, bias.kind == "spotlight", bias.heads is None)

    def clear(self, slot: int) -> None:
        if self._slots.pop(slot, None) is not None:
            self.heads[slot] = False

    def biased(self, layer: int, slots: list[int] | None = None) -> list[int]:
        """The slots (of ``slots``, default all) whose bias applies in ``layer``."""
        chosen = self._slots if slots is None else [s for s in slots if s in self._slots]
        return [s for s in chosen if layer in self._slots[s][0]]

    def spotlight(self, slot: int) -> bool:
        return self._slots[slot][1]

    def every_head(self, slots: list[int]) -> bool:
        """Whether these slots bias every head of their layers (no head profile): then a layer's bias is
        the same in every layer that biases the same slots."""
        return all(self._slots[s][2] for s in slots)
