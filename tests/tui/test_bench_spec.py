"""The Benchmark screen's speculative mode (issue #18): the comparison `llcuda bench --spec`
runs (the edit workload, plain and with prompt lookup), in the benchmark process with
progress, one Results row per mode; a draft mode without a draft model is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Select

from llcuda_tui.core.config import Settings
from llcuda_tui.screens.bench import BenchScreen
from llcuda_tui.screens.bench.spec import SpecFields
from tests.tui.conftest import SIZE, make_app, wait_for
from tests.tui.test_bench import fill, status

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


async def test_speculative_mode_compares_plain_and_prompt_lookup(
    settings: Settings, smollm_path: Path
) -> None:
    app = make_app(settings, start_screen="bench")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        assert isinstance(screen, BenchScreen)
        await wait_for(pilot, lambda: "smollm2-135m-instruct" in screen.choices, what="models")
        screen.query_one("#bench-model", Select).value = "smollm2-135m-instruct"
        screen.query_one("#bench-mode", Select).value = "speculative"
        fields = screen.query_one(SpecFields)
        await wait_for(pilot, lambda: fields.display, 10, "the spec fields shown")
        assert not screen.query_one("#n-prompt").display  # the workload has its own prompt

        screen.query_one("#spec-drafter", Select).value = "draft"  # no draft model picked
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "needs a draft model" in status(screen), 10, "refusal")

        screen.query_one("#spec-drafter", Select).value = "ngram"
        fill(screen, n_gen="16", reps="1", bench_ngl="0")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: status(screen).startswith("speculative done"), 240, "the run")
        results = screen.query_one("#results", DataTable)
        rows = [results.get_row_at(i) for i in range(results.row_count)]
        assert [r[0] for r in rows] == ["plain", "ngram"]
        plain, ngram = rows
        assert float(plain[1].split(" ± ")[0]) > 0 and float(ngram[1].split(" ± ")[0]) > 0
        assert int(ngram[3]) > 0  # drafted
        assert ngram[4].endswith("%)") and ngram[5].endswith(")") and "x (" in ngram[5]
        assert ngram[6] == "yes"  # the same text as without speculation
        # progress: 2 loads + 2 warm-ups + 1 round of 2 generations, each round's t/s plotted
        assert (screen.progress.done, screen.progress.total) == (6, 6)
        assert len(screen.progress.values) == 2
        assert "ngram" in status(screen) and "accepted" in status(screen)
