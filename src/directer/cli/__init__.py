"""The ``directer`` command line: ``generate``, ``demo``, ``eval``, ``profile-heads``, ``report``, ``serve``.

``main`` holds the command group and the entry point, ``options`` what the engine commands share, and
one module per command family (``generate``, ``evaluate``, ``serve``).
"""

from .main import cli, main

__all__ = ["cli", "main"]
