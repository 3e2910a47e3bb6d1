"""DIRECTER: dynamic rejection steering for instruction following (Kang & Kim, ICLR 2026).

Public API::

    from directer import Directer
    d = Directer.from_pretrained()   # bundled SmolLM2-135M-Instruct, offline
    result = d.generate("Write a haiku about autumn.", "Do not use any commas.")
"""

from .api import Directer
from .config import SteeringConfig
from .engine.spans import PreparedPrompt, TokenSpan, prepare_prompt
from .errors import DirecterError, SpanNotFoundError, UnsupportedModelError, UsageError
from .methods import Directer as DirecterPolicy
from .methods import Method, NoSteering, Static, make_method
from .models import BUNDLED_MODEL_ID, LoadedModel, load_model
from .results import GenerationResult, Ranking, Stats, TokenTrace
from .transformers_hook import custom_generate

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


def load_bundled(**kwargs):
    """Load the bundled SmolLM2-135M-Instruct (offline; converted and cached on first use)."""
    return load_model(None, **kwargs)
