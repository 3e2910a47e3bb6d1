"""The attention-bias mechanism: additive biases on attention logits, per row, layer and head.

PASTA, InstABoost and SpotLight (method.md §7) steer by adding ``log(factor)`` to the attention
logits of chosen key positions (a multiplier on those attention weights, then renormalised). The
bias of a forward pass travels as a keyword argument of the model call (``directer_bias``), which
transformers hands to the attention function of every layer; no global state, so batches and
concurrent calls each carry their own. The attention function we register wraps the model's own
implementation (eager or sdpa) and calls it unchanged for every row without a bias in that layer,
so unsteered rows are computed bit for bit as before; only biased rows take the explicit path
below (logits, mask, bias, float32 softmax, values), which matches transformers' eager attention.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from ..errors import UsageError
from ..methods.trial import AttentionBias
from .sliding_window import column_offset

__all__ = ["BIAS_KWARG", "BiasPlan", "RowBias", "base_implementation", "enable_attention_bias"]

BIAS_KWARG = "directer_bias"
PACKED_KWARG = "directer_packed"  # read by engine/packed_attention.py, which owns the plan
_PREFIX = "directer_"
_WRAPPABLE = ("eager", "sdpa")


@dataclass
class RowBias:
    """One row of a forward pass: its bias, the layers it applies to and the absolute key columns."""

    row: int
    bias: AttentionBias
    layers: frozenset[int]
    columns: torch.Tensor  # 1-D long, absolute cache columns (left padding included)


class BiasPlan:
    """The biases of one forward pass; handed to every attention layer through the model call."""

    def __init__(self, rows: list[RowBias], cache: Any = None):
        self.rows = [r for r in rows if r.layers and r.columns.numel()]
        self.cache = cache  # the persistent cache (to map columns on sliding-window layers)
        self._memo: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def rows_in(self, layer_idx: int) -> list[RowBias]:
        return [r for r in self.rows if layer_idx in r.layers]

    def targets(self, layer_idx: int, rows: list[RowBias], heads: int, kv_len: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows' target masks in this layer (see :func:`_targets`), built once per forward for all
        layers that see the same biased keys (same rows, same heads, same cache slots)."""
        offset = self.offset(layer_idx)
        layer_heads = tuple(None if r.bias.heads is None else r.bias.heads.get(layer_idx, ()) for r in rows)
        k = (tuple(r.row for r in rows), layer_heads, offset, kv_len, str(device))
        if k not in self._memo:
            self._memo[k] = _targets(rows, layer_idx, heads, kv_len, offset, device)
        return self._memo[k]

    def offset(self, layer_idx: int) -> int:
        if self.cache is None or layer_idx >= len(getattr(self.cache, "layers", [])):
            return 0
        layer = self.cache.layers[layer_idx]
        return column_offset(layer) if getattr(layer, "keys", None) is not None and layer.keys.numel() else 0


