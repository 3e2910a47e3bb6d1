"""How the engine's forwards reach the model's attention layers.

Every forward of the engine carries a :class:`~directer.engine.packed_attention.PackedPlan` as a keyword
argument of the model call (``directer_packed``); transformers hands it to the attention function of
every layer. The attention functions registered here wrap the model's own implementation (eager or
sdpa): a call with a plan is handed to the plan, a call without one runs the model's own attention
unchanged, so a model routed through us computes ordinary forwards bit for bit as before. No global
state: concurrent forwards each carry their own plan.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..errors import UsageError

__all__ = ["PACKED_KWARG", "PINNED_BACKENDS", "base_implementation", "enable_packed_attention", "model_attention",
           "pinned_backends"]

PACKED_KWARG = "directer_packed"
_PREFIX = "directer_"
_WRAPPABLE = ("eager", "sdpa")
# A decode forward's attention has a boolean mask and a width that grows by one column a step. On CUDA,
# torch picks an SDPA backend per call from the shapes, so one sequence's rounding could change with the
# cache's width or the batch beside it; the engine pins memory-efficient attention (math where that
# cannot run). The CPU has one masked kernel: nothing to pin.
PINNED_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _wrap(implementation: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        inner = model_attention(module, implementation)
        plan = kwargs.pop(PACKED_KWARG, None)
        if plan is not None:
            return plan.attend(module, query, key, value, attention_mask, inner, **kwargs)
        return inner(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"{_PREFIX}{implementation}_attention"
    return attention


def model_attention(module: torch.nn.Module, implementation: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The model's own attention function of ``implementation`` for this attention module."""
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


def enable_packed_attention(model: torch.nn.Module) -> None:
    """Route the model's attention through our wrapper (idempotent; forwards without a plan unchanged)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    current = getattr(config, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    if current and current.startswith(_PREFIX):
        return
    if current not in _WRAPPABLE:
        raise UsageError(
            f"the engine needs eager or sdpa attention, the model uses {current!r}: "
            "load it with --attn-implementation sdpa (or eager)"
        )
    model.set_attn_implementation(_PREFIX + current)


def base_implementation(name: str | None) -> str | None:
    """The implementation a (possibly wrapped) attention implementation name stands for."""
    return name[len(_PREFIX):] if name and name.startswith(_PREFIX) else name


def pinned_backends(device: torch.device) -> AbstractContextManager:
    """The engine's decode forwards run under this: the SDPA backends pinned on CUDA, nothing elsewhere."""
    return sdpa_kernel(PINNED_BACKENDS) if device.type == "cuda" else nullcontext()
