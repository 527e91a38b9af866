"""Workers for the tests: in-thread servers on 127.0.0.1 (shared by the package) and
``llcuda serve`` subprocesses (for kill and SIGTERM tests)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.worker.server import WorkerConfig, WorkerServer

API_KEY = "test-key-0123456789"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="package")
def tiny_worker(tiny_gguf: Path) -> Iterator[WorkerServer]:
    """The tiny random model, 4 slots of 1024 tokens, API key :data:`API_KEY`."""
    cfg = WorkerConfig(
        engine=EngineConfig(tiny_gguf, n_ctx=1024, n_threads=1),
        model_name="tiny",
        parallel=4,
        api_key=API_KEY,
    )
    with WorkerServer(cfg) as worker:
        yield worker


@pytest.fixture(scope="package")
def smollm_worker(smollm_path: Path, cpu_threads: int) -> Iterator[WorkerServer]:
    """The starter chat model, 2 slots of 1024 tokens, no API key."""
    cfg = WorkerConfig(
        engine=EngineConfig(smollm_path, n_ctx=1024, n_threads=cpu_threads),
        model_name="smollm",
        parallel=2,
    )
    with WorkerServer(cfg) as worker:
        yield worker


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {API_KEY}"}


class WorkerProcess:
    """``python -m llcuda_tui serve ...`` in a subprocess; ``url`` once it printed 'ready'."""

    def __init__(self, args: list[str], home: Path, timeout_s: float = 30.0) -> None:
        env = {**os.environ, "LLCUDA_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "llcuda_tui", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.url = self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                seen.append(line)
                if " ready on " in line:
                    return line.split(" ready on ")[1].split()[0]
            if self.proc.poll() is not None:
                break
        self.kill()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"worker did not start: {''.join(seen)} {err}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture()
def worker_process(llcuda_home: Path) -> Iterator[type]:
    """A factory of WorkerProcess; every one started is killed at the end of the test."""
    started: list[WorkerProcess] = []

    class Factory:
        @staticmethod
        def start(*args: str) -> WorkerProcess:
            w = WorkerProcess(list(args), llcuda_home)
            started.append(w)
            return w

    yield Factory
    for w in started:
        w.kill()
        for stream in (w.proc.stdout, w.proc.stderr):
            if stream is not None:
                stream.close()
