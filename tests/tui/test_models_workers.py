"""The Models screen: fit against each attached worker's free VRAM (real workers on
127.0.0.1: one replaying the recorded H100 trace, one without a GPU, one down), and the
store's size cap edited from the screen (saved to config.toml atomically, comments kept)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.store import Store
from llcuda_tui.screens.dialogs import TextPromptDialog
from llcuda_tui.screens.models import ModelsScreen
from tests.tui.conftest import SIZE, TinyWorkers, h100_sampler, make_app, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def text(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


def worker_lines(screen: ModelsScreen) -> list[str]:
    detail = text(screen.query_one("#detail"))
    return [line for line in detail.splitlines() if line.startswith("fit on worker")]


async def test_fit_against_each_workers_free_vram(
    settings: Settings, tiny_gguf: Path, tiny_workers: TinyWorkers
) -> None:
    Store(Paths.from_env()).import_path(tiny_gguf, name="tiny-llama")
    gpu_worker = tiny_workers.start(gpu_sampler=h100_sampler())
    cpu_worker = tiny_workers.start()
    down = tiny_workers.start()
    down_url = down.url
    tiny_workers.stop(down)
    urls = [gpu_worker.url, cpu_worker.url, down_url]
    app = make_app(settings, start_screen="models", workers=urls)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_for(pilot, lambda: len(screen.worker_fits) == 3, what="worker fits")
        lines = worker_lines(screen)
        assert len(lines) == 3, lines
        gpu, cpu, gone = lines
        # the trace's H100 at tick 9: 80 GiB, 7.2 GiB used, so 72.80 GiB free
        assert f"{gpu_worker.url}: fits on worker {gpu_worker.url} GPU 0 NVIDIA H100" in gpu
        assert gpu.endswith("of VRAM, 72.80 GiB free")
        assert f"{cpu_worker.url}: unknown: the worker has no GPU" in cpu
        assert f"{down_url}: unknown: worker down: cannot connect" in gone
        # this machine's fit (the injected RAM device) is unchanged
        assert "fits in RAM" in text(screen.query_one("#detail"))


async def test_the_size_cap_is_edited_and_saved_atomically(settings: Settings) -> None:
    cfg = settings.paths.config_file
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("# my settings\n[engine]\nn_ctx = 2048  # small\n", encoding="utf-8")
    app = make_app(Settings.load(settings.paths), start_screen="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_for(pilot, lambda: "size cap (c): no cap" in text(screen.query_one("#du-line")))
        await pilot.press("c")
        assert isinstance(app.screen, TextPromptDialog)
        await pilot.press(*"lots", "enter")
        await wait_for(pilot, lambda: "is not a size" in text(screen.query_one("#pull-status")))
        assert app.settings.store.max_size == "" and "max_size" not in cfg.read_text()
        await pilot.press("c")
        await pilot.press(*"2GB", "enter")
        await wait_for(pilot, lambda: app.settings.store.max_size == "2GB", what="saved")
        du_line = screen.query_one("#du-line")
        await wait_for(pilot, lambda: f"size cap (c): {fmt_size(2e9)}" in text(du_line), what="du")
        saved = cfg.read_text(encoding="utf-8")
        assert saved.startswith("# my settings\n[engine]\nn_ctx = 2048  # small\n")
        assert tomllib.loads(saved) == {"engine": {"n_ctx": 2048}, "store": {"max_size": "2GB"}}
        assert Settings.load(settings.paths).store.max_size == "2GB"
        assert sorted(p.name for p in cfg.parent.iterdir()) == ["config.toml"]  # no temp left
        await pilot.press("c")  # the dialog shows the current cap; clearing it removes the cap
        dialog_input = app.screen.query_one(Input)
        assert dialog_input.value == "2GB"
        dialog_input.value = ""
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.settings.store.max_size == "", what="cleared")
        assert Settings.load(settings.paths).store.max_size == ""
        assert screen.query_one("#store-table", DataTable).row_count == 0
