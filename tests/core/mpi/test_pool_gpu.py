"""The pool's GPU view: rank 0's node keeps its indices, other nodes' GPUs follow, with their
history. (No GPU and one host here: the other node's samples are made up, as they would arrive
over MPI from its first rank.)"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llcuda_tui.core.gpu import GpuReading, GpuSample
from llcuda_tui.core.mpi.serve import PoolGpu


def _sample(*names: str) -> GpuSample:
    gpus = tuple(GpuReading(index=i, name=n) for i, n in enumerate(names))
    return GpuSample(time_s=1.0, wall_time=1.0, state="ok", gpus=gpus)


class _LocalSampler:
    interval_s = 1.0

    def __init__(self, sample: GpuSample) -> None:
        self.latest = sample

    def sample(self) -> GpuSample:
        return self.latest

    def history(self, index: int) -> list[GpuReading]:
        return [g for g in self.latest.gpus if g.index == index]


@dataclass
class _Leader:
    host: str


@dataclass
class _Pool:
    node_gpus: dict[str, Any] = field(default_factory=dict)
    node_gpu_history: dict[tuple[str, int], deque[Any]] = field(default_factory=dict)

    def gpu_leaders(self) -> list[_Leader]:
        return [_Leader("node2")]


def test_other_nodes_gpus_follow_rank_0s() -> None:
    pool = _Pool()
    remote = _sample("H200-a", "H200-b")
    pool.node_gpus["node2"] = remote
    pool.node_gpu_history[("node2", 1)] = deque([remote.gpus[1], remote.gpus[1]])
    view = PoolGpu(_LocalSampler(_sample("H200-0", "H200-1")), pool)  # type: ignore[arg-type]
    merged = view.latest
    assert [(g.index, g.name) for g in merged.gpus] == [
        (0, "H200-0"),
        (1, "H200-1"),
        (2, "H200-a"),
        (3, "H200-b"),
    ]
    assert [r.name for r in view.history(1)] == ["H200-1"]
    assert [(r.index, r.name) for r in view.history(3)] == [(3, "H200-b")] * 2
    assert view.sample().to_dict()["gpus"][2]["name"] == "H200-a"


def test_a_node_that_sent_nothing_yet_adds_no_gpus() -> None:
    view = PoolGpu(_LocalSampler(_sample("H200-0")), _Pool())  # type: ignore[arg-type]
    assert [g.name for g in view.latest.gpus] == ["H200-0"]
    assert view.history(5) == []
