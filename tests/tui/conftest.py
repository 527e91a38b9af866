"""Helpers for driving the app in Pilot sessions: an app with injected, deterministic
services (no live GPU sampling, a fixed fit device, a fixed clock), and waiting on state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.app import LlcudaApp
from llcuda_tui.core.config import Settings
from llcuda_tui.core.fit import DeviceMemory
from llcuda_tui.core.gpu import GpuSampler
from llcuda_tui.core.nvml_trace import ReplayNvml

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
