"""DIRECTER: dynamic rejection steering for instruction following (Kang & Kim, ICLR 2026).

Public API::

    from directer import Directer
    d = Directer.from_pretrained()   # bundled SmolLM2-135M-Instruct, offline
    result = d.generate("Write a haiku about autumn.", "Do not use any commas.")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers and IDEs; at run time they load on first use
    from .api import Directer
    from .config import SteeringConfig
    from .text.spans import PreparedPrompt, TokenSpan, prepare_prompt
    from .errors import DirecterError, SpanNotFoundError, UnsupportedModelError, UsageError
    from .methods import Directer as DirecterPolicy
    from .methods import Method, NoSteering, Static, make_method
    from .models.loading import LoadedModel, load_model
    from .models.locate import BUNDLED_MODEL_ID
    from .results import GenerationResult, Ranking, Stats, TokenTrace
    from .transformers_hook import custom_generate

# Where each public name lives. They are imported on first use, so that `import directer` (and the
# command line's --help and argument errors) do not pay for torch and transformers up front.
_LAZY = {
    "Directer": ".api",
    "SteeringConfig": ".config",
    "PreparedPrompt": ".text.spans",
    "TokenSpan": ".text.spans",
    "prepare_prompt": ".text.spans",
    "DirecterError": ".errors",
    "SpanNotFoundError": ".errors",
    "UnsupportedModelError": ".errors",
    "UsageError": ".errors",
    "DirecterPolicy": ".methods",
    "Method": ".methods",
    "NoSteering": ".methods",
    "Static": ".methods",
    "make_method": ".methods",
    "BUNDLED_MODEL_ID": ".models.locate",
    "LoadedModel": ".models.loading",
    "load_model": ".models.loading",
    "GenerationResult": ".results",
    "Ranking": ".results",
    "Stats": ".results",
    "TokenTrace": ".results",
    "custom_generate": ".transformers_hook",
}
_RENAMED = {"DirecterPolicy": "Directer"}  # the policy class, named apart from the API class


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'directer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), _RENAMED.get(name, name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "BUNDLED_MODEL_ID",
    "Directer",
    "DirecterError",
    "DirecterPolicy",
    "GenerationResult",
    "LoadedModel",
    "Method",
    "NoSteering",
    "PreparedPrompt",
    "Ranking",
    "SpanNotFoundError",
    "Static",
    "Stats",
    "SteeringConfig",
    "TokenSpan",
    "TokenTrace",
    "UnsupportedModelError",
    "UsageError",
    "custom_generate",
    "load_bundled",
    "load_model",
    "make_method",
    "prepare_prompt",
]


def load_bundled(**kwargs: Any) -> LoadedModel:
    """Load the bundled SmolLM2-135M-Instruct (offline; converted and cached on first use)."""
    from .models.loading import load_model

    return load_model(None, **kwargs)
