"""GPU telemetry. Without a GPU the sampler runs against recorded NVML traces (tests/data, the
one place a fake NVML is used); the @gpu tests run against the real NVML on the device."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest

from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.gpu import (
    GpuSampler,
    RecordingNvml,
    ReplayNvml,
    check_interval,
    decode_clock_event_reasons,
    snapshot,
)

DATA = Path(__file__).resolve().parent.parent / "data"
H100 = DATA / "nvml_trace_h100.json"
MIG_LOST = DATA / "nvml_trace_mig_lost.json"
GIB = 2**30


def _replay(path: Path) -> ReplayNvml:
    return ReplayNvml.load(path)


def _recorded_pid(path: Path) -> int:
    return int(json.loads(path.read_text())["meta"].get("recorded_pid", -1))


def _run_trace(path: Path, **kw) -> tuple[GpuSampler, list]:
    nvml = _replay(path)
    sampler = GpuSampler(nvml=nvml, own_pids=[_recorded_pid(path)], **kw)
    samples = [sampler.sample() for _ in range(nvml.n_ticks)]
    return sampler, samples


pytestmark = pytest.mark.timeout(30)


def test_h100_trace_values_are_decoded() -> None:
    _, samples = _run_trace(H100)
    assert all(s.state == "ok" and s.message == "" for s in samples)
    first, capped = samples[0], samples[6]
    g = first.gpus[0]
    assert g.name == "NVIDIA H100 80GB HBM3" and g.uuid and g.uuid.startswith("GPU-")
    assert first.driver_version == "580.159.04" and first.cuda_driver_version == "13.0"
    assert g.power_w == pytest.approx(71.2) and g.power_limit_w == pytest.approx(700.0)
    assert g.memory_total_bytes == 80 * GIB
    assert g.fan_pct is None  # NVML: not supported on this board -> n/a, not an error
    assert g.clock_event_reasons == ("gpu_idle",) and not g.power_capped
    c = capped.gpus[0]
    assert c.clock_event_reasons == ("sw_power_cap",)
    assert c.power_capped and not c.thermal_slowdown
    assert c.sm_clock_mhz == 1755 and c.sm_clock_max_mhz == 1980
    assert c.pcie_tx_kb_per_s is not None and c.pcie_rx_kb_per_s is not None


def test_energy_counter_is_monotonic_and_steps() -> None:
    _, samples = _run_trace(H100)
    energy = [s.gpus[0].energy_mj for s in samples]
    assert all(isinstance(e, int) for e in energy)
    assert energy == sorted(energy)
    # the counter updates less often than we sample: some deltas are zero
    deltas = [b - a for a, b in itertools.pairwise(energy)]
    assert 0 in deltas and max(deltas) > 0


def test_own_process_is_marked_with_its_memory() -> None:
    _, samples = _run_trace(H100)
    loaded = samples[4].gpus[0]
    mine = [p for p in loaded.processes or () if p.is_self]
    assert len(mine) == 1 and mine[0].name == "python3"
    assert loaded.self_memory_bytes == mine[0].used_memory_bytes > 5 * GIB
    other = [p for p in loaded.processes or () if not p.is_self]
    assert other and other[0].name == "llama-server"
    idle = samples[0].gpus[0]
    assert idle.self_memory_bytes == 0  # known: nothing of ours on the GPU yet


def test_this_process_is_always_ours() -> None:
    assert os.getpid() in GpuSampler()._own_pids


def test_history_is_a_bounded_ring_per_gpu() -> None:
    sampler, samples = _run_trace(H100, history=5)
    hist = sampler.history(0)
    assert len(hist) == 5
    assert hist[-1] == samples[-1].gpus[0]
    assert len(sampler.samples()) == 5
    assert sampler.history(7) == []
    times = [s.time_s for s in sampler.samples()]
    assert times == sorted(times)


def test_static_facts_are_read_once() -> None:
    nvml = _replay(H100)
    sampler = GpuSampler(nvml=nvml)
    for _ in range(5):
        sampler.sample()
    assert sum(c.startswith("nvmlDeviceGetName|") for c in nvml.calls) == 1
    assert sum(c.startswith("nvmlDeviceGetCount") for c in nvml.calls) == 5


def test_quick_sample_skips_processes_and_pcie() -> None:
    nvml = _replay(H100)
    sampler = GpuSampler(nvml=nvml)
    q = sampler.quick([0])
    g = q.gpus[0]
    assert g.processes is None and g.pcie_tx_kb_per_s is None
    assert g.energy_mj is not None and g.clock_event_reasons is not None
    assert not any("RunningProcesses" in c or "Pcie" in c for c in nvml.calls)
    assert sampler.latest is None  # quick samples stay out of the history


def test_mig_gpu_reports_na_and_instances() -> None:
    _, samples = _run_trace(MIG_LOST)
    g0 = samples[0].gpus[0]
    assert g0.mig_enabled is True
    assert g0.utilization_gpu_pct is None and g0.utilization_memory_pct is None
    assert g0.processes is None  # no permission: n/a
    assert [m.index for m in g0.mig_devices] == [0, 1]
    assert g0.mig_devices[0].memory_total_bytes == 40 * GIB
    g1 = samples[0].gpus[1]
    assert g1.mig_enabled is None
    # older drivers: the clock event call is missing, the throttle-reasons call answers
    assert g1.clock_event_reasons == ("gpu_idle",)
    assert g1.energy_mj is None and g1.fan_pct == 30


def test_lost_gpu_is_reported_and_sampling_goes_on() -> None:
    sampler, samples = _run_trace(MIG_LOST)
    before, after = samples[1], samples[2]
    assert before.gpus[1].status == "ok"
    lost = after.gpus[1]
    assert lost.status == "lost" and lost.error and "lost" in lost.error.lower()
    assert lost.name == "NVIDIA A100-SXM4-80GB"  # kept from before the loss
    assert after.state == "ok" and "GPU 1" in after.message
    assert after.gpus[0].status == "ok"  # the other GPU is still sampled
    again = sampler.sample()
    assert again.gpus[1].status == "lost" and again.gpus[0].status == "ok"


def _no_driver_trace() -> dict:
    return {"format": 1, "init_error": 9, "setup": {}, "ticks": []}


def test_no_driver_is_a_state_not_an_error() -> None:
    nvml = ReplayNvml(_no_driver_trace())
    s = GpuSampler(nvml=nvml).sample()
    assert s.state == "unavailable" and not s.ok and s.gpus == ()
    assert s.message.startswith("no NVIDIA GPU found") and "Driver Not Loaded" in s.message
    assert s.to_dict()["gpu_count"] == 0


def test_init_is_retried_only_after_retry_s() -> None:
    now = [100.0]
    nvml = ReplayNvml(_no_driver_trace())
    sampler = GpuSampler(nvml=nvml, retry_s=5.0, clock=lambda: now[0])
    for _ in range(3):
        sampler.sample()
    assert nvml.calls.count("nvmlInit") == 1
    now[0] += 6
    sampler.sample()
    assert nvml.calls.count("nvmlInit") == 2


def test_other_nvml_init_error_is_an_error_state() -> None:
    nvml = ReplayNvml({"format": 1, "init_error": 999, "setup": {}, "ticks": []})
    s = GpuSampler(nvml=nvml).sample()
    assert s.state == "error" and s.message.startswith("NVML error:")


def test_no_devices_listed() -> None:
    trace = {"format": 1, "init_error": None, "setup": {},
             "ticks": [{"t": 0, "calls": {"nvmlDeviceGetCount": 0}}]}  # fmt: skip
    s = GpuSampler(nvml=ReplayNvml(trace)).sample()
    assert s.state == "unavailable" and "no NVIDIA GPU found" in s.message


def test_missing_binding_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    s = GpuSampler().sample()
    assert s.state == "unavailable" and "nvidia-ml-py" in s.message


def test_background_thread_samples_and_survives_a_bad_consumer() -> None:
    nvml = _replay(H100)
    sampler = GpuSampler(0.1, nvml=nvml)
    got = []
    done = threading.Event()

    def consume(sample) -> None:
        got.append(sample)
        if len(got) >= 4:
            done.set()
        if len(got) == 1:
            raise RuntimeError("consumer bug")

    sampler.start(consume)
    assert done.wait(5)
    sampler.close()
    assert isinstance(sampler.callback_error, RuntimeError)
    assert len(sampler.samples()) >= 4
    gaps = [b.time_s - a.time_s for a, b in itertools.pairwise(got)]
    assert all(g > 0.05 for g in gaps)
    n = len(sampler.samples())
    time.sleep(0.3)
    assert len(sampler.samples()) == n  # stopped


class _BrokenBinding(ReplayNvml):
    def nvmlDeviceGetCount(self) -> int:
        raise RuntimeError("binding surprise")


def test_an_unexpected_binding_error_is_a_state() -> None:
    s = GpuSampler(nvml=_BrokenBinding(json.loads(H100.read_text()))).sample()
    assert s.state == "error" and "binding surprise" in s.message


def test_interval_bounds() -> None:
    assert check_interval(0.1) == 0.1
    for bad in (0.05, 0.0, -1.0, 61.0):
        with pytest.raises(UserInputError, match=r"between 0\.1 and 60"):
            check_interval(bad)
    with pytest.raises(UserInputError):
        GpuSampler(0.01)


def test_clock_event_reasons_decode() -> None:
    assert decode_clock_event_reasons(0) == ()
    assert decode_clock_event_reasons(0x4 | 0x40) == ("sw_power_cap", "hw_thermal_slowdown")
    assert decode_clock_event_reasons(0x1000)[-1] == "unknown_0x1000"


def test_sample_is_json_serialisable() -> None:
    _, samples = _run_trace(MIG_LOST)
    for s in samples:
        d = json.loads(json.dumps(s.to_dict()))
        assert d["state"] == "ok" and len(d["gpus"]) == 2
        assert {"energy_mj", "clock_event_reasons", "processes", "self_memory_bytes"} <= set(
            d["gpus"][0]
        )


def test_recording_replays_to_the_same_samples(tmp_path: Path) -> None:
    """The recorder stores what NVML answered (values, errors, handles) so that a replay
    gives the sampler exactly what it saw."""
    recorder = RecordingNvml(_replay(MIG_LOST))
    live = GpuSampler(nvml=recorder)
    seen = [live.sample() for _ in range(4)]
    out = tmp_path / "trace.json"
    recorder.save(out)
    assert len(json.loads(out.read_text())["ticks"]) == 4
    replay = GpuSampler(nvml=ReplayNvml.load(out))
    again = [replay.sample() for _ in range(4)]
    for a, b in zip(seen, again, strict=True):
        assert a.gpus == b.gpus and a.state == b.state and a.message == b.message


def test_snapshot_helper_releases_nvml() -> None:
    nvml = _replay(H100)
    s = snapshot(nvml=nvml)
    assert s.ok and nvml.calls[-1] == "nvmlShutdown"


# --- real NVML (GPU machine) ------------------------------------------------------------------


@pytest.mark.gpu
def test_real_snapshot_has_energy_clocks_and_reasons() -> None:
    s = snapshot()
    assert s.state == "ok", s.message
    g = s.gpus[0]
    assert g.name and g.uuid and g.memory_total_bytes and g.memory_total_bytes > GIB
    assert isinstance(g.energy_mj, int) and g.energy_mj > 0
    assert g.sm_clock_mhz and g.sm_clock_mhz > 0 and g.power_w and g.power_w > 0
    assert isinstance(g.clock_event_reasons, tuple)
    assert s.driver_version


@pytest.mark.gpu
def test_real_energy_counter_advances_under_load(gpu_model: Path) -> None:
    from llcuda_tui.core.engine import Engine, EngineConfig

    sampler = GpuSampler(processes=True)
    with Engine.load(EngineConfig(gpu_model, backend_sampling="off")) as eng:
        before = sampler.quick([0]).gpus[0].energy_mj
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            eng.bench_prompt(512)
        after = sampler.quick([0]).gpus[0].energy_mj
        loaded = sampler.sample()
    sampler.close()
    assert before is not None and after is not None and after > before
    g = loaded.gpus[0]
    assert g.processes is not None, "NVML lists no processes here"
    mine = [p for p in g.processes if p.is_self]
    assert mine, (
        f"this process (pid {os.getpid()}) is not among the GPU's processes "
        f"{[p.pid for p in g.processes]} (PID namespace?)"
    )
    assert (g.self_memory_bytes or 0) > 0


@pytest.mark.gpu
def test_real_nvml_record_and_replay(tmp_path: Path) -> None:
    import pynvml

    recorder = RecordingNvml(pynvml)
    live = GpuSampler(nvml=recorder)
    seen = [live.sample() for _ in range(3)]
    live.close()
    out = Path(os.environ.get("LLCUDA_TRACE_OUT", tmp_path / "h100.json"))
    recorder.trace["meta"]["recorded_pid"] = os.getpid()
    recorder.save(out)
    replay = GpuSampler(nvml=ReplayNvml.load(out))
    again = [replay.sample() for _ in range(3)]
    for a, b in zip(seen, again, strict=True):
        assert a.gpus == b.gpus


RECORDED = DATA / "nvml_trace_h100_recorded.json"
"""Recorded from the real NVML on the H100 machine (test_real_nvml_record_and_replay,
2026-11-22, driver 580.159.04); the other traces are written in the recorder's format."""


def test_recorded_h100_trace_replays_to_real_values() -> None:
    _, samples = _run_trace(RECORDED)
    assert len(samples) == 3 and all(s.state == "ok" for s in samples)
    for s in samples:
        g = s.gpus[0]
        assert g.name == "NVIDIA H100 80GB HBM3" and g.uuid and g.uuid.startswith("GPU-")
        assert g.memory_total_bytes and g.memory_total_bytes > 79 * GIB
        assert g.power_limit_w == pytest.approx(700.0)
        assert g.sm_clock_mhz and g.sm_clock_mhz > 0
        assert g.temperature_c is not None and 10 < g.temperature_c < 100
    energies = [s.gpus[0].energy_mj for s in samples]
    assert all(e is not None for e in energies)
    assert energies == sorted(energies)  # the counter only grows
    assert samples[0].driver_version == "580.159.04"
