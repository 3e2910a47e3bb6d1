"""Loading causal LMs for steering (the bundled SmolLM2 GGUF, local files and Hub ids) and
checking that their architecture can be steered.

GGUF files go through the conversion cache in `gguf_cache`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import DirecterError, UnsupportedModelError, UsageError
from .locate import BUNDLED_DISPLAY_NAME, _classify, bundled_gguf_path, display_name, hub_unreachable
from .gguf_cache import (
    _LOAD_LOCK,
    ModelAndTokenizer,
    _cached_conversion,
    _convert_gguf,
    _load_folder,
    _no_progress_bars,
    _short,
)

__all__ = [
    "DEVICE_MAPS",
    "TESTED_MODEL_TYPES",
    "attention_modules",
    "check_device_map",
    "check_supported",
    "dtype_name",
    "load_dtype",
    "load_model",
    "LoadedModel",
    "resolve_dtype",
]


# Architectures the test-suite exercises; other structurally compatible models are allowed.
TESTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_DTYPE_HELP = "float32 (fp32), bfloat16 (bf16), float16 (fp16) or auto"


# Words in a `config.layer_types` entry that mean the layer is not softmax self-attention.
_NON_ATTENTION_LAYER_WORDS = (
    "linear", "mamba", "ssm", "conv", "recurrent", "rnn", "rwkv", "delta", "retention", "hybrid",
)
# Child modules of a decoder layer that mean it carries a recurrent / state-space block.
_RECURRENT_CHILD_NAMES = (
    "mamba", "mixer", "ssm", "linear_attn", "conv", "short_conv", "temporal_block", "recurrent_block",
)


@dataclass
class LoadedModel:
    """A model ready for steering, with its tokenizer and where it came from."""

    model: Any  # transformers.PreTrainedModel, in eval mode, on its device
    tokenizer: Any  # padding_side="left", pad_token always set
    name: str  # for display
    source: str  # "bundled", "gguf", "local" or "hub"


# --------------------------------------------------------------------------- locations


# --------------------------------------------------------------------------- dtype / device


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """Validate the device up front, so a typo fails before a slow load."""
    if device is None:
        return _default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise DirecterError(f"device {device!r} requested but CUDA is not available: use device 'cpu'")
    return str(parsed)


# accelerate's placement strategies (transformers' ``device_map=`` strings).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: Any, device: str | None = None) -> str | dict[str, Any] | None:
    """Validate a device map before any weights load: one of ``DEVICE_MAPS``, or a dict from module
    names to devices (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``), as transformers takes it."""
    if device_map is None:
        return None
    if device is not None:
        raise UsageError("give a device or a device map, not both (the map places every layer)")
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise UsageError(f"unknown device map {device_map!r}: use one of {', '.join(DEVICE_MAPS)} or a dict of "
                             "module names to devices")
        return device_map
    if not isinstance(device_map, dict) or not device_map:
        raise UsageError(f"invalid device map {device_map!r}: use one of {', '.join(DEVICE_MAPS)} or a non-empty dict "
                         "of module names to devices")
    for name, where in device_map.items():
        if not isinstance(name, str):
            raise UsageError(f"invalid device map entry {name!r}: module names are strings, e.g. 'model.layers.0'")
        if where == "disk":
            continue
        if isinstance(where, bool) or not isinstance(where, (int, str)):
            raise UsageError(f"invalid device {where!r} for {name!r} in the device map: use 0, 'cuda:1', 'cpu' or 'disk'")
        try:
            # An int is an accelerator index, as accelerate reads it (torch.device(0) needs a CUDA build).
            kind = "cuda" if isinstance(where, int) and where >= 0 else torch.device(where).type
        except (RuntimeError, ValueError, TypeError):
            raise UsageError(f"invalid device {where!r} for {name!r} in the device map: use 0, 'cuda:1', 'cpu' or "
                             "'disk'") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise DirecterError(f"the device map puts {name!r} on {where!r} but CUDA is not available")
    return device_map


def _map_device(device_map: str | dict[str, Any]) -> str:
    """The kind of device a map computes on, for ``dtype="auto"``: cuda if any entry (or, for a strategy,
    the machine) has one."""
    if isinstance(device_map, str):
        return _default_device()
    kinds = {"cuda" if isinstance(w, int) else torch.device(w).type for w in device_map.values() if w != "disk"}
    return "cuda" if "cuda" in kinds else "cpu"


def load_dtype(dtype: str | torch.dtype, mode: str | None) -> str | torch.dtype:
    """The dtype a model is loaded with: ``auto`` is float32 in reference mode (what the released code
    runs), else left to the loader (bfloat16 on a GPU that has it, float32 elsewhere)."""
    if mode == "reference" and isinstance(dtype, str) and dtype.lower() == "auto":
        return "float32"
    return dtype


def dtype_name(dtype: str | torch.dtype | None, *, device: str | None = None, device_map: Any = None) -> str:
    """The dtype ``load_model`` would use, by name (``auto`` resolved; other names as given)."""
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        where = _map_device(device_map) if device_map is not None else device
        return str(resolve_dtype(dtype, device=where)).removeprefix("torch.")
    return dtype if isinstance(dtype, str) else str(resolve_dtype(dtype)).removeprefix("torch.")


def resolve_dtype(dtype: str | torch.dtype | None, *, device: str | None = None) -> torch.dtype:
    """Turn a dtype name or torch dtype into a floating torch dtype.

    None means float32. "auto" is float32 on CPU and bfloat16 on a CUDA device that supports it;
    `device` (default: the device load_model would pick) decides which.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise UsageError(f"dtype {dtype} is not a floating-point type: use one of {_DTYPE_HELP}")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            return _auto_dtype(device)
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    raise UsageError(f"unknown dtype {dtype!r}: use one of {_DTYPE_HELP}")


