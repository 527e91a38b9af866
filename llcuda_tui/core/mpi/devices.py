"""Which GPUs each rank uses: picked from its node-local rank, never its world rank.

``mpiexec -n 8 -H node1:4,node2:4`` gives world ranks 0-7 but each node holds GPUs 0-3, so
rank 5 must use GPU 1 of node2. Splitting the world communicator by shared memory
(``MPI_COMM_TYPE_SHARED``) gives each rank its index on its own node. The choice is written
to ``CUDA_VISIBLE_DEVICES`` before the engine loads (CUDA reads it once, when it starts).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from llcuda_tui.core.errors import UserInputError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Placement:
    """Where one rank runs."""

    world_rank: int
    world_size: int
    local_rank: int
    """Index of this rank among the ranks on its node."""
    local_size: int
    host: str
    gpus: tuple[str, ...]
    """Device ids (as CUDA_VISIBLE_DEVICES names them) this rank owns; () = CPU only."""

    def describe(self) -> str:
        where = f"GPU {','.join(self.gpus)}" if self.gpus else "CPU"
        rank = f"rank {self.world_rank}/{self.world_size}"
        return f"{rank} on {self.host} (local {self.local_rank}): {where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.world_rank,
            "size": self.world_size,
            "local_rank": self.local_rank,
            "local_size": self.local_size,
            "host": self.host,
            "gpus": list(self.gpus),
        }


def node_gpus(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """The node's GPUs: the ids already in CUDA_VISIBLE_DEVICES (a scheduler may have set it),
    else every GPU NVML sees (0..n-1); [] without a GPU or a driver."""
    env = os.environ if environ is None else environ
    given = env.get(VISIBLE_ENV)
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no GPU, no library: a CPU node
        return []


def pick_gpus(
    local_rank: int,
    local_size: int,
    gpus: list[str],
    gpus_per_rank: int,
    from_launcher: bool = False,
) -> tuple[str, ...]:
    """The ``gpus_per_rank`` GPUs of node-local rank ``local_rank``: consecutive blocks, so
    rank 0 gets the first block, rank 1 the next. () on a node without GPUs.

    ``from_launcher``: ``gpus`` came from CUDA_VISIBLE_DEVICES as the launcher set it. When it
    holds exactly ``gpus_per_rank`` ids while several ranks share the node, the launcher gave
    each rank its own (Slurm's ``--gpus-per-task``): they are kept as they are."""
    if gpus_per_rank < 1:
        raise UserInputError("--gpus-per-rank must be >= 1")
    if not gpus:
        return ()
    if from_launcher and local_size > 1 and len(gpus) == gpus_per_rank:
        return tuple(gpus)
    needed = local_size * gpus_per_rank
    if needed > len(gpus):
        raise UserInputError(
            f"{local_size} ranks x {gpus_per_rank} GPU(s) per rank need {needed} GPUs on this "
            f"node but it has {len(gpus)} ({','.join(gpus)}): start fewer ranks per node "
            "(mpiexec -H node:N) or lower --gpus-per-rank"
        )
    start = local_rank * gpus_per_rank
    return tuple(gpus[start : start + gpus_per_rank])


def place(
    comm: Any, gpus_per_rank: int = 1, apply: bool = True, runs_engine: bool = True
) -> Placement:
    """This rank's placement in ``comm`` (an mpi4py communicator); with ``apply``, set
    CUDA_VISIBLE_DEVICES to its GPUs (call before anything initialises CUDA). Collective.

    Only ranks that run an engine share out the GPUs (``runs_engine`` False: rank 0 of a pool
    that only serves HTTP); such a rank gets no GPU and, with ``apply``, sees none."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    engines = comm.Split(0 if runs_engine else MPI.UNDEFINED, key=rank)
    local_rank, local_size = 0, 1
    gpus: tuple[str, ...] = ()
    if engines != MPI.COMM_NULL:
        local = engines.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        try:
            local_rank, local_size = local.Get_rank(), local.Get_size()
        finally:
            local.Free()
            engines.Free()
        from_launcher = VISIBLE_ENV in os.environ
        gpus = pick_gpus(local_rank, local_size, node_gpus(), gpus_per_rank, from_launcher)
    if apply and (gpus or not runs_engine):
        os.environ[VISIBLE_ENV] = ",".join(gpus)
    return Placement(rank, comm.Get_size(), local_rank, local_size, socket.gethostname(), gpus)


def single_process() -> Placement:
    """The placement of a run without MPI: everything this process can see."""
    return Placement(0, 1, 0, 1, socket.gethostname(), tuple(node_gpus()))
