"""GPU telemetry during benchmark repetitions: energy at phase boundaries, validity.

The NVML energy counter is read right before and after each repetition (a quick read,
outside the timed region) and a 10 Hz background sampler adds readings inside long
repetitions. :class:`EnergyWindow` sums a test's repetitions into J/token with its sample
count, and flags a run that hit a power cap, thermal slowdown or lost its GPU.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llcuda_tui.core.bench._stats import mean
from llcuda_tui.core.gpu import GpuReading, GpuSample, GpuSampler

BENIGN_CLOCK_REASONS = frozenset(
    {"gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting"}
)
TELEMETRY_INTERVAL_S = 0.1

_CUDA_DEV = re.compile(r"\bCUDA(\d+)\b")


def engine_cuda_devices(backend: str) -> list[int]:
    """CUDA device numbers named in an engine's backend string (``CUDA0 (NVIDIA ...)``)."""
    return sorted({int(m) for m in _CUDA_DEV.findall(backend or "")})


def nvml_indices(cuda_devices: Sequence[int], sample: GpuSample) -> list[int]:
    """NVML indices of CUDA devices: matched by PCI bus id through the CUDA runtime, else
    through CUDA_VISIBLE_DEVICES, else assumed equal (CUDA and NVML both in PCI order)."""
    if not cuda_devices or not sample.ok:
        return []
    by_bus = _indices_by_bus_id(cuda_devices, sample)
    if by_bus is not None:
        return by_bus
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    out = []
    for dev in cuda_devices:
        idx = dev
        if visible != [""] and dev < len(visible):
            entry = visible[dev]
            if entry.isdigit():
                idx = int(entry)
            else:
                idx = next((g.index for g in sample.gpus if g.uuid and entry in g.uuid), dev)
        if sample.gpu(idx) is not None:
            out.append(idx)
    return out


def _indices_by_bus_id(cuda_devices: Sequence[int], sample: GpuSample) -> list[int] | None:
    from llcuda_tui.core.gpu import CudaUnavailable, normalize_bus_id, pci_bus_id

    try:
        wanted = [normalize_bus_id(pci_bus_id(d)) for d in cuda_devices]
    except CudaUnavailable:
        return None
    out = []
    for bus in wanted:
        for g in sample.gpus:
            if bus is not None and g.pci_bus_id and normalize_bus_id(g.pci_bus_id) == bus:
                out.append(g.index)
    return out if len(out) == len(cuda_devices) else None


# --- telemetry during a test ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    t: float
    energy_mj: int | None
    readings: tuple[GpuReading, ...]


class Telemetry:
    """NVML readings of the engine's GPUs: a quick read at each phase boundary, plus a
    background sampler for readings inside long repetitions."""

    def __init__(self, sampler: GpuSampler | None, indices: list[int]) -> None:
        self.sampler = sampler if indices else None
        self.indices = indices

    @property
    def active(self) -> bool:
        return self.sampler is not None

    def mark(self) -> Mark:
        now = time.monotonic()
        if self.sampler is None:
            return Mark(now, None, ())
        s = self.sampler.quick(self.indices)
        seen = {g.index: g for g in s.gpus if g.index in self.indices}
        # a GPU NVML could not read this time (NVML failing mid-run) is a reading too, so the
        # row is flagged rather than looking clean with its telemetry missing
        failed = s.message or f"NVML gave no reading ({s.state})"
        readings = tuple(
            seen.get(i) or GpuReading(i, status="error", error=failed) for i in self.indices
        )
        energies = [g.energy_mj for g in readings]
        ok = len(energies) == len(self.indices) and all(e is not None for e in energies)
        total = sum(e for e in energies if e is not None) if ok else None
        return Mark(now, total, readings)

    def between(self, a: Mark, b: Mark) -> list[GpuReading]:
        """Readings taken from ``a`` to ``b`` (both marks included)."""
        if self.sampler is None:
            return []
        inside = [
            g
            for s in self.sampler.samples()
            if a.t <= s.time_s <= b.t
            for g in s.gpus
            if g.index in self.indices
        ]
        return [*a.readings, *inside, *b.readings]

    def start(self) -> None:
        if self.sampler is not None:
            self.sampler.start()

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()


