"""A local benchmark (throughput or latency) run in a child process, for the TUI.

In the app's process, the Benchmark screen's engines would share the GIL with the UI thread
that redraws the live plots. Chat replies streamed through an in-process engine lost 3.4 % of
decode t/s on a fast model (H100, docs/benchmarks.md); what the plots would cost a benchmark
was not measured, and the child process makes the question moot. The whole run happens in
the child: it opens the bench store itself, saves the run there, and sends back its progress
(each step, with the value to plot) and the stored run. A llama.cpp crash ends the child only.

Wire: the engine process's frames (``engine_process``). Parent to child: ``("run", mode, spec,
paths)``, then ``("cancel",)``. Child to parent: ``("progress", BenchProgress)``, then
``("result", StoredRun)`` or ``("error", exception)``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from llcuda_tui.core.engine import last_words, portable, read_frame, spawn_child, write_frame
from llcuda_tui.core.errors import EngineError, LlcudaError

POLL_S = 0.1
"""How often the parent looks at the cancel flag while it waits for the child."""


def run_bench_in_child(
    mode: str,
    spec: Any,
    paths: Any,
    on_progress: Callable[[Any], None] | None = None,
    cancel: threading.Event | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Any:
    """Run ``run_bench`` (mode ``throughput``) or ``run_latency`` (``latency``) on ``spec`` in a
    child process, stored under ``paths``, or ``compare_speculation`` on a ``SpecBenchJob``
    (``speculative``: its list of results, not stored); return the stored run (the list) or
    raise what the run raised
    (BenchCancelled after ``cancel`` is set, UserInputError, ...). ``on_start`` gets the
    child's pid (its GPU memory is ours)."""
    proc, cmd_fd, evt_fd, log = spawn_child("llcuda_tui.core.bench._process", "benchmark")
    lock = threading.Lock()
    try:
        if on_start is not None:
            on_start(proc.pid)
        write_frame(cmd_fd, ("run", mode, spec, paths), lock)
        cancel_sent = False
        while True:
            ready, _, _ = select.select([evt_fd], [], [], POLL_S)
            if cancel is not None and cancel.is_set() and not cancel_sent:
                cancel_sent = True
                with contextlib.suppress(OSError):  # a child that is gone has ended anyway
                    write_frame(cmd_fd, ("cancel",), lock)
            if not ready:
                continue
            event = read_frame(evt_fd)
            if event is None:
                raise _stopped(proc, log)
            kind, payload = event
            if kind == "progress" and on_progress is not None:
                on_progress(payload)
            elif kind == "result":
                return payload
            elif kind == "error":
                raise payload
    except OSError:
        raise _stopped(proc, log) from None
    finally:
        os.close(cmd_fd)  # the child exits on end of file if it has not already
        os.close(evt_fd)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _stopped(proc: subprocess.Popen[bytes], log: Any) -> EngineError:
    try:
        code = proc.wait(2.0)
    except subprocess.TimeoutExpired:
        code = None
    return EngineError(f"the benchmark process stopped (exit code {code}){last_words(log)}")


# --- the child's side -------------------------------------------------------------------------


def _child(cmd_fd: int, evt_fd: int) -> None:
    lock = threading.Lock()
    command = read_frame(cmd_fd)
    if command is None:
        return
    _, mode, spec, paths = command
    cancel = threading.Event()

    def listen() -> None:  # a cancel, or the parent gone (end of file): stop the run
        while (frame := read_frame(cmd_fd)) is not None:
            if frame[0] == "cancel":
                break
        cancel.set()

    threading.Thread(target=listen, name="llcuda-bench-cmd", daemon=True).start()

    def progress(p: Any) -> None:
        write_frame(evt_fd, ("progress", p), lock)

    try:
        from llcuda_tui.core.bench._latency import run_latency
        from llcuda_tui.core.bench._results import BenchStore
        from llcuda_tui.core.bench._throughput import run_bench

        if mode == "speculative":  # a SpecBenchJob; nothing stored (as `llcuda bench --spec`)
            from llcuda_tui.core.bench._speculative import compare_speculation

            result: Any = compare_speculation(
                spec.config, list(spec.specs), spec.n_gen, spec.repetitions,
                on_progress=progress, cancel=cancel,
            )  # fmt: skip
        else:
            run = run_latency if mode == "latency" else run_bench
            with BenchStore.open(paths) as store:
                result = run(spec, progress, cancel, store=store)
        write_frame(evt_fd, ("result", result), lock)
    except (LlcudaError, OSError, ValueError) as exc:
        write_frame(evt_fd, ("error", portable(exc)), lock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llcuda benchmark process (started by the TUI)")
    parser.add_argument("--cmd-fd", type=int, required=True)
    parser.add_argument("--evt-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _child(args.cmd_fd, args.evt_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
