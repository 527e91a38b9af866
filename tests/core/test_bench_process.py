"""A benchmark in a child process (what the Benchmark screen runs): progress and the stored run
come back, a cancel stops it, errors keep their type, a killed child is one clear error."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from llcuda_tui.core.bench import (
    BenchCancelled,
    BenchProgress,
    BenchSpec,
    BenchStore,
    LatencySpec,
    ModelRef,
    run_bench_in_child,
)
from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import EngineError, ModelLoadError


def _spec(model: Path, reps: int = 2, n_gen: int = 8) -> BenchSpec:
    return BenchSpec(models=(ModelRef(model, "tiny"),), n_prompt=(16,), n_gen=(n_gen,),
                     repetitions=reps, n_gpu_layers=(0,), n_threads=(1,))  # fmt: skip


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(120)
def test_run_stores_and_reports_progress(tiny_gguf: Path, llcuda_home: Path) -> None:
    paths = Paths.from_env()
    seen: list[BenchProgress] = []
    pids: list[int] = []
    run = run_bench_in_child("throughput", _spec(tiny_gguf), paths, seen.append, None, pids.append)
    assert [r["test"] for r in run.results] == ["pp16", "tg8"]
    assert run.run_id is not None and run.status != "cancelled"
    with BenchStore.open(paths) as store:  # the child saved it where the app looks
        assert store.get_run(run.run_id).results == run.results
    rates = [p.value for p in seen if p.unit == "t/s"]
    assert len(rates) == 4 and all(r is not None and r > 0 for r in rates)  # 2 tests x 2 reps
    assert seen[-1].done == seen[-1].total
    assert pids and _gone(pids[0])  # the child has exited and been reaped


@pytest.mark.timeout(120)
def test_latency_run_in_the_child(tiny_gguf: Path, llcuda_home: Path) -> None:
    spec = LatencySpec(ModelRef(tiny_gguf, "tiny"), prompts=("hello", "count to ten"),
                       iters=4, max_tokens=8, concurrency=2, n_gpu_layers=0, n_ctx=256,
                       n_threads=1)  # fmt: skip
    seen: list[BenchProgress] = []
    run = run_bench_in_child("latency", spec, Paths.from_env(), seen.append)
    assert run.mode == "concurrency" and run.latency["concurrency"] == 2
    assert len([p for p in seen if p.unit == "ms TTFT"]) == 4  # one per request


@pytest.mark.timeout(120)
def test_cancel_stops_the_run(tiny_gguf: Path, llcuda_home: Path) -> None:
    cancel = threading.Event()

    def progress(p: BenchProgress) -> None:
        if p.value is not None:  # the first measured repetition
            cancel.set()

    t0 = time.monotonic()
    with pytest.raises(BenchCancelled, match="cancelled"):
        run_bench_in_child("throughput", _spec(tiny_gguf, reps=500, n_gen=64),
                           Paths.from_env(), progress, cancel)  # fmt: skip
    assert time.monotonic() - t0 < 30  # 500 x (pp16 + tg64) would take minutes


@pytest.mark.timeout(60)
def test_errors_keep_their_type(tmp_path: Path, llcuda_home: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(ModelLoadError):
        run_bench_in_child("throughput", _spec(bad), Paths.from_env())


@pytest.mark.timeout(60)
def test_a_killed_child_is_one_clear_error(tiny_gguf: Path, llcuda_home: Path) -> None:
    def kill_soon(pid: int) -> None:
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()

    with pytest.raises(EngineError, match=r"benchmark process stopped \(exit code -9\)"):
        run_bench_in_child("throughput", _spec(tiny_gguf, reps=500, n_gen=64),
                           Paths.from_env(), None, None, kill_soon)  # fmt: skip
