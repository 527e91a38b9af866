"""Bench History (issue #16): marking a run with Space keeps the cursor on that run."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, TabbedContent

from llcuda_tui.core.bench import BenchStore
from llcuda_tui.core.config import Settings
from llcuda_tui.screens.bench import BenchScreen
from tests.snapshots.test_snapshots import bench_runs
from tests.tui.conftest import SIZE, make_app, wait_for

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
