"""The method registry and ``NAME:KEY=VALUE`` method specs.

Every module of this package that defines a method registers it with :func:`register_method`; the
registry imports all of them on first use, so adding a method is adding one module here. A method's
parameters are its dataclass fields, converted from the spec's text by their type hints.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from typing import Any, Callable

from ..errors import UsageError
from .base import MODES, Method

__all__ = [
    "METHODS",
    "make_method",
    "method_label",
    "method_names",
    "parse_layers",
    "parse_method",
    "register_method",
]

METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a policy available as ``--method NAME`` (parameters: its dataclass fields)."""
    def deco(cls: type) -> type:
        METHODS[name] = cls
        return cls
    return deco


_imported = False


def _import_all() -> None:
    """Import every module of this package once, so that each method's ``@register_method`` has run.

    The built-in methods are imported by ``directer/methods/__init__.py`` in the order they are listed
    (``none``, ``directer``, ``static``, the baselines); a module added beside them registers here."""
    global _imported
    if not _imported:
        package = importlib.import_module(__package__)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            importlib.import_module(f"{__package__}.{info.name}")
        _imported = True


def parse_layers(spec: str | None) -> tuple[int, ...] | None:
    """Parse ``--layers``: "all", "0-3,8,10-12" or None (all layers)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    layers: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                layers.extend(range(int(a), int(b) + 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise UsageError(f"invalid --layers {spec!r}: use 'all' or indices and ranges like '0-3,8,10-12'") from None
    if not layers:
        raise UsageError(f"invalid --layers {spec!r}: no layer given")
    return tuple(sorted(set(layers)))


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME[:KEY=VALUE[:KEY=VALUE...]]`` into the name and its parameters."""
    name, *parts = spec.strip().split(":")
    params: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid method {spec!r}: parameters are KEY=VALUE, as in 'static:alpha=3:layers=0-7'")
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip().lower(), params


def method_label(spec: str, plausibility_filter: bool = False) -> str:
    """The name a method's results go under: the spec, with ``:filter=1`` when the run-wide
    ``--plausibility-filter`` applies to it (methods with a ``filter`` parameter that do not set it)."""
    name, params = parse_method(spec)
    method_names()
    cls = METHODS.get(name)
    takes_filter = cls is not None and "filter" in getattr(cls, "__dataclass_fields__", {})
    spec = spec.strip()
    if plausibility_filter and takes_filter and "filter" not in params:
        spec += ":filter=1"
    return spec


def method_names() -> list[str]:
    """The registered method names (built-in ones first, in the order of ``directer.methods``)."""
    _import_all()
    return list(METHODS)


def make_method(spec: str, *, alpha: float = 100.0, beta: float = 0.5, mode: str = "paper", gate: bool = True,
                layers: tuple[int, ...] | None = None, plausibility_filter: bool = False) -> Method:
    """Build a policy from ``--method``: a name (``directer``, ``none``, ``static``, ``pasta``, ...) and
    optional parameters, ``NAME:KEY=VALUE:...``. The keyword arguments are the run-wide defaults
    (``--alpha``, ``--beta``, ``--mode``, ``--layers``, ``--plausibility-filter``); the spec's parameters win,
    so the policy holds every setting it decodes with."""
    names = method_names()
    name, params = parse_method(spec)
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}: choose one of {', '.join(names)}")
    cls = METHODS[name]
    known = {f.name: f for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") else {}
    defaults = {"alpha": alpha, "beta": beta, "mode": mode, "gate": gate, "layers": layers, "filter": plausibility_filter}
    kwargs: dict[str, Any] = {k: v for k, v in defaults.items() if k in known}
    for key, text in params.items():
        if key not in known:
            options = ", ".join(sorted(known)) or "none"
            raise UsageError(f"method {name} has no parameter {key!r} (its parameters: {options})")
        kwargs[key] = _convert(name, key, str(known[key].type), text)
    return cls(**kwargs)


def _convert(method: str, key: str, kind: str, text: str) -> Any:
    try:
        if "tuple[int" in kind:
            return parse_layers(text)
        if kind.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on", ""):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("int"):
            return int(text)
    except (ValueError, UsageError):
        raise UsageError(f"invalid value {text!r} for {method} parameter {key} (expected {kind})") from None
    return text
