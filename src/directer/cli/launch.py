"""``--workers N``: the command again, as N CPU processes started by torchrun's launcher (the machinery
``accelerate launch`` and ``torchrun`` run on), each with an equal share of the CPU threads.

On a CPU a small model does not keep many threads busy: on the 2-core CI machine two single-threaded
processes decode more tokens per second than one process with two threads (README, "Running at scale").
The processes share the work as under any launcher (:mod:`directer.processes`); this only saves typing
``torchrun --standalone --nproc-per-node N -m directer ...`` with the thread count set.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import Sequence

import click

from ..errors import DirecterError

__all__ = ["command_line", "relaunch", "without_option"]


def command_line() -> list[str]:
    """The arguments this command was started with (those ``main`` was given, else ``sys.argv``)."""
    root = click.get_current_context().find_root()
    argv = (root.obj or {}).get("argv") if isinstance(root.obj, dict) else None
    return list(argv if argv is not None else sys.argv[1:])


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (``--workers 2`` or ``--workers=2``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def relaunch(processes: int, argv: Sequence[str]) -> None:
    """Run ``directer ARGV`` as ``processes`` CPU processes on this machine and wait for them."""
    import torch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    threads = max(1, torch.get_num_threads() // processes)
    click.echo(f"directer: {processes} processes, {threads} thread(s) each (torchrun's launcher)", err=True)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0, monitor_interval=0.5)
    # The launcher's own log lines (its settings, a failed child's summary) would repeat what the
    # processes say; their messages reach the terminal unchanged.
    for name in ["torch.distributed", *logging.root.manager.loggerDict]:  # torch gives its modules their own level
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ACCELERATE_USE_CPU")}
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), ACCELERATE_USE_CPU="true")
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "directer", *argv)
    except SignalException:  # Ctrl-C or a kill: the launcher has stopped the processes
        error = DirecterError("interrupted: finished records are kept, rerun the same command to resume")
        error.exit_code = 130
        raise error from None
    except ChildFailedError as exc:
        codes = sorted((f.local_rank, f.exitcode) for f in exc.failures.values())
        what = ", ".join(f"process {rank} exit code {code}" for rank, code in codes)
        error = DirecterError(f"{what}: see its messages above; finished records are kept, rerun the same command "
                              "to resume")
        error.exit_code = max(1, max(code for _, code in codes))
        raise error from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
