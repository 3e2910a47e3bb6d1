"""Steering policies: when to steer, which trials to make, and what to accept; one module per method.

``base`` holds the interface the decoding loop calls (:class:`Method`, the plausibility filter),
``trial`` what a policy asks of the mechanisms, ``registry`` the ``--method NAME:KEY=VALUE`` specs.
Every other module is one method. Adding a method is adding one module here: a :class:`Method`
subclass decorated with :func:`register_method`, whose dataclass fields are its parameters.
"""

from .base import MODES, FilteredMethod, Method, RawStep, plausible, prompt_key
from .registry import (METHODS, make_method, method_label, method_names, parse_layers, parse_method,
                       register_method)
from .trial import AttentionBias, Trial

# The built-in methods, imported (and so registered) in the order they are listed to users.
from .none import NoSteering  # noqa: E402, I001
from .directer import Directer, halving_sizes  # noqa: E402
from .static import Static  # noqa: E402
from .pasta import Pasta, load_head_profile  # noqa: E402
from .spotlight import SpotLight  # noqa: E402
from .instaboost import InstaBoost  # noqa: E402

__all__ = [
    "METHODS",
    "MODES",
    "AttentionBias",
    "Directer",
    "FilteredMethod",
    "InstaBoost",
    "Method",
    "NoSteering",
    "Pasta",
    "RawStep",
    "SpotLight",
    "Static",
    "Trial",
    "halving_sizes",
    "load_head_profile",
    "make_method",
    "method_label",
    "method_names",
    "parse_layers",
    "parse_method",
    "plausible",
    "prompt_key",
    "register_method",
]
