"""Models: loading (the bundled SmolLM2 GGUF, ``.gguf`` files, local folders, Hub ids), the checks that
an architecture can be steered, and the on-disk cache of converted GGUF models.

``loading`` is the entry point (:func:`load_model`); ``gguf_cache`` converts a GGUF once, into a
float32 safetensors folder under ``$DIRECTER_CACHE_DIR`` (default ``~/.cache/directer``).
"""

from .gguf_cache import CACHE_MARKER, cache_root
from .loading import (BUNDLED_MODEL_ID, TESTED_MODEL_TYPES, LoadedModel, attention_modules, bundled_gguf_path,
                      check_supported, load_model, resolve_dtype)

__all__ = [
    "BUNDLED_MODEL_ID",
    "CACHE_MARKER",
    "TESTED_MODEL_TYPES",
    "LoadedModel",
    "attention_modules",
    "bundled_gguf_path",
    "cache_root",
    "check_supported",
    "load_model",
    "resolve_dtype",
]
