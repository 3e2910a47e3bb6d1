"""The key/value cache budget: how many columns a slot cache may hold, decided before the first forward.

Every slot has the cache's width in columns, a token's column its position
(:mod:`directer.engine.slot_cache`), so the cache costs ``(slots + 1) x columns x bytes per column`` at
most (one scratch row for a forward's trial rows), and one number bounds it: the columns a sequence may
span, its prompt plus its response. A user gives that number (``cache_tokens``), or a share of the
memory left on each device once the model is loaded (``cache_memory``), or both (the smaller wins). A
request longer than the budget can never run and is refused before decoding; a shorter one always fits
(its slot holds its tokens and nothing else).

Without either setting the cache grows as the sequences need (a layer at a time, never two copies of
the whole cache), which is what a CPU run or a short offline batch wants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.loading import attention_modules
from .devices import execution_device

__all__ = ["CacheBudget", "available_memory", "budget_problem", "cache_budget", "column_bytes"]


@dataclass(frozen=True)
class CacheBudget:
    """Columns one slot may hold (``None``: no limit) and what decided it, for messages."""

    columns: int | None
    reason: str = ""  # e.g. "--cache-tokens 4096" or "--cache-memory 0.9 of 61.2 GiB free on cuda:0"

    def refusal(self, prompt_tokens: int, max_new_tokens: int) -> str | None:
        """One line refusing a request that can never fit, or ``None`` when it fits."""
        if self.columns is None or prompt_tokens + max_new_tokens <= self.columns:
            return None
        return (f"the prompt ({prompt_tokens} tokens) plus --max-new-tokens ({max_new_tokens}) needs "
                f"{prompt_tokens + max_new_tokens} cache columns, but the KV cache budget holds {self.columns} "
                f"({self.reason}): raise --cache-tokens or --cache-memory, shorten the prompt or lower --max-new-tokens")


def column_bytes(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[torch.device, int]:
    """Bytes one cache column of one slot takes on each device (keys and values of its layers there)."""
    config = model.config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dtype = dtype or next(model.parameters()).dtype
    size = dtype.itemsize
    per_device: dict[torch.device, int] = {}
    for module in attention_modules(model):
        device = execution_device(module)
        per_device[device] = per_device.get(device, 0) + 2 * kv_heads * head_dim * size
    return per_device


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now: the CUDA driver's count, the kernel's MemAvailable on a Linux CPU,
    ``None`` where neither is known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def budget_problem(cache_tokens: int | None, cache_memory: float | None) -> str | None:
    """What is wrong with the user's limits, in one line, or ``None``."""
    if cache_tokens is not None and (not isinstance(cache_tokens, int) or cache_tokens < 1):
        return f"invalid cache_tokens {cache_tokens!r}: give a whole number of tokens >= 1, or None"
    if cache_memory is not None and not 0 < cache_memory <= 1:
        return f"invalid cache_memory {cache_memory!r}: give a share of free memory in (0, 1], or None"
    return None


def cache_budget(model: torch.nn.Module, slots: int, cache_tokens: int | None = None,
                 cache_memory: float | None = None) -> CacheBudget:
    """The columns a slot cache of ``slots`` rows may hold under the user's limits."""
    problem = budget_problem(cache_tokens, cache_memory)
    if problem:
        raise ValueError(problem)
    limits: list[tuple[int, str]] = []
    if cache_tokens is not None:
        limits.append((cache_tokens, f"--cache-tokens {cache_tokens}"))
    if cache_memory is not None:
        for device, per_column in column_bytes(model).items():
            free = available_memory(device)
            if free is None:
                continue  # a device whose free memory is unknown (mps, meta) is not limited by it
            columns = int(cache_memory * free) // (per_column * (max(1, slots) + 1))  # + the scratch row
            limits.append((columns, f"--cache-memory {cache_memory:g} of {free / 2**30:.1f} GiB free on {device}, "
                                    f"{slots} slots"))
    if not limits:
        return CacheBudget(None)
    columns, reason = min(limits)
    return CacheBudget(columns, reason)
