"""Where a module computes: its own device, or, under a device map, the execution device accelerate's
hook gives it (an offloaded module's weights sit on ``meta`` until its forward brings them in).

The engine makes the tensors it feeds a module (input ids, positions) on that module's device, and
every tensor it combines with a layer's keys on the device of those keys, so one code path serves a
model on one device and a model spread over several.
"""

from __future__ import annotations

import torch

__all__ = ["execution_device", "input_device"]


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's execution device, else that of its first
    parameter (or buffer) that is not on ``meta``; the CPU for a module that has neither."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device)  # accelerate may give an accelerator index as an int
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def input_device(model: torch.nn.Module) -> torch.device:
    """The device the model's input ids go to: its input embeddings'."""
    embeddings = model.get_input_embeddings()
    return execution_device(embeddings if embeddings is not None else model)
