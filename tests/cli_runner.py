"""The command line run as a user runs it: ``python -m directer.cli ARGS`` in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys


def directer(*args: str, timeout: int = 900, warnings: str = "ignore") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS=warnings)
    return subprocess.run([sys.executable, "-m", "directer.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
