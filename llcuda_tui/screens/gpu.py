"""GPU: one panel per GPU from the app's sampler (live values, history plots, throttle
reasons, processes with ours marked, energy since the app started). No GPU: says why."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from llcuda_tui.widgets import GpuPanel

SPANS_S = ((30, "30 s"), (120, "2 min"), (600, "10 min"))
POLL_S = 1.0


class GpuScreen(Screen[None]):
    DEFAULT_CSS = """
    GpuScreen #gpu-header { height: auto; padding: 0 1; color: $text-muted; }
    GpuScreen #gpu-panels { height: 1fr; padding: 0 1; }
    GpuScreen #no-gpu { display: none; }
    GpuScreen.-no-gpu #no-gpu { display: block; }
    GpuScreen.-no-gpu #gpu-panels { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("s", "next_span", "History span")]

    def __init__(self) -> None:
        super().__init__()
        self.span_index = 1

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first GPU sample…", id="gpu-header", markup=False)
        yield Static("", id="no-gpu", classes="error-state", markup=False)
        yield VerticalScroll(id="gpu-panels")
        yield Footer()

    async def on_mount(self) -> None:
        self.set_interval(POLL_S, self.poll)
        await self.poll()

    async def on_screen_resume(self) -> None:
        await self.poll()

    async def action_next_span(self) -> None:
        self.span_index = (self.span_index + 1) % len(SPANS_S)
        await self.poll()

    @property
    def span(self) -> tuple[int, str]:
        return SPANS_S[self.span_index]

    async def poll(self) -> None:
        if not self.is_current:
            return
        app: Any = self.app
        sampler = app.gpu_sampler
        sample = sampler.latest
        if sample is None:
            return
        if not sample.ok or not sample.gpus:
            self.add_class("-no-gpu")
            reason = sample.message or sample.state
            self.query_one("#gpu-header", Static).update("GPU telemetry unavailable")
            self.query_one("#no-gpu", Static).update(
                f"No GPU telemetry: {reason}.\n\nEverything else works: models run on the CPU, "
                "and the Chat, Models and Benchmark screens are unaffected."
            )
            return
        self.remove_class("-no-gpu")
        span_s, span_label = self.span
        n_samples = max(2, int(span_s / sampler.interval_s))
        self.query_one("#gpu-header", Static).update(
            f"driver {sample.driver_version or '?'} · CUDA {sample.cuda_driver_version or '?'} · "
            f"NVML {sample.nvml_version or '?'} · {len(sample.gpus)} GPU(s) · "
            f"sampled every {sampler.interval_s:g} s · {sample.message or 'all GPUs answering'}"
        )
        panels = self.query_one("#gpu-panels", VerticalScroll)
        for g in sample.gpus:
            found = panels.query(f"#gpu-{g.index}")
            if found:
                panel = found.first(GpuPanel)
            else:
                panel = GpuPanel(g.index)
                await panels.mount(panel)
            history = sampler.history(g.index)
            panel.show(g, history[-n_samples:], self.energy_j(app, g, history), span_label)

    @staticmethod
    def energy_j(app: Any, g: Any, history: list[Any]) -> float | None:
        if g.energy_mj is None:
            return None
        first = next((r.energy_mj for r in history if r.energy_mj is not None), g.energy_mj)
        baseline = app.energy_baseline_mj.setdefault(g.index, first)
        return max(0, g.energy_mj - baseline) / 1000.0
