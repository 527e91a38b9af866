"""The Models screen and attached workers of many models (core/worker/router.py): each
worker's state of the selected model in the detail, and w loading or unloading it there (real
workers on 127.0.0.1 serving the test's store: one of many models, one started with -m)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.engine import EngineConfig
from llcuda_tui.core.store import Store
from llcuda_tui.core.worker import WorkerConfig, WorkerServer
from llcuda_tui.core.worker.router_config import ModelsConfig
from llcuda_tui.screens.models import ModelsScreen
from tests.tui.conftest import SIZE, TinyWorkers, make_app, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def on_worker_lines(screen: ModelsScreen) -> list[str]:
    detail = str(screen.query_one("#detail").render())
    return [line for line in detail.splitlines() if line.startswith("on worker")]


async def test_w_loads_and_unloads_the_selected_model_on_the_workers(
    settings: Settings, tiny_gguf: Path, tiny_workers: TinyWorkers
) -> None:
    paths = Paths.from_env()
    Store(paths).import_path(tiny_gguf, name="tiny-llama")
    cfg = WorkerConfig(
        engine=EngineConfig(paths.store_dir, n_ctx=256, n_threads=1),
        model_name="",
        parallel=1,
        paths=paths,
        models=ModelsConfig(),
    )
    one = tiny_workers.start()  # started with one model: it cannot load another
    with WorkerServer(cfg) as many:
        app = make_app(settings, start_screen="models", workers=[many.url, one.url])
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, ModelsScreen)
            await wait_for(pilot, lambda: len(screen.worker_models) == 2, what="worker models")
            await wait_for(pilot, lambda: len(on_worker_lines(screen)) == 2, what="detail")
            first, second = on_worker_lines(screen)
            assert f"{many.url}: on disk (w loads it)" in first
            assert f"{one.url}: serves tiny only (started with -m)" in second
            await pilot.press("w")
            await wait_for(
                pilot,
                lambda: screen.worker_models[many.url].states.get("tiny-llama") == "loaded",
                what="loaded on the worker",
            )
            assert f"{many.url}: loaded (w unloads it)" in on_worker_lines(screen)[0]
            assert many.state.models is not None and many.state.models.held()
            await pilot.press("w")
            await wait_for(
                pilot,
                lambda: screen.worker_models[many.url].states.get("tiny-llama") == "on_disk",
                what="unloaded on the worker",
            )
            assert many.state.models.held() == []
