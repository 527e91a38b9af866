"""`llcuda gpu`: GPU telemetry through NVML: one snapshot, JSON, a live view, or a raw trace.

No NVIDIA GPU (or no driver, or no NVML) is not an error here: the output says so and the
command exits 0. An NVML failure exits 1 after printing what it could.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.gpu import DEFAULT_INTERVAL_S

if TYPE_CHECKING:  # the parser imports this module: the sampler loads in run
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.gpu import GpuReading, GpuSample, GpuSampler

GIB = 2**30
SPARKS = "▁▂▃▄▅▆▇█"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gpu",
        help="GPU telemetry (NVML): utilisation, memory, power, energy, clocks, throttling",
        description=__doc__,
    )
    p.add_argument("--json", action="store_true", help="print JSON (one object per sample)")
    p.add_argument("--watch", action="store_true", help="keep sampling: a live view")
    p.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="S",
        help=f"seconds between samples (0.1-60, default {DEFAULT_INTERVAL_S})",
    )
    p.add_argument(
        "--count", type=int, default=0, metavar="N", help="stop after N samples (0 = until Ctrl-C)"
    )
    p.add_argument(
        "--no-pcie", action="store_true", help="skip PCIe throughput (it costs ~20 ms per GPU)"
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="write a raw NVML trace (for the sampler's tests) of --count samples (default 20)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.gpu import GpuSampler, check_interval

    interval = check_interval(args.interval)
    if args.count < 0:
        raise UserInputError("--count must be >= 0")
    if args.record is not None:
        return _record(args.record, args.count or 20, interval, not args.no_pcie)
    with GpuSampler(interval, pcie=not args.no_pcie) as sampler:
        if not args.watch:
            sample = sampler.sample()
            _emit(sample, sampler, args.json, live=False)
            return _exit_code(sample)
        return _watch(sampler, args.json, args.count, interval)


def _exit_code(sample: GpuSample) -> int:
    return 1 if sample.state == "error" else 0


def _emit(sample: GpuSample, sampler: GpuSampler, as_json: bool, live: bool) -> None:
    if as_json:
        data = {**sample.to_dict(), "self_pid": os.getpid()}
        print(json.dumps(data, indent=None if live else 2), flush=True)
    else:
        text = format_sample(sample, sampler.history if live else None)
        if live and sys.stdout.isatty():
            text = "\x1b[H\x1b[2J" + text  # home + clear: redraw in place
        print(text, flush=True)


def _watch(sampler: GpuSampler, as_json: bool, count: int, interval: float) -> int:
    n = 0
    next_t = time.monotonic()
    sample = None
    try:
        while count == 0 or n < count:
            sample = sampler.sample()
            _emit(sample, sampler, as_json, live=True)
            n += 1
            if count and n >= count:
                break
            next_t += interval
            time.sleep(max(0.0, next_t - time.monotonic()))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends
    return _exit_code(sample) if sample is not None else 0


def _record(path: Path, count: int, interval: float, pcie: bool) -> int:
    from llcuda_tui.core.gpu import GpuSampler, RecordingNvml

    try:
        import pynvml
    except ImportError:
        raise UserInputError("--record needs nvidia-ml-py (pip install nvidia-ml-py)") from None
    recorder = RecordingNvml(pynvml, meta={"interval_s": interval, "samples": count})
    with GpuSampler(interval, nvml=recorder, pcie=pcie) as sampler:
        sample = sampler.sample()
        if sample.state != "ok":
            raise LlcudaError(f"nothing to record: {sample.message}")
        for _ in range(count - 1):
            time.sleep(interval)
            sampler.sample()
    recorder.trace["meta"]["recorded_pid"] = os.getpid()
    recorder.save(path)
    print(f"wrote {len(recorder.trace['ticks'])} samples to {path}")
    return 0


# --- text rendering -----------------------------------------------------------------------------


def _na(value: object, fmt: str = "{}", unit: str = "") -> str:
    return "n/a" if value is None else fmt.format(value) + unit


def spark(values: list[float], lo: float = 0.0, hi: float | None = None) -> str:
    """A one-line bar chart of ``values`` (None values as spaces)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    top = hi if hi is not None else max(vals)
    span = (top - lo) or 1.0
    out = []
    for v in values:
        if v is None:
            out.append(" ")
            continue
        k = int((min(max(v, lo), top) - lo) / span * (len(SPARKS) - 1))
        out.append(SPARKS[k])
    return "".join(out)


