"""NVML failing mid-run, replayed from a recorded trace (no GPU needed): the H100 trace of
tests/data with every NVML call of some ticks answering NVML_ERROR_UNKNOWN.

The GPU sampler keeps its thread and its history, reports each failed sample as an 'error'
state with one line, and reads the GPU again once NVML answers. Benchmark telemetry marks a
repetition without readings ('telemetry_error', no J/token) instead of passing it as clean."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from llcuda_tui.core.bench import EnergyWindow, Telemetry
from llcuda_tui.core.gpu import GpuSample, GpuSampler, ReplayNvml

pytestmark = pytest.mark.timeout(30)

H100 = Path(__file__).resolve().parents[1] / "data" / "nvml_trace_h100.json"
NVML_ERROR_UNKNOWN = 999


def failing_trace(first: int, end: int) -> dict[str, Any]:
    """The H100 trace with ticks ``first`` to ``end - 1`` failing every call they make."""
    trace = json.loads(H100.read_text())
    assert len(trace["ticks"]) > end + 2
    for tick in trace["ticks"][first:end]:
        tick["calls"] = {key: {"__nvml_error__": NVML_ERROR_UNKNOWN} for key in tick["calls"]}
    return trace


def test_the_sampler_reports_the_failure_and_goes_on() -> None:
    nvml = ReplayNvml(failing_trace(3, 6))
    sampler = GpuSampler(0.1, nvml=nvml, history=100)
    got: list[GpuSample] = []
    done = threading.Event()

    def consume(sample: GpuSample) -> None:
        got.append(sample)
        if len(got) >= nvml.n_ticks + 2:
            done.set()

    sampler.start(consume)
    try:
        assert done.wait(10), "the sampler thread stopped"
    finally:
        sampler.close()
    states = [s.state for s in got]
    assert states[:3] == ["ok"] * 3 and states[3:6] == ["error"] * 3
    assert set(states[6:]) == {"ok"}  # reads the GPU again
    for failed in got[3:6]:
        assert failed.message == "NVML error: Unknown Error" and not failed.gpus
    ok = [s for s in got if s.ok]
    history = sampler.history(0)
    assert [g.energy_mj for g in history] == [s.gpus[0].energy_mj for s in ok]  # nothing lost
    assert history[3].energy_mj >= history[2].energy_mj  # the counter goes on across the gap
    assert sampler.callback_error is None


def test_bench_telemetry_flags_a_repetition_without_readings() -> None:
    sampler = GpuSampler(nvml=ReplayNvml(failing_trace(2, 4)))
    telemetry = Telemetry(sampler, [0])
    windows = []
    for _ in range(3):  # ticks 0-1 fine, 2-3 failing, 4-5 fine again
        window = EnergyWindow()
        a, b = telemetry.mark(), telemetry.mark()
        window.add(a, b, 100, 1.0, telemetry.between(a, b))
        windows.append(window.fields(True))
    before, during, after = windows
    for fine in (before, after):
        assert fine["valid"] and fine["validity_flags"] == []
        assert fine["energy_j"] is not None and fine["j_per_token"] is not None
    assert not during["valid"] and during["validity_flags"] == ["telemetry_error"]
    assert during["j_per_token"] is None and during["energy_j"] is None  # no made-up energy
    assert during["gpu_lost"] is False