@dataclass
class EnergyWindow:
    """What the GPU did during the repetitions of one test."""

    readings: list[GpuReading] = field(default_factory=list)
    energy_mj: float = 0.0
    energy_tokens: int = 0
    energy_seconds: float = 0.0
    energy_reps: int = 0
    energy_updates_seen: int = 0
    energy_ok: bool = True

    def add(self, a: Mark, b: Mark, tokens: int, seconds: float, readings: list) -> None:
        self.readings.extend(readings)
        if a.energy_mj is None or b.energy_mj is None:
            self.energy_ok = False
            return
        delta = b.energy_mj - a.energy_mj
        if delta < 0:  # counter reset (driver reload): this repetition can't be used
            return
        self.energy_mj += delta
        self.energy_tokens += tokens
        self.energy_seconds += seconds
        self.energy_reps += 1
        self.energy_updates_seen += delta > 0

    def fields(self, active: bool) -> dict[str, Any]:
        out = validity_fields(self.readings, active)
        usable = active and self.energy_ok and self.energy_reps > 0 and self.energy_tokens > 0
        energy_j = self.energy_mj / 1000.0 if usable else None
        out.update(
            energy_j=energy_j,
            energy_tokens=self.energy_tokens if usable else None,
            energy_samples=self.energy_reps if usable else 0,
            energy_updates_seen=self.energy_updates_seen if usable else 0,
            energy_window_s=self.energy_seconds if usable else None,
            j_per_token=energy_j / self.energy_tokens if energy_j is not None else None,
            tokens_per_j=(self.energy_tokens / energy_j) if energy_j else None,
            energy_power_w=(energy_j / self.energy_seconds)
            if energy_j is not None and self.energy_seconds > 0
            else None,
        )
        return out


def validity_fields(readings: list[GpuReading], active: bool) -> dict[str, Any]:
    """Clocks, temperature, power and throttle reasons seen, and whether the run is clean."""
    if not active:
        return {
            "sm_clock_mhz_min": None,
            "sm_clock_mhz_mean": None,
            "temperature_c_max": None,
            "power_w_mean": None,
            "power_w_max": None,
            "power_limit_w": None,
            "clock_event_reasons": [],
            "power_capped": None,
            "thermal_slowdown": None,
            "gpu_lost": None,
            "valid": True,
            "validity_flags": [],
            "telemetry_samples": 0,
        }
    ok = [g for g in readings if g.status == "ok"]
    clocks = [g.sm_clock_mhz for g in ok if g.sm_clock_mhz is not None]
    temps = [g.temperature_c for g in ok if g.temperature_c is not None]
    power = [g.power_w for g in ok if g.power_w is not None]
    limits = [g.power_limit_w for g in ok if g.power_limit_w is not None]
    reasons = sorted({r for g in ok for r in (g.clock_event_reasons or ())} - BENIGN_CLOCK_REASONS)
    power_capped = any(g.power_capped for g in ok)
    thermal = any(g.thermal_slowdown for g in ok)
    lost = any(g.status == "lost" for g in readings)
    unread = any(g.status not in ("ok", "lost") for g in readings)
    flags = [
        name
        for name, hit in (
            ("power_cap", power_capped),
            ("thermal_slowdown", thermal),
            ("gpu_lost", lost),
            ("telemetry_error", unread),
        )
        if hit
    ]
    return {
        "sm_clock_mhz_min": min(clocks) if clocks else None,
        "sm_clock_mhz_mean": mean(clocks),
        "temperature_c_max": max(temps) if temps else None,
        "power_w_mean": mean(power),
        "power_w_max": max(power) if power else None,
        "power_limit_w": max(limits) if limits else None,
        "clock_event_reasons": reasons,
        "power_capped": power_capped,
        "thermal_slowdown": thermal,
        "gpu_lost": lost,
        "valid": not flags,
        "validity_flags": flags,
        "telemetry_samples": len(readings),
    }
