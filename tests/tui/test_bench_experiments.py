"""The Benchmark screen's Experiments tab: lists the experiments in the results store, the
progress of one that is still running, a done one's table and in-terminal bar plots."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, ProgressBar, TabbedContent

from llcuda_tui.core.config import Settings
from llcuda_tui.core.experiment import (
    ExperimentStore,
    parse_experiment,
    prepare_models,
    run_experiment,
    start_or_resume,
)
from llcuda_tui.core.store import Store
from llcuda_tui.screens.bench import BenchScreen
from llcuda_tui.widgets.experiment_panel import ExperimentPanel, bar_lines
from tests.gguf_factory import write_tiny_llama
from tests.tui.conftest import SIZE, make_app, wait_for

pytestmark = pytest.mark.timeout(200)


def test_bar_lines_scale_to_the_largest() -> None:
    lines = bar_lines([("a", 50.0), ("bb", 100.0)], width=8)
    assert lines[1] == "bb  ████████  100.0"
    assert lines[0].startswith("a   ████ ") and lines[0].endswith("50.0")


@pytest.mark.asyncio
async def test_experiments_tab_lists_progress_and_results(
    settings: Settings, tmp_path: Path
) -> None:
    store = Store.from_settings(settings)
    store.import_path(write_tiny_llama(tmp_path / "tiny-F16.gguf", f16=True), name="tiny-F16")
    raw = {
        "name": "tui sweep",
        "repetitions": 1,
        "models": {"source": "tiny-F16", "quantize": ["Q8_0", "Q4_0"]},
        "axes": {"threads": [2]},
        "tests": {"pp": [16], "tg": [8]},
    }
    spec = parse_experiment(raw, "test")
    models = prepare_models(spec, settings)
    with ExperimentStore.open(settings.paths) as es:
        exp_id, _ = start_or_resume(es, spec, models, None)
        run_experiment(es, exp_id, spec, settings)
        # a second one that has not run yet: what a running experiment looks like at its start
        pending = parse_experiment(raw | {"name": "pending sweep"}, "test")
        start_or_resume(es, pending, models, None)

    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        screen.query_one(TabbedContent).active = "tab-experiments"
        panel = screen.query_one(ExperimentPanel)
        listing = panel.query_one("#experiments", DataTable)
        await wait_for(pilot, lambda: listing.row_count == 2, 30, "experiments listed")
        rows = [listing.get_row_at(i) for i in range(2)]
        assert [(r[2], r[3], r[4]) for r in rows] == [
            ("pending", "0/2", "pending sweep"),
            ("complete", "2/2", "tui sweep"),
        ]
        assert panel.query_one("#experiment-progress", ProgressBar).progress == 0

        panel.selected = exp_id  # what picking its row does
        panel.load()
        cells = panel.query_one("#experiment-cells", DataTable)
        await wait_for(pilot, lambda: panel.view.selected == exp_id and cells.row_count == 2,
                       30, "cells shown")  # fmt: skip
        assert panel.query_one("#experiment-progress", ProgressBar).progress == 2
        labels = [str(cells.get_row_at(i)[0]) for i in range(2)]
        assert labels == ["tiny-Q8_0", "tiny-Q4_0"]
        plot = "\n".join(panel.plot_lines(panel.view))
        assert "pp16 t/s" in plot and "tg8 t/s" in plot and "█" in plot
