"""The slot cache (engine/slot_cache.py): growth never holds two copies of the whole cache, and every slot
holds its sequence's tokens from column 0, a left-padded prompt's included."""

from __future__ import annotations

import weakref

import pytest
import torch

from directer.engine.slot_cache import SlotCache


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def test_growth_peaks_at_one_layer_above_the_cache(monkeypatch):
    layers = 16
    cache = SlotCache(layers, 4, torch.device("cpu"))
    cache.place(torch.arange(4), [40] * 4)
    targets = SlotCache.prompt_targets(torch.arange(4), torch.zeros(4, dtype=torch.long), 40, 2)
    for layer in range(layers):
        k = torch.randn(4, 2, 40, 8)
        cache.write_rows(layer, targets, k, k)
    before = [t.clone() for t in cache.keys]
    # the cache's buffers (slots and scratch row), then every new one
    alive = [weakref.ref(t) for t in cache.key_store + cache.value_store]
    peaks = []
    new_zeros = torch.Tensor.new_zeros

    def counted(self, *size, **kw):  # what is alive when each new layer is allocated, the new one included
        out = new_zeros(self, *size, **kw)
        alive.append(weakref.ref(out))
        peaks.append(_bytes(r() for r in alive))
        return out

    monkeypatch.setattr(torch.Tensor, "new_zeros", counted)
    cache.reserve(cache.capacity + 1)  # forces a reallocation of every layer
    monkeypatch.undo()
    final = _bytes(cache.key_store + cache.value_store)
    assert len(peaks) == 2 * layers
    assert max(peaks) <= 1.1 * final, (max(peaks), final)
    for layer in range(layers):  # and the data moved intact
        torch.testing.assert_close(cache.keys[layer][:, :, :40], before[layer][:, :, :40])


def test_prompts_and_decode_columns_land_at_their_positions():
    cache = SlotCache(1, 3, torch.device("cpu"))
    slots, lengths = [2, 0], [5, 3]  # prompt 1 is left-padded by two
    cache.place(torch.tensor(slots), lengths)
    k = torch.arange(2 * 1 * 5 * 2, dtype=torch.float32).view(2, 1, 5, 2)
    cache.write_rows(0, SlotCache.prompt_targets(torch.tensor(slots), torch.tensor([0, 2]), 5, 1), k, -k)
    torch.testing.assert_close(cache.keys[0][2, :, :5], k[0])
    torch.testing.assert_close(cache.keys[0][0, :, :3], k[1, :, 2:])  # its tokens from column 0
    torch.testing.assert_close(cache.values[0][0, :, :3], -k[1, :, 2:])
    assert cache.valid[:, :6].tolist() == [[True] * 3 + [False] * 3, [False] * 6, [True] * 5 + [False]]
    # a decode forward: slot 0 at position 3, slot 2 waits (no hole: its next column is still 5)
    cache.open_columns(torch.tensor([0]), torch.tensor([3]))
    new = torch.full((1, 1, 1, 2), 7.0)
    cache.write_rows(0, SlotCache.row_targets(torch.tensor([0]), torch.tensor([3]), 1), new, new)
    assert cache.valid[0, :5].tolist() == [True] * 4 + [False]
    torch.testing.assert_close(cache.keys[0][0, :, 3], new[0, :, 0])
    torch.testing.assert_close(cache.keys[0][2, :, :5], k[0])  # untouched
    cache.free(0)
    cache.place(torch.tensor([0]), [2])  # the next sequence starts at column 0 again
    assert cache.valid[0, :4].tolist() == [True, True, False, False]


def test_a_limited_cache_never_grows_past_its_limit():
    cache = SlotCache(1, 2, torch.device("cpu"), limit=300)
    cache.place(torch.tensor([0]), [100])
    assert cache.capacity == 300  # 100 + the spare columns, held to the limit
    cache.reserve(300)
    with pytest.raises(RuntimeError, match="over its limit"):
        cache.reserve(301)
