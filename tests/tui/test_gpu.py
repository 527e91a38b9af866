"""The GPU screen on a recorded H100 trace (NVML replay): values, plots, throttle reasons,
our process marked, energy since start, the history span."""

from __future__ import annotations

import pytest
from textual.widgets import Sparkline

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.gpu import GpuScreen
from llcuda_tui.widgets import GpuPanel
from tests.tui.conftest import SIZE, h100_sampler, make_app, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def text(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


async def test_gpu_panel_shows_the_trace(settings: Settings) -> None:
    app = make_app(settings, gpu_sampler=h100_sampler(), start_screen="gpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, GpuScreen), what="gpu screen")
        screen = app.screen
        assert isinstance(screen, GpuScreen)
        await wait_for(pilot, lambda: screen.query(GpuPanel), what="panel")
        panel = screen.query_one(GpuPanel)
        await wait_for(pilot, lambda: "H100" in text(panel.query_one(".title")), what="values")
        assert "driver 580.159.04 · CUDA 13.0" in text(screen.query_one("#gpu-header"))
        assert "NVIDIA H100 80GB HBM3" in text(panel.query_one(".title"))
        assert "sw_power_cap" in text(panel.query_one(".throttle"))
        assert panel.query_one(".throttle").has_class("-bad")
        assert "700 W" in text(panel.query_one("#power .value"))
        processes = text(panel.query_one(".processes"))
        mine = [line for line in processes.splitlines() if "llcuda (this app)" in line]
        assert len(mine) == 1 and "python3" in mine[0]
        assert "llama-server" in processes
        assert "energy since the app started:" in text(panel.query_one(".energy"))
        assert not text(panel.query_one(".energy")).endswith("n/a")
        assert len(panel.query_one("#power Sparkline", Sparkline).data) == 9
        await pilot.press("s")  # the span action polls again: wait for that, not for the key
        await wait_for(pilot, lambda: "history: 10 min" in text(panel.query_one(".title")))
        await pilot.press("f1")
        await wait_for(pilot, lambda: app.current_mode == "chat")