def _auto_dtype(device: str | None) -> torch.dtype:
    kind = torch.device(device).type if device else _default_device()
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    # float16 overflows in some models' activations; float32 is the safe default elsewhere.
    return torch.float32


# --------------------------------------------------------------------------- support check


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The decoder's layer list: `model.get_decoder().layers`, else `model.model.layers`."""
    candidates = []
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            candidates.append(get_decoder())
        except Exception:  # some heads raise instead of returning None
            pass
    candidates.append(getattr(model, "model", None))
    for candidate in candidates:
        layers = getattr(candidate, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return layers
    return None


def _model_type(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def _unsupported(model_type: str, problem: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"unsupported model type {model_type!r}: {problem}; use a decoder-only transformer with "
        f"standard self-attention in every layer (tested: {', '.join(TESTED_MODEL_TYPES)})"
    )


def _layer_problems(layers: torch.nn.ModuleList) -> Iterator[tuple[int, str | None, torch.nn.Module | None]]:
    """Yield (index, problem or None, self_attn or None) for each decoder layer."""
    for index, layer in enumerate(layers):
        attn = getattr(layer, "self_attn", None)
        if not isinstance(attn, torch.nn.Module):
            yield index, f"decoder layer {index} has no self_attn module", None
        elif not isinstance(getattr(attn, "layer_idx", None), int):
            yield index, f"the self_attn of decoder layer {index} has no layer_idx", None
        else:
            yield index, None, attn


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The per-layer `self_attn` modules of a decoder-only model, in layer order."""
    layers = _decoder_layers(model)
    if layers is None:
        problem = "no decoder layers found (expected model.get_decoder().layers)"
        raise _unsupported(_model_type(model), problem)
    modules = []
    for _, problem, attn in _layer_problems(layers):
        if problem is not None:
            raise _unsupported(_model_type(model), problem)
        modules.append(attn)
    return modules


def _is_attention_layer_type(kind: str) -> bool:
    kind = kind.lower()
    return not any(word in kind for word in _NON_ATTENTION_LAYER_WORDS)


def _config_problem(config: Any) -> str | None:
    """What in a model config rules out steering, if anything (checked before loading weights)."""
    if getattr(config, "is_encoder_decoder", False):
        return "it is an encoder-decoder model"
    # Hybrid models list their per-layer kind; recurrent_gemma and Jamba-like ones call it layers_block_type.
    for attribute in ("layer_types", "layers_block_type"):
        kinds = getattr(config, attribute, None)
        if isinstance(kinds, (list, tuple)):
            bad = sorted({str(kind) for kind in kinds if not _is_attention_layer_type(str(kind))})
            if bad:
                return f"it has {', '.join(bad)} layers (config.{attribute})"
    return None


def check_supported(model: torch.nn.Module) -> None:
    """Raise UnsupportedModelError unless every decoder layer is standard softmax self-attention."""
    model_type = _model_type(model)
    problem = _config_problem(getattr(model, "config", None))
    if problem is not None:
        raise _unsupported(model_type, problem)
    layers = _decoder_layers(model)
    if layers is not None:
        # Some hybrids (e.g. Falcon-H1) run a state-space block beside self_attn in the same layer.
        for index, layer in enumerate(layers):
            children = {name for name, _ in layer.named_children()}
            recurrent = sorted(children.intersection(_RECURRENT_CHILD_NAMES))
            if recurrent:
                problem = f"decoder layer {index} has a recurrent block ({recurrent[0]})"
                raise _unsupported(model_type, problem)
    attention_modules(model)


# --------------------------------------------------------------------------- load_model


def _kind(local: bool) -> str:
    return "folder" if local else "Hugging Face model"


def _check_config_before_load(target: Path | str, name: str, local: bool, offline: bool = False) -> None:
    """Reject unsupported architectures from config.json alone, before downloading/reading weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(target, local_files_only=local or offline)
    except Exception as exc:
        hint = "" if local else "; to use only models already downloaded, set HF_HUB_OFFLINE=1"
        raise DirecterError(f"cannot load {_kind(local)} {name}: {_short(exc)}{hint}") from exc
    problem = _config_problem(config)
    if problem is not None:
        raise _unsupported(getattr(config, "model_type", None) or "unknown", problem)


# Files of which a saved tokenizer has at least one (fast, SentencePiece, BPE and WordPiece vocabularies).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _load_pretrained(target: Path | str, name: str, dtype: torch.dtype, local: bool,
                     placement: dict[str, Any] | None = None) -> ModelAndTokenizer:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = not local and hub_unreachable(str(target))
    _check_config_before_load(target, name, local, offline)
    if local and not any((Path(target) / f).is_file() for f in _TOKENIZER_FILES):
        raise DirecterError(f"folder {name} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}): save the "
                            "model's tokenizer there too, e.g. tokenizer.save_pretrained(folder)")
    # Hub downloads keep their progress bars; a local load is quick and needs none.
    quiet = _no_progress_bars() if local else contextlib.nullcontext()
    try:
        with _LOAD_LOCK, quiet:
            tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=local or offline)
            model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, local_files_only=local or offline,
                                                         **(placement or {}))
    except Exception as exc:
        raise DirecterError(f"cannot load {_kind(local)} {name}: {_short(exc)}") from exc
    return model, tokenizer


