"""``llcuda serve`` in subprocesses for kill, stall and SIGTERM tests: :class:`WorkerProcess`
and the ``worker_process`` fixture (re-exported by the conftests that use it)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def wait_ready(
    proc: subprocess.Popen, timeout_s: float, kill: Callable[[], None], what: str
) -> str:
    """The URL in the 'ready on URL' line a `llcuda serve` process prints; if none comes
    within ``timeout_s`` (or the process exits), ``kill()`` and fail with what it printed."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            seen.append(line)
            if " ready on " in line:
                return line.split(" ready on ")[1].split()[0]
        if proc.poll() is not None:
            break
    kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"{what} did not start: {''.join(seen)} {err}")


class WorkerProcess:
    """``python -m llcuda_tui serve ...`` in a subprocess; ``url`` once it printed 'ready'."""

    def __init__(self, args: list[str], home: Path, timeout_s: float = 30.0) -> None:
        env = {**os.environ, "LLCUDA_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "llcuda_tui", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.url = wait_ready(self.proc, timeout_s, self.kill, "worker")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class Started:
    """Processes started by a test (anything with ``proc`` and ``kill()``), killed at its end
    with their pipes closed; ``start`` makes one with ``make``."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self._make = make
        self.started: list[Any] = []

    def start(self, *args: Any, **kwargs: Any) -> Any:
        process = self._make(*args, **kwargs)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()
            for stream in (process.proc.stdout, process.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture()
def worker_process(llcuda_home: Path) -> Iterator[Started]:
    """Start ``llcuda serve`` subprocesses (``.start(*args)``); all are killed at the end."""
    started = Started(lambda *args: WorkerProcess(list(args), llcuda_home))
    yield started
    started.kill_all()
