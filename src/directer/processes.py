"""The processes a launcher started (``accelerate launch``, ``torchrun``, ``mpirun``): whether this is
one of several, its device, and accelerate's process state, whose utilities (``split_between_processes``,
``wait_for_everyone``, ``gather_object``, ``main_process_first``) the commands that share out their work
use rather than coordination of their own.

A process started by no launcher is a single process: nothing here imports accelerate or starts
``torch.distributed`` for it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from .errors import UsageError

__all__ = ["BARRIER_TIMEOUT", "launched", "local_processes", "process_device", "process_state", "rank"]

# What the launchers set: torchrun and accelerate (WORLD_SIZE), MPI implementations (the others).
_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def _int_from_env(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise UsageError(f"environment variable {name}={value!r} is not a whole number: fix or unset it") from None
    return default


def launched() -> bool:
    """Whether a launcher started this process as one of several."""
    return _int_from_env(_SIZE_VARIABLES, 1) > 1


def rank() -> int:
    """This process's global rank (0 when not launched)."""
    return _int_from_env(_RANK_VARIABLES, 0)


def local_processes() -> int:
    """How many launched processes share this machine (1 when not launched)."""
    return _int_from_env(_LOCAL_SIZE_VARIABLES, 1) if launched() else 1


def _wants_cpu(device: str | None) -> bool:
    import torch
    from accelerate.utils import parse_flag_from_env

    if device is not None and torch.device(device).type == "cpu":
        return True
    # --workers and `accelerate launch --cpu` say so; a machine without an accelerator has no other choice.
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not (torch.cuda.is_available() or _other_accelerator())


def _other_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator is not None and accelerator.is_available())


# How long a process waits for the others at a barrier. A process whose share finished early waits at
# the last one for the slowest, which on a long evaluation can be hours; torch's default (30 min) would
# end such a run. A process that fails does not leave the others waiting: the launcher stops them.
BARRIER_TIMEOUT = timedelta(days=7)


def process_state(device: str | None = None) -> Any:
    """accelerate's ``PartialState`` for this process (``torch.distributed`` is set up when launched: gloo
    between CPU processes, the accelerator's backend between GPU processes)."""
    from accelerate import PartialState

    if not launched():
        return PartialState(cpu=_wants_cpu(device))
    return PartialState(cpu=_wants_cpu(device), timeout=BARRIER_TIMEOUT)


def process_device(state: Any, device: str | None) -> str | None:
    """The device this process loads its replica on: ``device`` when it names one (``cuda:3``); the
    launcher's device for this process (``cuda:LOCAL_RANK``) when several run and ``device`` is None or
    only a kind (``cuda``); else None (the loader's default)."""
    if state is None or state.num_processes == 1:
        return device
    mine = state.device
    if device is None or (":" not in device and device == mine.type):
        return "cpu" if mine.type == "cpu" else str(mine)
    return device
