"""The Benchmark screen against an attached worker (a real ``llcuda serve`` on 127.0.0.1):
the target selector lists it, latency mode runs there with N concurrent streams, the live
plot takes core's structured per-request values, and pp/tg on a worker is explained."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from textual.widgets import DataTable, Select

from llcuda_tui.core.bench import BenchStore
from llcuda_tui.core.config import Settings
from llcuda_tui.screens.bench import LOCAL, BenchScreen
from tests.tui.conftest import SIZE, TinyWorkers, make_app, wait_for
from tests.tui.test_bench import fill

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@contextlib.asynccontextmanager
async def bench_screen(settings: Settings, *workers: str) -> AsyncIterator[tuple[Any, BenchScreen]]:
    """The app on its Benchmark screen with ``workers`` attached: (pilot, screen)."""
    app = make_app(settings, start_screen="bench", workers=list(workers))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        assert isinstance(app.screen, BenchScreen)
        yield pilot, app.screen


def status(screen: BenchScreen) -> str:
    return str(screen.query_one("#bench-status").render())


async def test_latency_with_concurrency_on_a_worker(
    settings: Settings, tiny_workers: TinyWorkers
) -> None:
    worker = tiny_workers.start()
    async with bench_screen(settings, worker.url) as (pilot, screen):
        target = screen.query_one("#bench-target", Select)
        assert screen.target_values == [LOCAL, worker.url]
        # each key waits for the state it acts on: focus moves (to the selector, then to its
        # list) on a later tick, and a key pressed before that goes to another widget
        target.focus()
        await wait_for(pilot, lambda: screen.app.focused is target, what="target focused")
        await pilot.press("enter")
        overlay = target.query_one("SelectOverlay")  # the Select's option list
        await wait_for(pilot, lambda: screen.app.focused is overlay, what="target list open")
        await pilot.press("down")
        await wait_for(pilot, lambda: overlay.highlighted == 1, what="worker highlighted")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.target == worker.url, what="worker target")
        fill(screen, n_gen="8", reps="4", bench_concurrency="2")
        await pilot.press("ctrl+r")  # the default pp/tg mode loads models here: refused
        await wait_for(pilot, lambda: "latency mode only" in status(screen), what="refusal")
        screen.query_one("#bench-mode", Select).value = "latency"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: status(screen).startswith("run 1 done"), 90, "run")
        results = screen.query_one("#results", DataTable)
        rows = {results.get_row_at(i)[0]: results.get_row_at(i) for i in range(results.row_count)}
        assert rows["TTFT (ms)"][1] == "4" and rows["end-to-end (ms)"][2] != "n/a"
        # one TTFT per request from BenchProgress.value (no parsing of the message line)
        assert screen.progress.unit == "ms TTFT" and len(screen.progress.values) == 4
        assert all(v > 0 for v in screen.progress.values)
        assert screen.progress.done == screen.progress.total == 4
        with BenchStore.open(settings.paths) as store:
            run = store.get_run(1)
        assert run.mode == "concurrency" and run.latency["concurrency"] == 2
        assert run.latency["worker_url"] == worker.url and run.latency["backend"] == "CPU"
        assert run.latency["model_name"] == f"tiny @ {worker.url}"
        assert run.command == f"llcuda tui (latency on worker {worker.url})"
        # the worker served them: 2 warm-up requests and 4 timed ones
        assert len(worker.state.runs) == 6


async def test_a_worker_that_is_down_fails_the_run_with_a_reason(
    settings: Settings, tiny_workers: TinyWorkers
) -> None:
    worker = tiny_workers.start()
    async with bench_screen(settings, worker.url) as (pilot, screen):
        tiny_workers.stop(worker)
        screen.query_one("#bench-target", Select).value = worker.url
        screen.query_one("#bench-mode", Select).value = "latency"
        fill(screen, n_gen="4", reps="2")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "benchmark stopped" in status(screen), 30, "failure")
        assert "cannot connect to worker" in status(screen)
        assert screen.cancel_event is None  # ready for another run


async def test_a_worker_attached_on_the_screen_becomes_a_target(
    settings: Settings, tiny_workers: TinyWorkers
) -> None:
    worker = tiny_workers.start()
    async with bench_screen(settings) as (pilot, screen):
        assert screen.target_values == [LOCAL]
        message, ok = screen.app.attach_worker(worker.url)
        assert ok, message
        await wait_for(pilot, lambda: screen.target_values == [LOCAL, worker.url], what="target")
        screen.query_one("#bench-target", Select).value = worker.url
        assert screen.target == worker.url
