"""The engine under a device map: outputs equal the plain model's when accelerate's hooks place (and
offload) the modules, and every tensor the engine creates is made on the device of what it meets.

A CPU has one device, so spreading layers over several GPUs cannot run here; accelerate's offloading
hooks can: every module's weights sit on ``meta`` and its hook brings them in for each forward, which
is the code path a multi-GPU map takes (inputs moved by hooks, ``model.parameters()`` no guide to
where a layer computes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from accelerate import cpu_offload

from directer.engine.devices import execution_device, input_device

from tiny import ARCHS, prompts, run, run_engine, tiny_model, tokens

SRC = Path(__file__).resolve().parents[2] / "src" / "directer"


def offloaded(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every weight on ``meta``, loaded by accelerate's hooks at each forward."""
    return cpu_offload(model, execution_device=torch.device("cpu"))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("matmul", ["stock", "transposed"])
def test_the_engine_decodes_an_offloaded_model_as_the_plain_one(arch, matmul):
    ps = prompts(3)
    plain = run_engine(tiny_model(arch), ps, matmul=matmul)
    model = offloaded(tiny_model(arch))
    assert next(model.parameters()).device.type == "meta"  # nothing for the engine to read off the weights
    hooked = run_engine(model, ps, matmul=matmul)
    assert tokens(hooked) == tokens(plain)
    for a, b in zip(hooked, plain):
        assert [t.trials for t in a.trace] == [t.trials for t in b.trace]
        assert a.ranking == b.ranking


@pytest.mark.parametrize("method,mode", [("pasta", "paper"), ("pasta:filter=1", "paper"), ("spotlight", "paper"),
                                         ("directer", "reference")])
def test_bias_streams_and_reference_mode_decode_an_offloaded_model_as_the_plain_one(method, mode):
    ps = prompts(3)
    assert tokens(run(offloaded(tiny_model("qwen3")), ps, method=method, mode=mode)) == tokens(
        run(tiny_model("qwen3"), ps, method=method, mode=mode))


def test_execution_device_follows_the_hook_not_the_weights():
    model = offloaded(tiny_model("llama"))
    assert input_device(model) == torch.device("cpu")
    assert execution_device(model.get_output_embeddings()) == torch.device("cpu")
    assert execution_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("cpu")  # nothing to go by
    assert execution_device(tiny_model("llama")) == torch.device("cpu")


# Constructors that make a tensor from nothing: without device= it lands on the default device, which
# under a device map is not where the layer it meets computes.
_CONSTRUCTORS = {"zeros", "ones", "full", "empty", "arange", "tensor", "as_tensor", "eye", "rand", "randn",
                 "randint", "linspace"}
# Tensors built on the host on purpose (staging from Python lists): each consumer moves them with
# .to(<the device of the tensor they meet>), the paths the offloaded-model tests above run. A new one
# must be added here knowingly.
_HOST_SIDE = {
    "engine/reference.py": 1,  # a cache view's steered columns, moved to each layer's keys' device
    "engine/prefill.py": 5,  # left-padded prompt ids / mask / positions, moved by the caller; bias targets
    "engine/row_matmul.py": 1,  # the calibration inputs of pays_off, on the CPU it times
    "engine/staging.py": 1,  # a forward's index arrays, packed on the host and copied to the device at once
}


def _bare_constructors(path: Path) -> list[int]:
    """Lines of ``torch.<constructor>(...)`` calls without a ``device=`` keyword."""
    tree = ast.parse(path.read_text())
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _CONSTRUCTORS
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)):
            lines.append(node.lineno)
    return lines


def test_engine_and_methods_make_tensors_on_a_named_device():
    found = {}
    for part in ("engine", "methods"):
        for path in sorted((SRC / part).glob("*.py")):
            lines = _bare_constructors(path)
            if lines:
                found[f"{part}/{path.name}"] = len(lines)
    assert found == _HOST_SIDE, ("a tensor constructor without device= (give it the device of the tensor it is "
                                 "combined with), or a host-side one the table does not list")


def test_engine_and_methods_never_pick_a_device_themselves():
    for part in ("engine", "methods"):
        for path in sorted((SRC / part).glob("*.py")):
            text = path.read_text()
            for bad in (".cuda(", "set_default_device", "torch.device(\"cuda", "device=\"cuda", "device='cuda"):
                assert bad not in text, f"{path.name}: {bad} (use the device of the tensors at hand)"
