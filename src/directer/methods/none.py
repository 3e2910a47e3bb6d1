"""``--method none``: plain greedy decoding through the same loop (the baseline every table compares to)."""

from __future__ import annotations

from .base import Method
from .registry import register_method

__all__ = ["NoSteering"]


@register_method("none")
class NoSteering(Method):
    """``--method none``: the same loop with steering off."""
