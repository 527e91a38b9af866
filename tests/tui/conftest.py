"""Helpers for driving the app in Pilot sessions: an app with injected, deterministic
services (no live GPU sampling, a fixed fit device, a fixed clock), waiting on state, and real
workers (``llcuda serve`` in-thread on 127.0.0.1) to attach."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.app import LlcudaApp
from llcuda_tui.core.config import Settings
from llcuda_tui.core.fit import DeviceMemory
from llcuda_tui.core.gpu import GpuSampler, ReplayNvml
from llcuda_tui.core.worker.server import Listen, WorkerServer
from tests.core.worker.conftest import tiny_config

GIB = 2**30
DATA = Path(__file__).resolve().parents[1] / "data"
H100_TRACE = DATA / "nvml_trace_h100.json"
FIXED_NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SIZE = (120, 40)


def no_gpu_sampler() -> GpuSampler:
    """A sampler whose NVML reports no driver (what a machine without a GPU sees)."""
    nvml = ReplayNvml({"format": 1, "init_error": 9, "setup": {}, "ticks": []})
    sampler = GpuSampler(nvml=nvml)
    sampler.sample()
    return sampler


def h100_sampler(ticks: int = 9) -> GpuSampler:
    """A sampler that has read the first ``ticks`` ticks of the recorded H100 trace (by
    tick 9 our process holds GPU memory and the GPU is power capped)."""
    import json

    nvml = ReplayNvml.load(H100_TRACE)
    pid = int(json.loads(H100_TRACE.read_text())["meta"]["recorded_pid"])
    sampler = GpuSampler(nvml=nvml, own_pids=[pid], clock=iter(range(10_000)).__next__)
    for _ in range(min(ticks, nvml.n_ticks)):
        sampler.sample()
    return sampler


def make_app(settings: Settings, **overrides: Any) -> LlcudaApp:
    kw: dict[str, Any] = dict(
        gpu_sampler=no_gpu_sampler(),
        gpu_live=False,
        autoload=False,
        adopt_starters=False,  # tests that want the first run's starter entries ask for them
        fit_device=DeviceMemory("ram", "RAM", 16 * GIB, 32 * GIB),
        clock=lambda: FIXED_NOW,
    )
    kw.update(overrides)
    return LlcudaApp(settings, **kw)


async def wait_for(
    pilot: Any, condition: Callable[[], Any], timeout: float = 60.0, what: str = ""
) -> None:
    """Let the app run until ``condition()`` is true (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)
        await pilot.pause()


@pytest.fixture()
def app_settings(settings: Settings) -> Settings:
    return settings


class TinyWorkers:
    """Real workers of the tiny model on 127.0.0.1 (no API key, 2 slots of 2048 tokens);
    ``stop`` one and ``start(port=...)`` it again to see a worker go down and come back."""

    def __init__(self, model: Path) -> None:
        self.model = model
        self.running: list[WorkerServer] = []

    def start(self, port: int = 0, gpu_sampler: GpuSampler | None = None) -> WorkerServer:
        """``gpu_sampler``: what the worker's GPU endpoint reads (default: this machine's
        NVML, which has no GPU here), e.g. :func:`h100_sampler` to replay the recorded trace."""
        cfg = tiny_config(self.model, 4096, api_key=None, parallel=2)
        server = WorkerServer(cfg, Listen(port=port))
        if gpu_sampler is not None:
            server.state._gpu = gpu_sampler  # the worker creates its sampler on first use
        server.start()
        self.running.append(server)
        return server

    def stop(self, server: WorkerServer) -> int:
        """Stop ``server``; its port (to start it again on)."""
        port = int(server.url.rsplit(":", 1)[1])
        self.running.remove(server)
        server.stop()
        return port


@pytest.fixture()
def tiny_workers(tiny_gguf: Path) -> Iterator[TinyWorkers]:
    workers = TinyWorkers(tiny_gguf)
    yield workers
    for server in list(workers.running):
        workers.stop(server)


def notices(app: Any) -> list[str]:
    """The texts of the app's notifications so far."""
    return [str(n.message) for n in app._notifications]