def format_sample(
    sample: GpuSample, history: Callable[[int], list[GpuReading]] | None = None
) -> str:
    """The snapshot as text (with sparklines of recent samples when ``history`` is given)."""
    if sample.state != "ok":
        return sample.message
    head = (
        f"NVIDIA driver {_na(sample.driver_version)}, CUDA {_na(sample.cuda_driver_version)}, "
        f"{len(sample.gpus)} GPU(s)"
    )
    lines = [head]
    for g in sample.gpus:
        lines += _format_gpu(g, history(g.index)[-40:] if history else None)
    return "\n".join(lines)


def _format_gpu(g: GpuReading, recent: list[GpuReading] | None) -> list[str]:
    title = f"GPU {g.index}  {_na(g.name)}  {_na(g.uuid)}  {_na(g.pci_bus_id)}"
    if g.status != "ok":
        return ["", title, f"  {g.error}"]
    mem = (
        f"{g.memory_used_bytes / GIB:.1f} / {g.memory_total_bytes / GIB:.1f} GiB"
        if g.memory_used_bytes is not None and g.memory_total_bytes is not None
        else "n/a"
    )
    reasons = ", ".join(g.clock_event_reasons) if g.clock_event_reasons else "none"
    if g.clock_event_reasons is None:
        reasons = "n/a"
    flags = [
        f for f, hit in (("POWER CAP", g.power_capped), ("THERMAL", g.thermal_slowdown)) if hit
    ]
    lines = [
        "",
        title + ("  [MIG]" if g.mig_enabled else ""),
        f"  util      GPU {_na(g.utilization_gpu_pct, unit=' %')}, "
        f"memory {_na(g.utilization_memory_pct, unit=' %')}   "
        f"P{_na(g.performance_state)}",
        f"  memory    {mem}",
        f"  temp      {_na(g.temperature_c, unit=' °C')}   fan {_na(g.fan_pct, unit=' %')}",
        f"  power     {_na(g.power_w, '{:.1f}')} / {_na(g.power_limit_w, '{:.1f}')} W   "
        f"energy {_na(None if g.energy_mj is None else g.energy_mj / 1000, '{:.1f}', ' J')}",
        f"  clocks    SM {_na(g.sm_clock_mhz)} / {_na(g.sm_clock_max_mhz)} MHz, "
        f"memory {_na(g.memory_clock_mhz, unit=' MHz')}",
        f"  PCIe      TX {_na(g.pcie_tx_kb_per_s, unit=' KB/s')}, "
        f"RX {_na(g.pcie_rx_kb_per_s, unit=' KB/s')}",
        f"  throttle  {reasons}" + (f"   ({', '.join(flags)})" if flags else ""),
    ]
    if recent:
        util = [r.utilization_gpu_pct for r in recent]
        power = [r.power_w for r in recent]
        lines.append(f"  util  {spark(util, 0, 100)}")  # type: ignore[arg-type]
        lines.append(f"  power {spark(power, 0, g.power_limit_w)}")  # type: ignore[arg-type]
    for m in g.mig_devices:
        used = _na(None if m.memory_used_bytes is None else m.memory_used_bytes / GIB, "{:.1f}")
        total = _na(None if m.memory_total_bytes is None else m.memory_total_bytes / GIB, "{:.1f}")
        lines.append(f"  MIG {m.index}     {_na(m.uuid)}  {used} / {total} GiB")
    if g.processes is None:
        lines.append("  processes n/a")
    elif g.processes:
        lines.append("  processes")
        for p in g.processes:
            mem_p = _na(
                None if p.used_memory_bytes is None else p.used_memory_bytes / GIB, "{:.2f}", " GiB"
            )
            mine = "  (this process)" if p.is_self else ""
            lines.append(f"    {p.pid:>7}  {_na(p.name):<20} {mem_p}{mine}")
    else:
        lines.append("  processes none")
    return lines
