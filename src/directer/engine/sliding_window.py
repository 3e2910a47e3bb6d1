"""Absolute cache columns and the slots of sliding-window layers.

Steered positions are absolute prompt columns (left padding included). A sliding-window layer
(Gemma3, Mistral) keeps only its last ``window`` slots once the window is full, so both mechanisms
map an absolute column to the slot the layer still holds, and leave evicted columns alone.
"""

from __future__ import annotations

from typing import Any, Sequence

from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

__all__ = ["column_offset", "evicted_layers"]


def column_offset(layer: Any) -> int:
    """Absolute column of the first slot a cache layer holds (non-zero once a sliding window is full)."""
    if isinstance(layer, DynamicSlidingWindowLayer):
        return layer.cumulative_length - layer.keys.shape[-2]
    return 0


def evicted_layers(cache: DynamicCache, row_columns: Sequence[int]) -> list[int]:
    """Layers whose sliding window no longer holds some of the given absolute columns."""
    if not row_columns:
        return []
    first = min(row_columns)
    return [i for i, layer in enumerate(cache.layers) if column_offset(layer) > first]
