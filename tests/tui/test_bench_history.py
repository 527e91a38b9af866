"""Bench History (issue #16, defect 8): marking a run with Space keeps the cursor on that
run; a throughput run and a latency run are not compared into an empty table; a run that
ends while Compare is open is shown; repetitions that disagree are flagged, and no p95 is
made of two values."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from textual.widgets import DataTable, Input, TabbedContent

from llcuda_tui.core.bench import BenchStore, StoredRun, summarize
from llcuda_tui.core.config import Settings
from llcuda_tui.messages import BenchDone, BenchSized
from llcuda_tui.screens.bench import FORM_DEFAULTS, BenchScreen
from tests.snapshots.test_snapshots import bench_runs
from tests.tui.conftest import SIZE, make_app, notices, wait_for
from tests.tui.test_bench import status

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_space_on_row_2_marks_it_and_the_cursor_stays(settings: Settings) -> None:
    with BenchStore.open(settings.paths) as bench:
        for run in bench_runs():
            bench.save_run(run)
    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        assert isinstance(screen, BenchScreen)
        history = screen.query_one("#history", DataTable)
        await wait_for(pilot, lambda: history.row_count == 2, what="two runs listed")
        screen.query_one(TabbedContent).active = "tab-history"
        history.focus()
        await wait_for(pilot, lambda: app.focused is history, what="history focused")
        await pilot.press("down")
        await wait_for(pilot, lambda: history.cursor_row == 1, what="row 2")
        second = screen.history_cursor_run()
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.marked == [second], what="row 2 marked")
        assert history.cursor_row == 1 and screen.history_cursor_run() == second
        assert history.get_row_at(1)[0] == "●" and history.get_row_at(0)[0] == ""


def latency_run() -> StoredRun:
    def stat(values: list[float]) -> dict[str, Any]:
        return summarize(values).to_dict()

    return StoredRun(
        "latency",
        {},
        {},
        latency={
            "model_name": "smollm2-135m-instruct",
            "model_filename": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "ttft_ms": stat([31.0, 35.0, 33.0, 40.0, 32.0]),
            "tpot_ms": stat([8.1, 8.3, 8.0, 8.2, 8.4]),
            "itl_ms": stat([8.0, 8.4, 8.1, 8.2, 8.3]),
            "e2e_ms": stat([300.0, 310.0, 305.0, 320.0, 301.0]),
            "output_throughput_tokens_per_s": 120.0,
        },
        created_at="2026-01-01T09:10:00+0000",
    )


def noisy_run() -> StoredRun:
    """Two repetitions 71 % apart ((171 - 100) / 100): not a clean measurement."""
    ts = [100.0, 171.0]
    row = {
        "test": "tg128",
        "model_name": "smollm2-135m-instruct",
        "model_filename": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "n_gpu_layers": 0,
        "n_batch": 2048,
        "avg_ts": sum(ts) / 2,
        "stddev_ts": 50.2,
        "samples_ts": ts,
        "validity_flags": [],
    }
    return StoredRun("throughput", {}, {}, results=[row], created_at="2026-01-01T09:20:00+0000")


@contextlib.asynccontextmanager
async def history_of(settings: Settings, runs: list[StoredRun]) -> AsyncIterator[Any]:
    """The Benchmark screen with ``runs`` stored and listed, the History tab focused: (pilot,
    screen, history)."""
    with BenchStore.open(settings.paths) as bench:
        for run in runs:
            bench.save_run(run)
    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        history = screen.query_one("#history", DataTable)
        await wait_for(pilot, lambda: history.row_count == len(runs), 20, "the runs listed")
        screen.query_one(TabbedContent).active = "tab-history"
        history.focus()
        await wait_for(pilot, lambda: app.focused is history, what="history focused")
        yield pilot, screen, history


async def test_a_throughput_and_a_latency_run_are_not_compared_silently(
    settings: Settings,
) -> None:
    async with history_of(settings, [*bench_runs(), latency_run()]) as (pilot, screen, _history):
        await pilot.press("space", "down", "space")  # run 3 (latency) and run 2 (throughput)
        await wait_for(pilot, lambda: screen.marked == [3, 2], 10, "two runs marked")
        await pilot.press("c")
        await wait_for(
            pilot, lambda: any("cannot be compared" in n for n in notices(screen.app)), 10
        )
        assert "run 3 is a latency run and run 2 a throughput run" in status(screen)
        assert screen.query_one(TabbedContent).active == "tab-history"  # no empty Compare tab
        # the sizing worker ending late (a loaded machine) resizes the fields: its estimate must
        # not replace the refusal (it did, and this test failed under load)
        screen.query_one("#n-prompt", Input).value = FORM_DEFAULTS["n-prompt"]
        screen.post_message(BenchSized(on_gpu=False))
        await wait_for(pilot, lambda: screen.query_one("#n-prompt", Input).value != "512", 10)
        await pilot.pause()
        assert "run 3 is a latency run and run 2 a throughput run" in status(screen)
        # two throughput runs still compare: unmark 2 and 3, mark 2 and 1
        await pilot.press("space", "up", "space")
        await wait_for(pilot, lambda: screen.marked == [], 10, "no run marked")
        await pilot.press("down", "space", "down", "space")
        await wait_for(pilot, lambda: screen.marked == [2, 1], 10, "runs 2 and 1 marked")
        await pilot.press("c")
        compare = screen.query_one("#compare", DataTable)
        await wait_for(pilot, lambda: compare.row_count > 0, what="compare rows")
        assert screen.query_one(TabbedContent).active == "tab-compare"
        labels = {compare.get_row_at(i)[1] for i in range(compare.row_count)}
        assert "t/s" in labels and "avg_ts" not in labels  # names a person reads


async def test_a_run_finishing_while_compare_is_open_is_shown(settings: Settings) -> None:
    async with history_of(settings, bench_runs()) as (pilot, screen, history):
        await pilot.press("space", "down", "space", "c")
        tabs = screen.query_one(TabbedContent)
        await wait_for(pilot, lambda: tabs.active == "tab-compare", what="compare open")
        with BenchStore.open(settings.paths) as bench:
            bench.save_run(noisy_run())
            run = bench.get_run("last")
        screen.post_message(BenchDone(run=run))  # what the benchmark's worker posts at its end
        await wait_for(pilot, lambda: tabs.active == "tab-results", 10, "the new run shown")
        assert screen.shown_run is not None and screen.shown_run.run_id == run.run_id
        await wait_for(pilot, lambda: history.row_count == 3, 10, "the new run in the history")


async def test_two_repetitions_71_percent_apart_are_flagged_noisy(settings: Settings) -> None:
    async with history_of(settings, [noisy_run()]) as (pilot, screen, _history):
        await pilot.press("enter")  # the run's results
        results = screen.query_one("#results", DataTable)
        await wait_for(pilot, lambda: results.row_count == 1, 10, "the run's results")
        row = results.get_row_at(0)
        assert row[5] == "2"  # repetitions
        assert row[7] == "n/a"  # no p95 from two values
        assert row[-1].startswith("noisy ±") and row[-1] != "ok"


async def test_latency_tails_need_enough_requests(settings: Settings) -> None:
    async with history_of(settings, [latency_run()]) as (pilot, screen, _history):
        await pilot.press("enter")
        results = screen.query_one("#results", DataTable)
        await wait_for(pilot, lambda: results.row_count == 5, 10, "the run's results")
        ttft = results.get_row_at(0)
        assert ttft[0] == "TTFT (ms)" and ttft[1] == "5"
        assert ttft[3] != "n/a" and ttft[4] == "n/a" and ttft[5] == "n/a"  # p50 yes, p95/p99 no
