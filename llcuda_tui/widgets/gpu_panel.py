"""One GPU: live values, history plots, throttle reasons, processes, energy since start."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from llcuda_tui.widgets.metric_plot import MetricPlot

GIB = 2**30


def _na(value: Any, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _series(history: Sequence[Any], attr: str, scale: float = 1.0) -> list[float]:
    return [float(getattr(r, attr)) / scale for r in history if getattr(r, attr) is not None]


class GpuPanel(Vertical):
    """Renders a GpuReading and its recent history (``show``); holds no state of its own."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; border: round $primary; padding: 0 1; margin: 0 0 1 0; }
    GpuPanel > .title { text-style: bold; }
    GpuPanel > .throttle.-bad { color: $warning; text-style: bold; }
    GpuPanel > .lost { color: $error; }
    GpuPanel > .processes { color: $text-muted; }
    """

    def __init__(self, index: int, *, source: str = "", id: str | None = None) -> None:
        """``source``: where the GPU is (a worker's URL), shown first in the title; empty for
        this machine's."""
        super().__init__(id=id or f"gpu-{index}")
        self.index = index
        self.source = source

    def compose(self) -> ComposeResult:
        yield Static("", classes="title", markup=False)
        yield MetricPlot("utilisation", id="util")
        yield MetricPlot("memory", id="mem")
        yield MetricPlot("power", id="power")
        yield MetricPlot("temperature", id="temp")
        yield MetricPlot("SM clock", id="clock")
        yield Static("", classes="throttle", markup=False)
        yield Static("", classes="energy", markup=False)
        yield Static("", classes="processes", markup=False)

    def show(self, g: Any, history: Sequence[Any], energy_j: float | None, span_label: str) -> None:
        """``g``: the latest GpuReading; ``history``: readings over the selected span."""
        title = f"GPU {g.index} · {g.name or '?'} · {g.pci_bus_id or ''}"
        if self.source:
            title = f"{self.source} · {title}"
        if g.performance_state is not None:
            title += f" · P{g.performance_state}"
        if g.mig_enabled:
            title += " · MIG"
        if g.status != "ok":
            title += f" · {g.error or 'lost'}"
        self.query_one(".title", Static).update(f"{title}   (history: {span_label})")
        mem_total = g.memory_total_bytes
        self.query_one("#util", MetricPlot).show(
            _series(history, "utilization_gpu_pct"),
            f"{_na(g.utilization_gpu_pct)} % (mem {_na(g.utilization_memory_pct)} %)",
        )
        self.query_one("#mem", MetricPlot).show(
            _series(history, "memory_used_bytes", GIB),
            f"{_na(g.memory_used_bytes and g.memory_used_bytes / GIB, '{:.1f}')}"
            f"/{_na(mem_total and mem_total / GIB, '{:.0f}')} GiB",
        )
        self.query_one("#power", MetricPlot).show(
            _series(history, "power_w"),
            f"{_na(g.power_w, '{:.0f}')}/{_na(g.power_limit_w, '{:.0f}')} W",
        )
        self.query_one("#temp", MetricPlot).show(
            _series(history, "temperature_c"), f"{_na(g.temperature_c)} °C fan {_na(g.fan_pct)}"
        )
        self.query_one("#clock", MetricPlot).show(
            _series(history, "sm_clock_mhz"),
            f"{_na(g.sm_clock_mhz)}/{_na(g.sm_clock_max_mhz)} MHz mem {_na(g.memory_clock_mhz)}",
        )
        reasons = [r for r in (g.clock_event_reasons or ()) if r != "gpu_idle"]
        throttle = self.query_one(".throttle", Static)
        throttle.set_class(bool(g.power_capped or g.thermal_slowdown), "-bad")
        if g.clock_event_reasons is None:
            throttle.update("throttle reasons: n/a")
        else:
            idle = " (idle)" if "gpu_idle" in g.clock_event_reasons else ""
            throttle.update(f"throttle reasons: {', '.join(reasons) or 'none'}{idle}")
        energy = "n/a" if energy_j is None else _energy_text(energy_j)
        self.query_one(".energy", Static).update(f"energy since the app started: {energy}")
        mine = "◀ llcuda worker" if self.source else "◀ llcuda (this app)"
        self.query_one(".processes", Static).update(_processes_text(g, mine))


def _energy_text(joules: float) -> str:
    if joules >= 3.6e6:
        return f"{joules / 3.6e6:.2f} kWh"
    if joules >= 1000:
        return f"{joules / 1000:.1f} kJ"
    return f"{joules:.0f} J"


def _processes_text(g: Any, mine_label: str) -> str:
    if g.processes is None:
        return "processes: n/a"
    if not g.processes:
        return "processes: none"
    lines = ["processes:"]
    for p in sorted(g.processes, key=lambda p: -(p.used_memory_bytes or 0)):
        mem = "n/a" if p.used_memory_bytes is None else f"{p.used_memory_bytes / GIB:.2f} GiB"
        mine = f"  {mine_label}" if p.is_self else ""
        lines.append(f"  {p.pid:>7}  {p.name or '?':24} {mem:>10} {p.kind}{mine}")
    return "\n".join(lines)
