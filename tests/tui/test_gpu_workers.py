"""The GPU screen with attached workers (real ``llcuda serve`` workers on 127.0.0.1): a
worker's GPUs as panels titled with its URL (the worker replays the recorded H100 trace), a
worker without a GPU says so, and a worker that goes down says so and comes back."""

from __future__ import annotations

import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.gpu import GpuScreen
from llcuda_tui.widgets import GpuPanel
from tests.tui.conftest import SIZE, TinyWorkers, h100_sampler, make_app, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def text(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


def note_text(screen: GpuScreen, k: int) -> str:
    found = screen.query(f"#worker-{k}-note")
    return text(found.first()) if found and found.first().display else ""


async def test_worker_gpus_are_panels_titled_with_the_url(
    settings: Settings, tiny_workers: TinyWorkers
) -> None:
    gpu_worker = tiny_workers.start(gpu_sampler=h100_sampler())
    cpu_worker = tiny_workers.start()
    app = make_app(settings, start_screen="gpu", workers=[gpu_worker.url, cpu_worker.url])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, GpuScreen), what="gpu screen")
        screen = app.screen
        assert isinstance(screen, GpuScreen)
        await wait_for(pilot, lambda: screen.query("#worker-0-gpu-0"), what="remote panel")
        panel = screen.query_one("#worker-0-gpu-0", GpuPanel)
        title = text(panel.query_one(".title"))
        assert title.startswith(f"{gpu_worker.url} · GPU 0 · NVIDIA H100 80GB HBM3"), title
        assert "700 W" in text(panel.query_one("#power .value"))
        assert "sw_power_cap" in text(panel.query_one(".throttle"))
        assert "◀ llcuda worker" in text(panel.query_one(".processes"))
        assert not screen.query_one("#worker-0-note").display
        # this machine has no GPU (the app's sampler) and says so, above the workers' panels
        assert screen.has_class("-no-gpu")
        assert "2 worker(s)" in text(screen.query_one("#gpu-header"))
        # the second worker has no GPU: a note titled with its URL says so, and no panel
        await wait_for(pilot, lambda: note_text(screen, 1), what="no-GPU note")
        note = screen.query_one("#worker-1-note")
        assert note.border_title == f"worker {cpu_worker.url}"
        assert "no GPU telemetry" in note_text(screen, 1)
        assert not screen.query(".worker-1")


async def test_a_worker_that_goes_down_says_so_and_comes_back(
    settings: Settings, tiny_workers: TinyWorkers
) -> None:
    worker = tiny_workers.start(gpu_sampler=h100_sampler())
    app = make_app(settings, start_screen="gpu", workers=[worker.url])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, GpuScreen), what="gpu screen")
        screen = app.screen
        await wait_for(pilot, lambda: screen.query("#worker-0-gpu-0"), what="remote panel")
        port = tiny_workers.stop(worker)
        await wait_for(pilot, lambda: "is down" in note_text(screen, 0), 20, "down note")
        assert not screen.query("#worker-0-gpu-0")
        assert "cannot connect" in note_text(screen, 0)
        tiny_workers.start(port=port, gpu_sampler=h100_sampler())
        await wait_for(pilot, lambda: screen.query("#worker-0-gpu-0"), 20, "back")
        assert not screen.query_one("#worker-0-note").display
