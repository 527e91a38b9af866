"""The Benchmark screen: a real (tiny) pp/tg run with progress, results, history, compare
and export; bad parameters are explained."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Select, TabbedContent

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.store import Store
from llcuda_tui.screens.bench import BenchScreen
from tests.tui.conftest import SIZE, make_app, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


def status(screen: BenchScreen) -> str:
    return str(screen.query_one("#bench-status").render())


def fill(screen: BenchScreen, **values: str) -> None:
    for field_id, value in values.items():
        screen.query_one(f"#{field_id.replace('_', '-')}", Input).value = value


@contextlib.asynccontextmanager
async def bench_with_tiny(settings: Settings, tiny_gguf: Path) -> AsyncIterator[tuple[Any, Any]]:
    """The app on the Benchmark screen with the tiny model in the store and picked:
    (pilot, screen)."""
    Store(Paths.from_env()).import_path(tiny_gguf, name="tiny-llama")
    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        assert isinstance(screen, BenchScreen)
        await wait_for(pilot, lambda: "tiny-llama" in screen.choices, what="models")
        yield pilot, screen


async def run_once(pilot, screen: BenchScreen, run_id: int) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("ctrl+r")
    await wait_for(
        pilot, lambda: status(screen).startswith(f"run {run_id} done"), 90, f"run {run_id}"
    )


async def test_run_results_history_compare_export(settings: Settings, tiny_gguf: Path) -> None:
    async with bench_with_tiny(settings, tiny_gguf) as (pilot, screen):
        assert screen.query_one("#bench-model", Select).value == "tiny-llama"
        fill(screen, n_prompt="16", n_gen="8", reps="3", bench_ngl="0,-1", bench_batch="16")
        await pilot.press("ctrl+r")  # a list of ngl values needs the sweep mode
        await wait_for(pilot, lambda: "sweep mode" in status(screen), what="sweep refusal")
        fill(screen, bench_ngl="0")
        await run_once(pilot, screen, 1)
        done = status(screen)
        assert done.startswith("run 1 done: pp16") and "tg8" in done
        results = screen.query_one("#results", DataTable)
        rows = [results.get_row_at(i) for i in range(results.row_count)]
        assert [r[1] for r in rows] == ["pp16", "tg8"]
        # 3 repetitions: a median, no p95 (it would be the slowest one, interpolated)
        assert all(" ± " in r[4] and r[5] == "3" and r[6] != "n/a" for r in rows)
        assert all(r[7] == "n/a" for r in rows)
        assert len(screen.progress.values) == 6  # one t/s value per repetition, plotted
        await run_once(pilot, screen, 2)
        history = screen.query_one("#history", DataTable)
        await wait_for(pilot, lambda: history.row_count == 2)
        screen.query_one(TabbedContent).active = "tab-history"
        history.focus()  # takes effect on a later tick: keys before it would go elsewhere
        await wait_for(pilot, lambda: screen.app.focused is history, what="history focused")
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.marked) == 1, what="first mark")
        await pilot.press("down")
        await wait_for(pilot, lambda: history.cursor_row == 1, what="second row")
        await pilot.press("space")
        await wait_for(pilot, lambda: len(screen.marked) == 2, what="second mark")
        await pilot.press("c")
        compare = screen.query_one("#compare", DataTable)
        await wait_for(pilot, lambda: compare.row_count > 0, what="compare rows")
        assert {compare.get_row_at(i)[1] for i in range(compare.row_count)} >= {"t/s"}
        for fmt in ("md", "csv", "json"):
            screen.query_one("#export-format", Select).value = fmt
            await pilot.press("ctrl+s")
            path = settings.paths.data_dir / "exports" / f"bench-run-2.{fmt}"
            await wait_for(pilot, path.exists, what=str(path))
        assert "pp16" in path.read_text()


async def test_esc_stops_a_local_run_in_its_process(settings: Settings, tiny_gguf: Path) -> None:
    """A local run happens in a child process (no GIL shared with the UI); its GPU memory
    counts as ours, Esc reaches it, and the screen says it stopped."""
    async with bench_with_tiny(settings, tiny_gguf) as (pilot, screen):
        app = screen.app
        fill(screen, n_prompt="16", n_gen="64", reps="500", bench_ngl="0", bench_batch="16")
        own_before = set(app.gpu_sampler._own_pids)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(screen.progress.values) > 0, 60, "a repetition")
        child = set(app.gpu_sampler._own_pids) - own_before
        assert len(child) == 1 and os.getpid() not in child
        await pilot.press("escape")
        await wait_for(pilot, lambda: "cancelled" in status(screen), 30, "cancelled")
        assert status(screen).startswith("benchmark stopped: benchmark cancelled")
