"""The slot cache's growth (engine/slot_cache.py) never holds two copies of the whole cache."""

from __future__ import annotations

import weakref

import torch

from directer.engine.slot_cache import SlotCache


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def test_growth_peaks_at_one_layer_above_the_cache(monkeypatch):
    layers = 16
    cache = SlotCache(layers, 4, torch.device("cpu"))
    start = cache.place(torch.arange(4), [40] * 4)
    for layer in range(layers):
        k = torch.randn(4, 2, 40, 8)
        cache.write(layer, torch.arange(4), start, k, k)
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
        torch.testing.assert_close(cache.keys[layer][:, :, :cache.width], before[layer][:, :, :cache.width])
