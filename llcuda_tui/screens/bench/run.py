"""A Benchmark screen run off the UI thread: the progress its thread writes and the screen's
timer reads (``BenchProgressHolder``), and where the run goes (``run_on_target``: a child
process on this machine, or an attached worker)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from llcuda_tui.screens.bench.form import LOCAL
from llcuda_tui.screens.bench.spec import SPEC_MODE

if TYPE_CHECKING:
    from llcuda_tui.core.bench import (
        BenchProgress,
        BenchSpec,
        LatencySpec,
        SpecBenchJob,
        StoredRun,
    )
    from llcuda_tui.core.config import Paths
    from llcuda_tui.core.worker import WorkerAccess


class BenchProgressHolder:
    """Written by the benchmark thread, read by the UI timer."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.message = ""
        self.values: list[float] = []
        self.unit = "t/s"

    def set(self, p: BenchProgress) -> None:
        """A step of the run; one that measured something carries ``value``/``unit``."""
        self.done, self.total, self.message = p.done, p.total, p.message
        if p.value is not None:
            self.unit = p.unit or self.unit
            self.values.append(float(p.value))


def run_on_target(
    mode: str,
    spec: BenchSpec | LatencySpec | SpecBenchJob,
    target: str,
    paths: Paths,
    progress: BenchProgressHolder,
    cancel: threading.Event,
    access: WorkerAccess,
    add_own_pid: Callable[[int], None],
) -> StoredRun:
    """Run ``spec`` (blocking: in a thread worker) and store it; LlcudaError says why not.
    ``add_own_pid``: the GPU sampler counts the child's memory as this app's."""
    from llcuda_tui.core.bench import (
        BenchStore,
        LatencySpec,
        run_bench_in_child,
        run_latency_on_worker,
    )

    if target != LOCAL:
        assert isinstance(spec, LatencySpec)  # build_spec: a worker runs latency only
        with BenchStore.open(paths) as store:
            return run_latency_on_worker(
                spec, target, progress.set, cancel, store=store,
                api_key=access.api_key, verify=access.verify,
            )  # fmt: skip
    # engines load in a child process: no GIL shared with the UI
    kind = mode if mode in ("latency", SPEC_MODE) else "throughput"
    return run_bench_in_child(kind, spec, paths, progress.set, cancel, add_own_pid)
