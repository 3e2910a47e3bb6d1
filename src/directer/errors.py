"""User-facing errors: one clear line naming the problem and the fix."""

from __future__ import annotations

__all__ = ["DirecterError", "SpanNotFoundError", "UnsupportedModelError", "UsageError"]


class DirecterError(Exception):
    """An error caused by the user's input or environment, shown as one line (CLI exit code 1)."""

    exit_code = 1


class UsageError(DirecterError):
    """Invalid arguments or options (CLI exit code 2)."""

    exit_code = 2


class SpanNotFoundError(UsageError):
    """An instruction span could not be located in the prompt."""


class UnsupportedModelError(DirecterError):
    """The model's architecture cannot be steered by this engine."""
