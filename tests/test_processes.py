"""Which of several launched processes this is, and where it loads its replica."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from directer.errors import UsageError
from directer.processes import launched, local_processes, process_device, process_state, rank

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK",
                    "MV2_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")


@pytest.fixture
def env(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_process_no_launcher_started_is_alone(env):
    assert not launched() and rank() == 0 and local_processes() == 1
    state = process_state()
    assert state.num_processes == 1 and state.is_main_process


def test_torchrun_and_mpi_variables_are_read(env):
    env.setenv("WORLD_SIZE", "4")
    env.setenv("RANK", "3")
    env.setenv("LOCAL_WORLD_SIZE", "2")
    assert launched() and rank() == 3 and local_processes() == 2
    env.delenv("WORLD_SIZE")
    env.delenv("RANK")
    env.delenv("LOCAL_WORLD_SIZE")
    env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    env.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert launched() and rank() == 1 and local_processes() == 1  # no local size: one per machine


def test_a_malformed_variable_is_one_clear_error(env):
    env.setenv("WORLD_SIZE", "two")
    with pytest.raises(UsageError, match="WORLD_SIZE='two' is not a whole number"):
        launched()


def test_each_launched_process_gets_its_own_device():
    gpu = SimpleNamespace(num_processes=8, device=torch.device("cuda", 5))
    assert process_device(gpu, None) == "cuda:5"
    assert process_device(gpu, "cuda") == "cuda:5"  # a kind only: this process's one of that kind
    assert process_device(gpu, "cuda:1") == "cuda:1"  # a named device is the user's choice
    assert process_device(gpu, "cpu") == "cpu"
    cpu = SimpleNamespace(num_processes=2, device=torch.device("cpu", 0))
    assert process_device(cpu, None) == "cpu"
    assert process_device(SimpleNamespace(num_processes=1, device=torch.device("cuda", 0)), None) is None
    assert process_device(None, "cuda:2") == "cuda:2"