def _set_attention(model: Any, attn_implementation: str | None) -> None:
    """Switch attention kernels after loading, so a bad choice is a usage error, not a 'damaged cache'."""
    if attn_implementation is None or model.config._attn_implementation == attn_implementation:
        return
    try:
        model.set_attn_implementation(attn_implementation)
    except Exception as exc:
        raise UsageError(
            f"attention implementation {attn_implementation!r} is not available: {_short(exc)}; "
            "use 'sdpa' or 'eager'"
        ) from None


def _prepare_tokenizer(tokenizer: Any, model: Any, name: str) -> None:
    """Left padding (the engine appends tokens on the right) and a pad token for batching."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UnsupportedModelError(
                f"the tokenizer of {name} has no pad or eos token; use a model whose tokenizer defines one"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id  # silences generate()'s warning


def load_model(
    model: str | None = None,
    *,
    dtype: str | torch.dtype | None = "float32",
    attn_implementation: str | None = "sdpa",
    device: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for steering.

    `model` is None (the bundled SmolLM2-135M-Instruct), a .gguf file (converted once, then cached),
    a local Hugging Face folder or a Hub id. The model is checked with `check_supported`, put in eval
    mode on `device` (default: cuda if available, else cpu), or spread by `device_map` (``auto``,
    ``balanced``, ``balanced_low_0``, ``sequential`` or a dict, with accelerate's `max_memory` and
    `offload_folder`, as transformers' ``from_pretrained`` takes them); the tokenizer pads on the left.
    """
    device_map = check_device_map(device_map, device)
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise UsageError("max_memory and offload_folder place a device map's layers: give a device_map too")
    device_name = resolve_device(device) if device_map is None else None
    torch_dtype = resolve_dtype(dtype, device=device_name if device_map is None else _map_device(device_map))
    placement = None
    if device_map is not None:
        placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
        placement = {k: v for k, v in placement.items() if v is not None}
    direct = device_map is None and torch.device(device_name).type == "cuda"
    if direct:  # the weights load straight onto the GPU: no copy of the whole model through host memory
        placement = {"device_map": {"": device_name}}

    def load_cached(folder: Path) -> ModelAndTokenizer:
        return _load_folder(folder, torch_dtype, placement)

    if model is None:
        source, name = "bundled", BUNDLED_DISPLAY_NAME
        # _convert_gguf is looked up at call time so tests can substitute a fast fake.
        net, tokenizer = _cached_conversion(bundled_gguf_path(), _convert_gguf, load_cached, label=name)
    else:
        source, target = _classify(model)
        name = display_name(model)
        if source == "gguf":
            net, tokenizer = _cached_conversion(Path(target), _convert_gguf, load_cached, label=str(target))
        else:
            net, tokenizer = _load_pretrained(target, name, torch_dtype, local=source == "local", placement=placement)
    if direct and hasattr(net, "hf_device_map"):  # one device is not a device map (the float16 guard may recast it)
        del net.hf_device_map
    check_supported(net)
    _set_attention(net, attn_implementation)
    _prepare_tokenizer(tokenizer, net, name)
    net.eval()
    if device_map is not None:  # accelerate has placed every module (and hooks move the activations)
        return LoadedModel(model=net, tokenizer=tokenizer, name=name, source=source)
    try:
        net.to(device_name)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        raise DirecterError(
            f"cannot move {name} to {device_name}: {_short(exc)}; use a smaller dtype or device 'cpu'"
        ) from None
    return LoadedModel(model=net, tokenizer=tokenizer, name=name, source=source)
