"""Starting a rank and agreeing on failures: one rank's bad input or failed load must stop
every rank (a rank left waiting in a collective would hang the job), reported once."""

from __future__ import annotations

from typing import Any

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.mpi.devices import Placement, place


class RankFailed(LlcudaError):
    """A rank failed a step every rank takes; rank 0 reports it, the others exit quietly with
    its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def agree(comm: Any | None, error: LlcudaError | None, step: str) -> None:
    """Raise on every rank if any rank failed ``step`` (the first failure, naming its rank)."""
    if comm is None or comm.Get_size() == 1:
        if error is not None:
            raise error
        return
    mine = None if error is None else (str(error), error.exit_code)
    failures = [(r, f) for r, f in enumerate(comm.allgather(mine)) if f is not None]
    if not failures:
        return
    bad_rank, (message, code) = failures[0]
    if error is not None and bad_rank == comm.Get_rank() == 0:
        raise error
    where = f"rank {bad_rank} could not {step}"
    raise RankFailed(f"{where}: {message}", code)


def world() -> Any:
    """MPI's world communicator (mpi4py imported now: MPI starts with MPI_THREAD_MULTIPLE)."""
    from llcuda_tui.core.mpi.launch import import_mpi

    return import_mpi().COMM_WORLD


def place_agreed(comm: Any, gpus_per_rank: int = 1, root_engine: bool = True) -> Placement:
    """This rank's placement (CUDA_VISIBLE_DEVICES set); every rank fails if one cannot.
    Without ``root_engine``, rank 0 takes no GPU."""
    placement, error = None, None
    try:
        placement = place(comm, gpus_per_rank, runs_engine=root_engine or comm.Get_rank() != 0)
    except LlcudaError as exc:
        error = exc
    agree(comm, error, "pick its GPUs")
    assert placement is not None
    return placement


def quiet_exit_code(comm: Any | None, exc: LlcudaError) -> int | None:
    """On a rank other than 0, the exit code to leave with silently (rank 0 says why)."""
    if comm is not None and comm.Get_rank() != 0 and comm.Get_size() > 1:
        return exc.exit_code
    return None
