"""Benchmark defaults sized to the machine, with a time estimate (issue #16): llama-bench's
pp512/tg128 x 5 took minutes on a small CPU machine, and nothing said how long Run would
take."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from llcuda_tui.core.bench import BenchSizes, BenchStore, StoredRun, estimate_s
from llcuda_tui.core.config import Paths, Settings
from llcuda_tui.core.fit import DeviceMemory
from llcuda_tui.core.store import Store
from llcuda_tui.screens.bench import BenchScreen
from tests.tui.conftest import GIB, SIZE, make_app, wait_for
from tests.tui.test_bench import status

pytestmark = pytest.mark.timeout(90)


def test_the_estimate_uses_a_measured_run_and_else_guesses() -> None:
    sizes = BenchSizes(128, 32, 3)  # 3 repetitions and a warm-up: 4 of each
    measured = estimate_s(
        sizes, model_bytes=10**8, n_params=10**8, on_gpu=False, n_cpus=2,
        measured={"pp": 512.0, "tg": 64.0},
    )  # fmt: skip
    assert measured.measured and measured.seconds == pytest.approx(1 + 4 * 128 / 512 + 4 * 32 / 64)
    assert measured.describe() == "~4 s (from its last run here)"
    guess = estimate_s(sizes, model_bytes=10**8, n_params=10**8, on_gpu=False, n_cpus=2)
    assert not guess.measured and "a guess" in guess.describe()
    gpu = estimate_s(BenchSizes(512, 128, 5), model_bytes=10**8, n_params=10**8, on_gpu=True,
                     n_cpus=2)  # fmt: skip
    assert gpu.seconds < guess.seconds


async def open_bench(settings: Settings, tiny_gguf: Path, device: DeviceMemory):  # type: ignore[no-untyped-def]
    Store(Paths.from_env()).import_path(tiny_gguf, name="tiny-llama")
    return make_app(settings, start_screen="bench", fit_device=device)


def values(screen: BenchScreen) -> tuple[str, str, str]:
    return tuple(screen.query_one(f"#{f}", Input).value for f in ("n-prompt", "n-gen", "reps"))  # type: ignore[return-value]


@pytest.mark.asyncio
async def test_a_cpu_machine_gets_small_sizes_and_an_estimate(
    settings: Settings, tiny_gguf: Path
) -> None:
    app = await open_bench(settings, tiny_gguf, DeviceMemory("ram", "RAM", 16 * GIB, 32 * GIB))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        await wait_for(pilot, lambda: values(screen) == ("128", "32", "3"), 20, "CPU sizes")
        await wait_for(pilot, lambda: "this run takes ~" in status(screen), 20, "the estimate")
        assert "a guess from its size" in status(screen)
        before = status(screen)
        screen.query_one("#reps", Input).value = "3000"
        await wait_for(pilot, lambda: status(screen) != before, 10, "the estimate follows")


@pytest.mark.asyncio
async def test_a_gpu_machine_keeps_llama_bench_sizes_and_a_measured_model_says_so(
    settings: Settings, tiny_gguf: Path
) -> None:
    app = await open_bench(settings, tiny_gguf, DeviceMemory("cuda", "GPU 0", 70 * GIB, 80 * GIB))
    path = str(Store(Paths.from_env()).entries()[0].path)
    rows = [
        {"model_filename": path, "test": "pp512", "n_prompt": 512, "n_gen": 0, "avg_ts": 9000.0},
        {"model_filename": path, "test": "tg128", "n_prompt": 0, "n_gen": 128, "avg_ts": 300.0},
    ]
    with BenchStore.open(settings.paths) as bench:
        bench.save_run(StoredRun("throughput", {}, {}, results=rows))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen), what="bench screen")
        screen = app.screen
        await wait_for(pilot, lambda: "from its last run here" in status(screen), 20, "measured")
        assert values(screen) == ("512", "128", "5")
