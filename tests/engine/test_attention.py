"""How the engine reaches the model's attention (engine/attention.py): the SDPA backends it pins."""

from __future__ import annotations

import torch

from directer.engine.attention import pinned_backends


def test_decode_forwards_pin_memory_efficient_attention_on_cuda_only():
    flags = (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled,
             torch.backends.cuda.math_sdp_enabled, torch.backends.cuda.cudnn_sdp_enabled)
    before = [f() for f in flags]
    with pinned_backends(torch.device("cuda")):  # sets torch's backend flags; needs no GPU to check
        assert [f() for f in flags] == [False, True, True, False]
    assert [f() for f in flags] == before
    with pinned_backends(torch.device("cpu")):
        assert [f() for f in flags] == before