def _causal(q_len: int, kv_len: int, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean [q, kv] mask (True = visible) for queries at the last ``q_len`` key positions."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    visible = k_pos <= q_pos
    if sliding_window:
        visible &= k_pos > q_pos - sliding_window
    return visible


def _biased_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      mask: torch.Tensor | None, scaling: float | None, softcap: float | None,
                      sliding_window: int | None,
                      targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with biases; inputs are the biased rows only, ``targets`` their :func:`_targets`.

    Returns the attention output [R, q, H, D] and the attention weights [R, H, q, kv]."""
    n_rep = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(n_rep, dim=1) if n_rep > 1 else key
    v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    scaling = module.head_dim ** -0.5 if scaling is None else scaling
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
        visible = _causal(q_len, kv_len, sliding_window, logits.device)
        logits = logits.masked_fill(~visible, torch.finfo(logits.dtype).min)

    targets, spot, factor = targets
    if not bool(spot.all()):  # constant biases: log(factor) on the target keys
        add = torch.where(spot, torch.zeros_like(factor), factor.log())
        logits = logits + (targets * add[:, None, None, None]).to(logits.dtype)
    if bool(spot.any()):  # SpotLight: lift the target share to the target where it falls short
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        share = (probs * targets).sum(-1, keepdim=True)  # [R, H, q, 1]
        short = spot[:, None, None, None] & (share < factor[:, None, None, None]) & targets.any(-1, keepdim=True)
        lift = torch.log(factor[:, None, None, None] / share.clamp_min(torch.finfo(torch.float32).tiny))
        logits = logits + torch.where(short & targets, lift, torch.zeros_like(lift)).to(logits.dtype)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, v).transpose(1, 2).contiguous(), weights


def _targets(rows: list[RowBias], layer_idx: int, heads: int, kv_len: int, offset: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[R, H, 1, kv] mask of the biased keys per row and head, with each row's kind and factor."""
    targets = torch.zeros(len(rows), heads, 1, kv_len, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        cols = r.columns.to(device) - offset
        cols = cols[(cols >= 0) & (cols < kv_len)]  # evicted from a sliding window: nothing to bias
        hs = range(heads) if r.bias.heads is None else r.bias.heads.get(layer_idx, ())
        if len(hs) and cols.numel():
            targets[i, torch.tensor(list(hs), device=device)[:, None], 0, cols[None, :]] = True
    spot = torch.tensor([r.bias.kind == "spotlight" for r in rows], device=device)
    factor = torch.tensor([r.bias.factor for r in rows], dtype=torch.float32, device=device)
    return targets, spot, factor


def _wrap(implementation: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        plan: BiasPlan | None = kwargs.pop(BIAS_KWARG, None)
        inner = _inner(module, implementation)
        packed = kwargs.pop(PACKED_KWARG, None)
        if packed is not None:  # a packed forward of the continuous engine (engine/packed_attention.py)
            return packed.attend(module, query, key, value, attention_mask, inner, **kwargs)
        rows = plan.rows_in(module.layer_idx) if plan is not None else []
        if not rows:
            return inner(module, query, key, value, attention_mask, **kwargs)
        batch = query.shape[0]
        biased_rows = [r.row for r in rows]
        biased = torch.tensor(biased_rows, device=query.device)
        plain = sorted(set(range(batch)) - set(biased_rows))
        out = torch.empty(batch, query.shape[2], query.shape[1], value.shape[-1], dtype=query.dtype, device=query.device)
        if plain:  # unbiased rows: the model's own attention, untouched
            idx = torch.tensor(plain, device=query.device)
            out[idx] = inner(module, query[idx], key[idx], value[idx], _mask_rows(attention_mask, idx, batch), **kwargs)[0]
        targets = plan.targets(module.layer_idx, rows, query.shape[1], key.shape[-2], query.device)
        out[biased] = _biased_attention(
            module, query[biased], key[biased], value[biased], _mask_rows(attention_mask, biased, batch),
            kwargs.get("scaling"), kwargs.get("softcap"), kwargs.get("sliding_window"), targets,
        )[0]
        return out, None

    attention.__name__ = f"{_PREFIX}{implementation}_attention"
    return attention


def _mask_rows(mask: torch.Tensor | None, idx: torch.Tensor, batch: int) -> torch.Tensor | None:
    """The attention mask of some rows (a mask broadcast over the batch, or none, stays as it is)."""
    return mask.index_select(0, idx) if mask is not None and mask.shape[0] == batch else mask


def _inner(module: torch.nn.Module, implementation: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    if implementation == "eager":
        # Each architecture defines its own eager function next to its attention module.
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise UsageError(f"{type(module).__name__} has no eager attention function to wrap: use --attn-implementation sdpa")
        return fn
    return ALL_ATTENTION_FUNCTIONS[implementation]


for _impl in _WRAPPABLE:
    AttentionInterface.register(_PREFIX + _impl, _wrap(_impl))
AttentionMaskInterface.register(_PREFIX + "eager", eager_mask)
AttentionMaskInterface.register(_PREFIX + "sdpa", sdpa_mask)


def enable_attention_bias(model: torch.nn.Module) -> None:
    """Route the model's attention through the bias-aware wrapper (idempotent; unbiased calls unchanged)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    current = getattr(config, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    if current and current.startswith(_PREFIX):
        return
    if current not in _WRAPPABLE:
        raise UsageError(
            f"attention-bias methods need eager or sdpa attention, the model uses {current!r}: "
            "load it with --attn-implementation sdpa (or eager)"
        )
    model.set_attn_implementation(_PREFIX + current)


def base_implementation(name: str | None) -> str | None:
    """The implementation a (possibly wrapped) attention implementation name stands for."""
    return name[len(_PREFIX):] if name and name.startswith(_PREFIX) else name
