"""Each rank's GPUs come from its node-local rank, in consecutive blocks."""

from __future__ import annotations

import pytest

from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.mpi.devices import node_gpus, pick_gpus
from llcuda_tui.core.mpi.launch import launched_ranks


def test_one_gpu_per_rank() -> None:
    gpus = ["0", "1", "2", "3"]
    assert [pick_gpus(r, 4, gpus, 1) for r in range(4)] == [("0",), ("1",), ("2",), ("3",)]


def test_blocks_of_gpus_follow_the_visible_ids() -> None:
    gpus = ["4", "5", "6", "7"]  # what a scheduler left visible to the job
    assert pick_gpus(0, 2, gpus, 2) == ("4", "5")
    assert pick_gpus(1, 2, gpus, 2) == ("6", "7")


def test_too_many_ranks_for_the_node_is_one_clear_line() -> None:
    with pytest.raises(UserInputError, match=r"need 6 GPUs on this node but it has 4"):
        pick_gpus(0, 3, ["0", "1", "2", "3"], 2)
    with pytest.raises(UserInputError, match="--gpus-per-rank must be >= 1"):
        pick_gpus(0, 1, ["0"], 0)


def test_gpus_the_launcher_gave_each_rank_are_kept() -> None:
    # Slurm --gpus-per-task=1: each of 4 tasks sees only its own GPU
    assert pick_gpus(2, 4, ["2"], 1, from_launcher=True) == ("2",)
    assert pick_gpus(1, 2, ["0", "1"], 2, from_launcher=True) == ("0", "1")
    with pytest.raises(UserInputError, match="need 4 GPUs"):
        pick_gpus(1, 4, ["0"], 1)  # found by NVML: one GPU cannot serve 4 ranks


def test_cpu_node_gets_no_gpus() -> None:
    assert pick_gpus(3, 8, [], 1) == ()


def test_node_gpus_from_the_environment() -> None:
    assert node_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert node_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert node_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_launched_ranks_from_the_launchers_variables() -> None:
    assert launched_ranks({}) == 1
    assert launched_ranks({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_ranks({"PMI_SIZE": "2"}) == 2
